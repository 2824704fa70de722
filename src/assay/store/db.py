"""The store's engine and migrations: connecting to SQLite or PostgreSQL, and Alembic upgrades.

SQLite (a file in the workspace home) by default, PostgreSQL by URL. The schema
(``store.tables``) only ever changes through the migrations in ``store/migrations``, run by
``upgrade`` (``assay db upgrade``). ``connect`` runs them itself only for an
embedded SQLite file, which one host owns, so a fresh home works from its first
command; a server store (PostgreSQL) is shared by many hosts, which must not race
to migrate it on start-up: ``connect`` refuses it, in one line, while it is behind.
"""

from __future__ import annotations

import functools
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from assay.errors import StoreOutOfDate

if TYPE_CHECKING:
    from alembic.config import Config


def now() -> datetime:
    return datetime.now(UTC)


def _alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def create_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL and a busy timeout so several processes can share it."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")  # a committed label must survive power loss
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


@contextmanager
def secure_delete(conn: Connection, mode: str) -> Iterator[None]:
    """SQLite's ``secure_delete`` set to ``mode`` for the statements of the block, then restored.

    ``"on"``: deleted content is overwritten with zeros, freed pages included. Erasing a person's
    data asks for it, whatever the build's default (Debian's SQLite has it on, most others off).
    ``"fast"``: the b-tree pages are cleaned, freed pages left as they are. Routine deletions ask
    for it: overwriting a pruned chunk's megabytes of freed pages doubled the cost of pruning the
    prediction log, and the log's next chunks write over those pages anyway.
    Other databases do not have the setting; the block runs as it is.
    """
    if conn.dialect.name != "sqlite":
        yield
        return
    before = _SECURE_DELETE_READ[int(conn.exec_driver_sql("PRAGMA secure_delete").scalar() or 0)]
    conn.exec_driver_sql(f"PRAGMA secure_delete={_SECURE_DELETE[mode]}")
    try:
        yield
    finally:
        conn.exec_driver_sql(f"PRAGMA secure_delete={_SECURE_DELETE[before]}")


_SECURE_DELETE = {"off": "0", "on": "1", "fast": "FAST"}
_SECURE_DELETE_READ = {0: "off", 1: "on", 2: "fast"}  # as the pragma reads back (2 set back is "on")

_MIGRATIONS = Path(__file__).parent / "migrations" / "versions"
_REVISION_LINE = re.compile(r"^(down_revision|revision)\s*=\s*(?:[\"']([^\"']+)[\"']|None)", re.M)


@functools.cache
def head_revision() -> str:
    """The newest migration this assay knows: the one no other migration revises.

    Read from the migration files' ``revision``/``down_revision`` lines, not through Alembic,
    whose import costs more than the rest of a read-only command (the tests check that both
    agree): Alembic is imported only when a store must actually be migrated.
    """
    revisions: set[str] = set()
    revised: set[str] = set()
    for path in _MIGRATIONS.glob("*.py"):
        lines = dict((key, value) for key, value in _REVISION_LINE.findall(path.read_text()))
        revisions.add(lines["revision"])
        if lines.get("down_revision"):
            revised.add(lines["down_revision"])
    heads = revisions - revised
    assert len(heads) == 1, f"the migrations have {len(heads)} heads"  # the package ships one chain
    return heads.pop()


def current_revision(engine: Engine) -> str | None:
    """The migration the store is at (None for an empty store), read from Alembic's own table."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        rows = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    # Several rows would be several heads: no single answer, so never "up to date".
    return ",".join(sorted(rows)) or None


# Any constant: the key of the PostgreSQL advisory lock that lets one host at a time migrate.
_MIGRATION_LOCK = 0x61737361


def upgrade(engine: Engine) -> bool:
    """Bring the store to the newest migration; False when it was already there.

    On PostgreSQL the migration runs under an advisory lock, so hosts that run it at once
    take turns (the second finds the store up to date) instead of racing on the DDL.
    """
    if current_revision(engine) == head_revision():
        return False
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    cfg = _alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
            if MigrationContext.configure(conn).get_current_revision() == head_revision():
                return False
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return True


def check_revision(engine: Engine) -> None:
    """Refuse a store that is not at this assay's newest migration, naming the command that fixes it."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        where = engine.url.render_as_string(hide_password=True)
        raise StoreOutOfDate(
            f"the store {where} is at migration {current or 'none (empty)'}, this assay needs {head}: "
            "run `assay db upgrade` once (from any one host) before starting assay on it"
        )


# The files SQLite keeps beside a database: they hold its pages (password hashes included) too.
_SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal")


def _private_sqlite_file(path: Path) -> None:
    """Make the SQLite file owner-only before SQLite opens it: it holds password hashes.

    A new store is created 0600 (an empty file is an empty database), and SQLite gives its
    -wal, -shm and -journal files the database's own mode. A store made before this was
    world-readable: the world's bits come off it and its companions (group bits, which an
    operator may have set on purpose, stay).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        for companion in _SQLITE_COMPANIONS:
            try:
                mode = (file := Path(f"{path}{companion}")).stat().st_mode
                if mode & 0o007:
                    file.chmod(stat.S_IMODE(mode) & ~0o007)
            except OSError:  # absent, or not ours to change: SQLite's own error, if any, says more
                pass


def connect(url: str) -> Engine:
    """An engine on an up-to-date store: an embedded SQLite file is migrated here, any other
    store must have been migrated by ``assay db upgrade`` (``StoreOutOfDate`` otherwise)."""
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///").split("?", 1)[0]
        if path and path != ":memory:":
            _private_sqlite_file(Path(path))
    engine = create_engine(url)
    try:
        if engine.dialect.name == "sqlite":
            upgrade(engine)
        else:
            check_revision(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


# --- reviews ------------------------------------------------------------------
# Accounts, labelling campaigns and JADE-style judgments (owned by the review package:
