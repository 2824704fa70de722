"""The prediction log: every score the server computes, kept in the store for monitoring.

``PredictionLog`` is the sink the scorer hands each scored batch to. It never blocks and never
fails a score: ``record`` samples (``sample``), appends the batch's arrays, untouched, to an
in-memory queue bounded in rows, and returns; a background thread writes what is queued in
batches a few times a second. A full queue or a store that refuses the write (disk full,
database down) drops rows, counted by reason (``dropped``, and the ``on_drop`` callback the
server turns into a Prometheus counter). Storage is bounded too: rows older than the retention
and the oldest rows beyond ``max_rows`` per model are deleted as the writer goes.

Rows are kept in chunks, as the writer wrote them (at most ``CHUNK_ROWS``): each chunk packs its
rows' times, encoded feature rows and class probabilities as float64 in one blob (the version's
schema says how many of each), and its item ids as a JSON list; ``prediction_items`` says which
chunk holds each item's score, for labels. Reading a million rows back is a few dozen blobs, one
join and one ``numpy.frombuffer`` (``read_log``): a row each would have the driver build millions
of Python objects, and that, not the statistics, is what a drift check would spend its time on
(reading is ``monitoring.frames``). ``write_rows`` is the synchronous writer ``assay log import``
and tests use.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import repeat

import numpy as np
import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from assay.errors import InvalidInput
from assay.settings import Settings
from assay.store import tables

log = logging.getLogger(__name__)

CHUNK_ROWS = 65_536  # rows per chunk at most (positions are chunk id * CHUNK_ROWS + index)
_ITEMS_PER_CALL = 1024
_PRUNE_EVERY_S = 60.0
DTYPE = np.dtype("<f8")  # every number a chunk packs (monitoring.frames reads them back)
DropCallback = Callable[[str, int], None]


def write_rows(
    engine: Engine,
    model: str,
    version: int,
    at: np.ndarray | float,
    ids: Sequence[str | None] | None,
    X: np.ndarray,
    proba: np.ndarray,
) -> int:
    """Insert rows now, as chunks of at most ``CHUNK_ROWS`` (one transaction); returns how many."""
    n = len(X)
    if not n:
        return 0
    times = np.broadcast_to(np.asarray(at, dtype=np.float64), (n,))
    packed = np.ascontiguousarray(np.column_stack([times, X, proba]), dtype=DTYPE)
    item_ids = list(ids) if ids is not None else None
    # An item scored twice in one chunk has one row: the chunk is what a label joins through.
    if engine.dialect.paramstyle == "qmark":
        add_items = (
            "INSERT OR IGNORE INTO prediction_items (model, item_id, chunk_id, version) VALUES (?, ?, ?, ?)"
        )
    else:
        add_items = (
            "INSERT INTO prediction_items (model, item_id, chunk_id, version) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING"
        )
    with engine.begin() as conn:
        for lo in range(0, n, CHUNK_ROWS):
            hi = min(lo + CHUNK_ROWS, n)
            chunk_ids = item_ids[lo:hi] if item_ids is not None else None
            if chunk_ids is not None and all(i is None for i in chunk_ids):
                chunk_ids = None
            key = conn.execute(
                sa.insert(tables.prediction_log).values(
                    model=model,
                    version=version,
                    at_min=float(times[lo:hi].min()),
                    at_max=float(times[lo:hi].max()),
                    n=hi - lo,
                    data=packed[lo:hi].tobytes(),
                    ids=orjson.dumps(chunk_ids).decode() if chunk_ids is not None else None,
                )
            ).inserted_primary_key
            assert key is not None
            chunk = key[0]
            if chunk_ids is not None:
                # The driver's own executemany with plain tuples: a SQLAlchemy parameter dict per
                # row would cost several times the insert itself.
                # One row per item and chunk: an item scored again and again (a product polling
                # one id) costs one insert, not one per score.
                present = [i for i in dict.fromkeys(chunk_ids) if i is not None]
                for start in range(0, len(present), _ITEMS_PER_CALL):
                    part = present[start : start + _ITEMS_PER_CALL]
                    conn.exec_driver_sql(
                        add_items, list(zip(repeat(model), part, repeat(chunk), repeat(version)))
                    )
                    # Hand the interpreter back between slices: beside a server, a long run of
                    # binding parameters would hold its event loop up.
                    time.sleep(0)
    return n


@dataclass
class _Queue:
    """Scored batches waiting for the writer, field by field (see ``PredictionLog.__init__``)."""

    models: list[str] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    X: list[np.ndarray] = field(default_factory=list)
    proba: list[np.ndarray] = field(default_factory=list)
    ids: list[str | None] = field(default_factory=list)  # one per row, all batches end to end


class PredictionLog:
    """The scorer's non-blocking log sink (see the module docstring). Safe to share between threads."""

    def __init__(
        self,
        engine: Engine,
        *,
        sample: float = 1.0,
        queue_rows: int = 100_000,
        max_rows: int = 10_000_000,
        retention_s: float = 90 * 86400.0,
        flush_interval_s: float = 1.0,
        on_drop: DropCallback | None = None,
        on_write: Callable[[int], None] | None = None,
    ) -> None:
        if not 0.0 <= sample <= 1.0:
            raise InvalidInput(f"the log's sample rate must be from 0 to 1; got {sample}", field="log_sample")
        self.engine = engine
        self.sample = sample
        self.queue_rows = queue_rows
        self.max_rows = max_rows
        self.retention_s = retention_s
        self.flush_interval_s = flush_interval_s
        self.on_drop = on_drop
        self.on_write = on_write
        self.written = 0
        self.dropped: dict[str, int] = {}
        # The queue is parallel lists of untracked objects (strings, numbers, arrays): a queued
        # batch made of a tuple and a list each would survive to the collector's older
        # generations, and their collections showed as pauses of milliseconds under load.
        self._queue = _Queue()
        self._queued = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Condition(self._lock)
        self._writing = False
        self._closed = False
        self._last_prune = 0.0
        self._thread = threading.Thread(target=self._run, name="assay-prediction-log", daemon=True)
        self._thread.start()

    # --- the hot path ---------------------------------------------------------------

    def record(
        self,
        model: str,
        version: int,
        ids: Sequence[str | None] | None,
        X: np.ndarray,
        proba: np.ndarray,
        at: float | None = None,
    ) -> None:
        """Queue a scored batch (the arrays are kept as they are: callers must not change them)."""
        n = len(X)
        if not n or self.sample <= 0.0:
            return
        if self.sample < 1.0:
            if n == 1:
                if random.random() >= self.sample:
                    return
            else:
                keep = [i for i in range(n) if random.random() < self.sample]
                if not keep:
                    return
                X, proba = X[keep], proba[keep]
                ids = [ids[i] for i in keep] if ids is not None else None
                n = len(keep)
        with self._lock:
            if self._closed or self._queued + n > self.queue_rows:
                full = True
            else:
                full = False
                self._queued += n
                q = self._queue
                q.models.append(model)
                q.versions.append(version)
                q.times.append(time.time() if at is None else at)
                q.X.append(X)
                q.proba.append(proba)
                q.ids.extend(repeat(None, n) if ids is None else ids)
        if full:
            self._drop("queue_full", n)

    # --- the writer -------------------------------------------------------------------

    def _drop(self, reason: str, n: int) -> None:
        with self._lock:
            self.dropped[reason] = self.dropped.get(reason, 0) + n
        if self.on_drop is not None:
            try:
                self.on_drop(reason, n)
            except Exception:  # a metrics hiccup must not stop the writer
                log.exception("counting dropped log rows failed")

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            self._drain()
            if self._closed and not self._queue.models:
                return
            if time.monotonic() - self._last_prune >= _PRUNE_EVERY_S:
                self._last_prune = time.monotonic()
                try:
                    prune(self.engine, max_rows=self.max_rows, retention_s=self.retention_s)
                except Exception as exc:
                    log.warning("pruning the prediction log failed: %r", exc)

    def _drain(self) -> None:
        with self._lock:
            q, self._queue = self._queue, _Queue()
            self._writing = bool(q.models)
        rows = len(q.ids)
        try:
            # One transaction per model version for everything queued since the last round:
            # a store that fails drops the rows of that version only.
            sizes = [len(X) for X in q.X]
            starts = np.cumsum([0, *sizes])
            groups: dict[tuple[str, int], list[int]] = {}
            if len(set(q.models)) == 1 and len(set(q.versions)) == 1:  # the usual case: one model version
                groups[(q.models[0], q.versions[0])] = list(range(len(sizes)))
            else:
                for k, key in enumerate(zip(q.models, q.versions, strict=True)):
                    groups.setdefault(key, []).append(k)
            for (model, version), batches in groups.items():
                n = sum(sizes[k] for k in batches)
                whole = len(batches) == len(sizes)
                try:
                    write_rows(
                        self.engine,
                        model,
                        version,
                        np.repeat(
                            np.asarray([q.times[k] for k in batches], dtype=np.float64),
                            [sizes[k] for k in batches],
                        ),
                        q.ids if whole else [i for k in batches for i in q.ids[starts[k] : starts[k + 1]]],
                        np.concatenate([q.X[k] for k in batches]),
                        np.concatenate([q.proba[k] for k in batches]),
                    )
                except Exception as exc:
                    log.warning("the prediction log dropped %d row(s) of %s@%s: %r", n, model, version, exc)
                    self._drop("store_error", n)
                else:
                    self.written += n
                    if self.on_write is not None:
                        self.on_write(n)
        finally:
            with self._lock:
                self._queued -= rows
                self._writing = False
                self._idle.notify_all()

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until everything queued so far is written (or dropped); False on timeout."""
        deadline = time.monotonic() + timeout_s
        self._wake.set()
        with self._lock:
            while self._queue.models or self._writing:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.set()
                self._idle.wait(min(left, 0.05))
        return True

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, then stop the writer thread."""
        with self._lock:
            self._closed = True
        self._wake.set()
        self._thread.join(timeout_s)


