"""Periodic work as data: (job, queue, interval in seconds or cron expression)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from rq.cron import CronScheduler

from workers import jobs, queues


@dataclasses.dataclass(frozen=True)
class Periodic:
    func: Callable[[], object]
    queue: str
    interval: int | None = None
    cron: str | None = None


PERIODIC: tuple[Periodic, ...] = (Periodic(jobs.heartbeat, queues.LOW, interval=60),)


def register_all(scheduler: CronScheduler) -> None:
    for item in PERIODIC:
        scheduler.register(
            item.func,
            queue_name=item.queue,
            interval=item.interval,
            cron=item.cron,
            name=item.func.__name__,
        )
