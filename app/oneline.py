"""Commands whose bad input ends in one line on stderr and exit code 2, never click's
usage block or a traceback."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click
from sqlalchemy.exc import SQLAlchemyError


def fail(message: str) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(2)


class OneLine:
    """Mixed into a click command or group."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)  # type: ignore[misc]
        except click.UsageError as exc:
            exc.ctx = None  # click prints "Usage: ..." and a hint only when it has a ctx
            raise

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)  # type: ignore[misc]
        except SQLAlchemyError as exc:
            fail(
                f"the database refused the command ({exc.__class__.__name__}): "
                "is it reachable, and migrated with `flask --app wsgi db upgrade`?"
            )


class OneLineCommand(OneLine, click.Command):
    pass


class OneLineGroup(OneLine, click.Group):
    pass
