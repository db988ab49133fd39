"""Run every benchmark and print its figures (``make bench``)."""

from __future__ import annotations

import sys

from bench import (
    api_auth,
    events_insert,
    experiments,
    ingest,
    journeys,
    lifecycle,
    messaging,
    simulator,
)

BENCHMARKS = [
    events_insert,
    api_auth,
    ingest,
    lifecycle,
    journeys,
    messaging,
    experiments,
    simulator,
]


def main() -> int:
    for module in BENCHMARKS:
        print(f"== {module.__name__}: {module.__doc__.strip().splitlines()[0]}", flush=True)
        module.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