def open_log(
    engine: Engine,
    settings: Settings,
    *,
    on_drop: DropCallback | None = None,
    on_write: Callable[[int], None] | None = None,
    queue_rows: int | None = None,
) -> PredictionLog | None:
    """The prediction log the settings ask for, or None when logging is off (``log_sample`` 0).

    ``queue_rows`` overrides the setting (a batch command queues a whole file: nothing waits on it).
    """
    if settings.log_sample <= 0:
        return None
    return PredictionLog(
        engine,
        sample=settings.log_sample,
        queue_rows=queue_rows if queue_rows is not None else settings.log_queue_rows,
        max_rows=settings.log_max_rows,
        retention_s=settings.log_retention_days * 86400.0,
        on_drop=on_drop,
        on_write=on_write,
    )


def prune(engine: Engine, *, max_rows: int, retention_s: float, now: float | None = None) -> int:
    """Delete chunks past the retention, then each model's oldest chunks beyond ``max_rows`` rows,
    and the item rows of the chunks gone; returns the rows deleted. Whole chunks go: a model keeps
    at most one chunk more than the cap."""
    chunks = tables.prediction_log
    now = time.time() if now is None else now
    doomed: list[tuple[int, int]] = []  # (chunk id, rows)
    with engine.connect() as conn:
        if retention_s > 0:
            doomed += conn.execute(
                sa.select(chunks.c.id, chunks.c.n).where(chunks.c.at_max < now - retention_s)
            ).all()
        if max_rows > 0:
            gone = {c for c, _ in doomed}
            for (model,) in conn.execute(sa.select(chunks.c.model).distinct()).all():
                kept = 0
                for chunk, n in conn.execute(
                    sa.select(chunks.c.id, chunks.c.n)
                    .where(chunks.c.model == model)
                    .order_by(chunks.c.id.desc())
                ):
                    if chunk in gone:
                        continue
                    if kept >= max_rows:
                        doomed.append((chunk, n))
                    kept += n
    if not doomed:
        return 0
    ids = [c for c, _ in doomed]
    with engine.begin() as conn:
        for lo in range(0, len(ids), 900):
            conn.execute(sa.delete(chunks).where(chunks.c.id.in_(ids[lo : lo + 900])))
    purge_items(engine)
    return sum(n for _, n in doomed)


