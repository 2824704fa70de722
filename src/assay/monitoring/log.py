"""The prediction log's writer and its exports: every score the server computes, kept for monitoring.

``PredictionLog`` is the sink the scorer hands each scored batch to. It never blocks and never
fails a score: ``record`` samples (``sample``), appends the batch's arrays, untouched, to an
in-memory queue bounded in rows, and returns; a background thread writes what is queued to the
log store (``store/log_store.py``: the store's tables or Parquet files) every
``flush_interval_s`` of the store, or as soon as a chunk's worth is queued. A full queue or a
store that refuses the write (disk full, database down) drops rows, counted by reason
(``dropped``, and the ``on_drop`` callback the server turns into a Prometheus counter). Storage
is bounded too: rows older than the retention and the oldest rows beyond ``max_rows`` per model
are deleted as the writer goes.

Reading rows back is the log store's (``LogStore.read``); ``monitoring.frames`` decodes and
exports them.
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

from assay.errors import InvalidInput
from assay.settings import Settings
from assay.store.log_store import CHUNK_ROWS, LogStore

log = logging.getLogger(__name__)

_PRUNE_EVERY_S = 60.0
DropCallback = Callable[[str, int], None]


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
        store: LogStore,
        *,
        sample: float = 1.0,
        queue_rows: int = 100_000,
        max_rows: int = 10_000_000,
        retention_s: float = 90 * 86400.0,
        flush_interval_s: float | None = None,
        on_drop: DropCallback | None = None,
        on_write: Callable[[int], None] | None = None,
    ) -> None:
        if not 0.0 <= sample <= 1.0:
            raise InvalidInput(f"the log's sample rate must be from 0 to 1; got {sample}", field="log_sample")
        self.store = store
        self.sample = sample
        self.queue_rows = queue_rows
        self.max_rows = max_rows
        self.retention_s = retention_s
        self.flush_interval_s = store.flush_interval_s if flush_interval_s is None else flush_interval_s
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
                if self._queued >= CHUNK_ROWS:
                    self._wake.set()  # a chunk's worth: write it now rather than at the interval
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
                    self.store.prune(max_rows=self.max_rows, retention_s=self.retention_s)
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
                    self.store.write(
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
    store: LogStore,
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
        store,
        sample=settings.log_sample,
        queue_rows=queue_rows if queue_rows is not None else settings.log_queue_rows,
        max_rows=settings.log_max_rows,
        retention_s=settings.log_retention_days * 86400.0,
        on_drop=on_drop,
        on_write=on_write,
    )
