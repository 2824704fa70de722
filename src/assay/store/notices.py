"""Notices: how every process serving one store hears that something in it changed.

A change that other processes must act on (a version added or an alias moved, an
item's features replaced) is published as a row of ``notices`` in the same
transaction as the change, so a notice exists exactly when its change committed.
On PostgreSQL the transaction also NOTIFYs ``assay_notices`` and each watcher
LISTENs on a connection of its own, so every worker on every host wakes within
milliseconds; on other stores (SQLite, one host) watchers poll the table every
``poll_s``. PostgreSQL watchers read the table every ``poll_s`` too, so a
notification lost with a dropped connection is only late, never missed.

A ``NoticeWatcher`` is a thread that hands the notices published after it
started to the handlers subscribed to their topic. When the store cannot be read
it keeps trying, with backoff, and the process keeps serving what it knew last;
once the store answers again, each handler is called with ``resync=True``
(notices may have been pruned meanwhile: start over from the store).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from assay.store import db, tables

log = logging.getLogger(__name__)

REGISTRY = "registry"  # a version was added or an alias moved: payload {"model": name}
FEATURES = "features"  # items' stored features changed: payload {"model", "ids": [...], "origin"}
CHANNEL = "assay_notices"
# Notices older than this are pruned by the watchers (a watcher that was away longer resyncs).
KEEP_S = 3600.0
# The longest a watcher blocks at once, so that stopping it takes no longer than this.
_STEP_S = 0.2


@dataclass(frozen=True)
class Notice:
    id: int
    topic: str
    payload: dict[str, Any]


class NoticeHandler(Protocol):
    def __call__(self, batch: list[Notice], *, resync: bool) -> None: ...


def publish(conn: Connection, topic: str, payload: Mapping[str, Any]) -> None:
    """Record a notice in the caller's transaction; PostgreSQL wakes the watchers when it commits."""
    conn.execute(sa.insert(tables.notices).values(topic=topic, payload=dict(payload), at=db.now()))
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_notify(CHANNEL, topic)))


class NoticeWatcher:
    """A daemon thread that delivers new notices to the handlers of their topics.

    Handlers run on the watcher's thread, one batch at a time, in the order of publication;
    a handler that raises is logged and the others still get their notices.
    """

    def __init__(self, engine: Engine, *, poll_s: float, name: str = "assay-notices") -> None:
        self.engine = engine
        self.poll_s = max(poll_s, 0.01)
        self._handlers: dict[str, list[NoticeHandler]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._last_id: int | None = None
        self._last_prune = 0.0

    def subscribe(self, topic: str, handler: NoticeHandler) -> None:
        """Call ``handler(notices, resync=...)`` with each batch of new notices of ``topic``."""
        self._handlers.setdefault(topic, []).append(handler)

    def start(self) -> None:
        """Start delivering what is published from now on (earlier notices are not delivered)."""
        try:
            self._last_id = self._max_id()
        except sa.exc.SQLAlchemyError as exc:
            log.warning("notices: the store does not answer (%s); will resync once it does", exc)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    # --- the thread ---------------------------------------------------------

    def _run(self) -> None:
        backoff = self.poll_s
        while not self._stop.is_set():
            try:
                for _ in self._wakeups():
                    self._deliver()
                    backoff = self.poll_s
                    if self._stop.is_set():
                        return
            except Exception as exc:  # the store went away: keep what we have, retry with backoff
                log.warning("notices: cannot read the store (%s); retrying in %.1f s", exc, backoff)
                self._last_id = None  # whatever happened meanwhile is unknown: resync on recovery
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _wakeups(self) -> Iterator[None]:
        """Yields whenever the table may hold new notices: on a NOTIFY, else every ``poll_s``."""
        if self.engine.dialect.name == "postgresql":
            yield from self._listen()
            return
        while not self._stop.wait(self.poll_s):
            yield

    def _listen(self) -> Iterator[None]:
        import psycopg  # the [postgres] extra: a PostgreSQL store has it

        params: dict[str, Any] = {
            **self.engine.url.translate_connect_args(username="user", database="dbname"),
            **self.engine.url.query,
        }
        with psycopg.connect(autocommit=True, connect_timeout=5, **params) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            yield  # what was published while no connection listened
            waited = 0.0
            while not self._stop.is_set():
                started = time.monotonic()
                notified = any(True for _ in conn.notifies(timeout=_STEP_S, stop_after=1))
                waited += time.monotonic() - started
                if notified or waited >= self.poll_s:
                    waited = 0.0
                    yield

    def _max_id(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.max(tables.notices.c.id))).scalar() or 0)

    def _deliver(self) -> None:
        if self._last_id is None:  # starting over: handlers re-read the store
            self._last_id = self._max_id()
            for topic in self._handlers:
                self._call(topic, [], resync=True)
            return
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(tables.notices)
                .where(tables.notices.c.id > self._last_id)
                .order_by(tables.notices.c.id)
            ).all()
        if rows:
            self._last_id = rows[-1].id
        batches: dict[str, list[Notice]] = {}
        for row in rows:
            batches.setdefault(row.topic, []).append(Notice(row.id, row.topic, row.payload))
        for topic, batch in batches.items():
            self._call(topic, batch, resync=False)
        self._prune()

    def _call(self, topic: str, batch: list[Notice], *, resync: bool) -> None:
        for handler in self._handlers.get(topic, []):
            try:
                handler(batch, resync=resync)
            except Exception:
                log.exception("notices: a handler of %r failed", topic)

    def _prune(self) -> None:
        """Delete notices older than ``KEEP_S`` now and then (any watcher may; they agree)."""
        now = time.monotonic()
        if now - self._last_prune < 60:
            return
        self._last_prune = now
        cutoff = db.now() - timedelta(seconds=KEEP_S)
        with self.engine.begin() as conn:
            conn.execute(sa.delete(tables.notices).where(tables.notices.c.at < cutoff))
