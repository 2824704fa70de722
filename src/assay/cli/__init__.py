"""The ``assay`` command: a thin shell over the same functions the server uses.

Each concept's commands live in their own module and register on ``main``.
Every command opens the workspace from ``--home``/``ASSAY_HOME``; an
``AssayError`` is printed as one line and exits with status 1, never a traceback,
and so is what the machine refuses (a full disk, a folder that may not be
written) — the commands leave nothing half-written behind when it happens.

Commands start fast: the command modules import the store, the registry and the domains (and
with them SQLAlchemy, NumPy and the model libraries) inside the commands that use them, so that
``assay --help`` or a mistyped option costs no more than Click.
"""

from __future__ import annotations

import errno
import importlib
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, NoReturn, TypeVar

import click

from assay import __version__
from assay.errors import AssayError
from assay.settings import Settings

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
        except Exception as exc:
            # SQLite says a full disk in its own words; anything else about the store stays a bug.
            if not _store_full(exc):
                raise
            _fail("error: no space left on device while writing the store")


def _fail(message: str) -> NoReturn:
    click.secho(message, fg="red", err=True)
    sys.exit(1)


def _store_full(exc: Exception) -> bool:
    """Whether ``exc`` is SQLite refusing a write because the disk is full."""
    import sqlalchemy as sa  # loaded already whenever the store could have raised it

    return isinstance(exc, sa.exc.OperationalError) and "disk is full" in str(exc.orig)


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


class LazyChoice(click.Choice):
    """A choice among the values of ``module.name``, imported only when the option is used or shown
    (the values live in a domain module that the command line does not import to start)."""

    def __init__(self, module: str, name: str) -> None:
        self._source = (module, name)
        super().__init__(())

    @property
    def choices(self) -> tuple[str, ...]:
        module, name = self._source
        return tuple(getattr(importlib.import_module(module), name))

    @choices.setter
    def choices(self, value: object) -> None:
        pass  # Choice.__init__ assigns the (empty) values it was given; the module holds the real ones


def settings_from(ctx: click.Context, **overrides: Any) -> Settings:
    return Settings.load(home=ctx.find_root().obj.get("home"), **overrides)


def pass_workspace(fn: F) -> F:
    """Open the workspace named by ``--home``/settings and hand it to the command as ``ws``."""

    @click.pass_context
    @wraps(fn)
    def wrapper(ctx: click.Context, *args: Any, **kwargs: Any) -> Any:
        from assay.workspace import Workspace

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
