"""The WSGI entry point: ``gunicorn wsgi:app`` and ``flask --app wsgi``."""

import sys

from config import ConfigError

try:
    from app import create_app

    app = create_app()
except ConfigError as exc:
    # One clear line, not a traceback: the operator fixes the variable and retries.
    # Exit code 3 is gunicorn's "worker failed to boot": it stops instead of respawning.
    print(f"tenure: configuration error: {exc}", file=sys.stderr)
    sys.exit(3)