def purge_items(engine: Engine) -> int:
    """Delete the item rows whose chunks are gone (chunks go oldest first: those below a model's
    oldest chunk); returns how many."""
    chunks, items = tables.prediction_log, tables.prediction_items
    deleted = 0
    with engine.begin() as conn:
        oldest = dict(
            conn.execute(sa.select(chunks.c.model, sa.func.min(chunks.c.id)).group_by(chunks.c.model)).all()
        )
        for (model,) in conn.execute(sa.select(items.c.model).distinct()).all():
            stale = sa.delete(items).where(items.c.model == model)
            if model in oldest:
                stale = stale.where(items.c.chunk_id < oldest[model])
            deleted += conn.execute(stale).rowcount or 0
    return deleted


def forget_items(conn: Connection, model: str, item_ids: Sequence[str]) -> int:
    """Remove every logged row of ``item_ids`` under ``model`` (a deletion request), in the
    caller's transaction: each chunk that holds one is rewritten without it (or deleted when
    nothing is left), and the items' rows go. Returns the logged rows removed.

    Rows after a removed one in its chunk move up a place, so a count-window cursor inside
    that chunk may judge a few rows twice or skip them once.
    """
    chunks, items = tables.prediction_log, tables.prediction_items
    ids = list(dict.fromkeys(item_ids))
    wanted = set(ids)
    holding: set[int] = set()
    for lo in range(0, len(ids), 500):
        part = ids[lo : lo + 500]
        holding.update(
            conn.execute(
                sa.select(items.c.chunk_id).where(items.c.model == model, items.c.item_id.in_(part))
            ).scalars()
        )
        conn.execute(sa.delete(items).where(items.c.model == model, items.c.item_id.in_(part)))
    removed = 0
    for chunk in sorted(holding):
        row = conn.execute(
            sa.select(chunks.c.n, chunks.c.data, chunks.c.ids).where(chunks.c.id == chunk)
        ).first()
        if row is None or row.ids is None:
            continue
        logged = orjson.loads(row.ids)
        keep = np.fromiter((i not in wanted for i in logged), dtype=bool, count=len(logged))
        removed += int((~keep).sum())
        if not keep.any():
            conn.execute(sa.delete(chunks).where(chunks.c.id == chunk))
        elif not keep.all():
            matrix = np.frombuffer(row.data, dtype=DTYPE).reshape(row.n, -1)[keep]
            conn.execute(
                sa.update(chunks)
                .where(chunks.c.id == chunk)
                .values(
                    n=int(keep.sum()),
                    data=np.ascontiguousarray(matrix).tobytes(),
                    ids=orjson.dumps([i for i, k in zip(logged, keep, strict=True) if k]).decode(),
                    at_min=float(matrix[:, 0].min()),
                    at_max=float(matrix[:, 0].max()),
                )
            )
    return removed


# --- reading -----------------------------------------------------------------------------


def logged_versions(engine: Engine, model: str) -> dict[int, int]:
    """Version -> logged rows of a model."""
    table = tables.prediction_log
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(table.c.version, sa.func.sum(table.c.n))
            .where(table.c.model == model)
            .group_by(table.c.version)
        ).all()
    return {int(v): int(n) for v, n in rows}
