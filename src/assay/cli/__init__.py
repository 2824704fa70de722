"""The ``assay`` command: a thin shell over the same functions the server uses.

Each concept's commands live in their own module and register on ``main``.
Every command opens the workspace from ``--home``/``ASSAY_HOME``; an
``AssayError`` is printed as one line and exits with status 1, never a traceback,
and so is what the machine refuses (a full disk, a folder that may not be
written) — the commands leave nothing half-written behind when it happens.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, NoReturn, TypeVar

import click
import sqlalchemy as sa

from assay import __version__
from assay.errors import AssayError
from assay.settings import Settings
from assay.workspace import Workspace

F = TypeVar("F", bound=Callable[..., Any])


class _Group(click.Group):
    """Turns every ``AssayError``, and every error the machine answers a read or write with,
    into a clear one-line message and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AssayError as exc:
            where = f" [{exc.field}]" if exc.field else ""
            _fail(f"error{where}: {exc.message}")
        except OSError as exc:
            _fail(f"error: {_os_error(exc)}")
        except sa.exc.OperationalError as exc:
            # SQLite says a full disk in its own words; anything else about the store stays a bug.
            if "disk is full" not in str(exc.orig):
                raise
            _fail("error: no space left on device while writing the store")


def _fail(message: str) -> NoReturn:
    click.secho(message, fg="red", err=True)
    sys.exit(1)


def _os_error(exc: OSError) -> str:
    """``exc`` as one line: what went wrong and on which file."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        problem = "no space left on device" if exc.errno == errno.ENOSPC else "disk quota exceeded"
        return problem + (f" while writing {exc.filename}" if exc.filename else "")
    problem = (exc.strerror or str(exc) or type(exc).__name__).lower()
    return problem + (f": {exc.filename}" if exc.filename else "")


@click.group(cls=_Group)
@click.option("--home", type=click.Path(file_okay=False), default=None, help="Workspace folder (ASSAY_HOME).")
@click.version_option(__version__, prog_name="assay")
@click.pass_context
def main(ctx: click.Context, home: str | None) -> None:
    """assay: train, evaluate, serve, review and monitor assessment models."""
    ctx.obj = {"home": home}


def settings_from(ctx: click.Context, **overrides: Any) -> Settings:
    return Settings.load(home=ctx.find_root().obj.get("home"), **overrides)


def pass_workspace(fn: F) -> F:
    """Open the workspace named by ``--home``/settings and hand it to the command as ``ws``."""

    @click.pass_context
    @wraps(fn)
    def wrapper(ctx: click.Context, *args: Any, **kwargs: Any) -> Any:
        ws = Workspace.open(settings_from(ctx))
        try:
            return fn(ws, *args, **kwargs)
        finally:
            ws.close()

    return wrapper  # type: ignore[return-value]


def _register() -> None:
    # Imported for their side effect of adding commands to ``main``.
    from assay.cli import comparison, models, monitoring, retraining, review, scoring, store, unlearning  # noqa: F401


_register()
