"""Where the prediction log's rows live: the ``LogStore`` every reader and writer of the log uses.

Two places can hold them, picked by the ``log_backend`` setting:

- ``store`` (``StoreLog``, store/log_tables.py): chunks in the store's tables, beside
  everything else (SQLite or PostgreSQL); deletions are part of the caller's transaction.
- ``parquet`` (``ParquetLog``, store/log_files.py): Parquet files partitioned by model and
  date under the home (``log/model=NAME/date=YYYY-MM-DD/part-*.parquet``), readable by any
  Parquet tool.

Both hand rows back as a ``LogFrame`` and give each row a *position*: its place in the model's
log, increasing in the order rows were written (a chunk's or file's number times ``CHUNK_ROWS``
plus the row's index in it). Count windows keep their cursor as a position.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy.engine import Connection, Engine

from assay.errors import InvalidInput, SettingsError
from assay.settings import Settings

CHUNK_ROWS = 65_536  # rows per chunk or file at most (a position is its number * CHUNK_ROWS + index)
BACKENDS = ("store", "parquet")


@dataclass(frozen=True)
class LogFrame:
    """Logged rows of one model version, sorted by time."""

    model: str
    version: int
    positions: np.ndarray  # each row's place in the model's log (see the module docstring)
    at: np.ndarray  # UNIX seconds
    X: np.ndarray  # encoded features (n, d)
    proba: np.ndarray  # class probabilities (n, k), in the version's class order
    ids: list[str | None] | None  # item ids, when asked for

    def __len__(self) -> int:
        return len(self.at)

    @classmethod
    def empty(cls, model: str, version: int, d: int, k: int) -> LogFrame:
        return cls(model, version, np.empty(0, np.int64), np.empty(0), np.empty((0, d)), np.empty((0, k)), [])


Span = tuple[float, float, int]  # (first time, last time, rows)


@dataclass(frozen=True)
class Rows:
    """Rows to write: their times (finite), item ids (or None), encoded features, probabilities."""

    at: np.ndarray
    ids: Sequence[str | None] | None
    X: np.ndarray
    proba: np.ndarray


@dataclass(frozen=True)
class Window:
    """Which rows a read wants: logged in [since, until), and after position ``after``."""

    since: float | None = None
    until: float | None = None
    after: int | None = None


class LogStore(ABC):
    """What the prediction log's writer and readers need of the place its rows live: ``write``
    and ``read`` are written once here, each backend stores (``_write``) and fetches (``_rows``)."""

    # Seconds the background writer gathers rows before writing them (files want fewer, larger parts).
    flush_interval_s: float

    def write(
        self,
        model: str,
        version: int,
        at: np.ndarray | float,
        ids: Sequence[str | None] | None,
        X: np.ndarray,
        proba: np.ndarray,
    ) -> int:
        """Write rows now (all or none); returns how many."""
        n = len(X)
        if not n:
            return 0
        times = np.broadcast_to(np.asarray(at, dtype=np.float64), (n,))
        if not np.isfinite(times).all():
            raise InvalidInput("logged times must be finite", field="at")
        self._write(model, version, Rows(times, ids, X, proba))
        return n

    @abstractmethod
    def _write(self, model: str, version: int, rows: Rows) -> None:
        """Store rows (at least one, finite times) all or none."""

    def read(
        self,
        model: str,
        version: int,
        *,
        width: tuple[int, int],
        since: float | None = None,
        until: float | None = None,
        after: int | None = None,
        with_ids: bool = False,
    ) -> LogFrame:
        """The rows of ``model@version`` logged in [since, until) and after position ``after``,
        sorted by time; ``width`` is (features, classes) of the version."""
        window = Window(since, until, after)
        return selected(self._rows(model, version, window, width, with_ids), window)

    @abstractmethod
    def _rows(
        self, model: str, version: int, window: Window, width: tuple[int, int], with_ids: bool
    ) -> LogFrame:
        """The rows of the chunks or files that may hold ``window``'s rows, in any order."""

    @abstractmethod
    def span(self, model: str, version: int, *, after: int | None = None) -> Span | None:
        """(first time, last time, rows) of ``model@version``'s log, or None if empty; ``after``
        leaves out the chunks before that position (the rows are then an upper bound)."""

    @abstractmethod
    def versions(self, model: str) -> dict[int, int]:
        """Version -> logged rows of a model."""

    @abstractmethod
    def start_before(self, model: str, version: int, position: int, rows: int) -> int | None:
        """A position after which at least ``rows`` rows of ``model@version`` lie at or before
        ``position`` (whole chunks: it may be more); None when the log holds fewer."""

    @abstractmethod
    def prune(self, *, max_rows: int, retention_s: float, now: float | None = None) -> int:
        """Delete rows past the retention, then each model's oldest beyond ``max_rows`` (whole
        chunks or files: a model keeps at most one more than the cap); returns the rows deleted."""

    @abstractmethod
    def last_versions(self, model: str, ids: Sequence[str]) -> dict[str, int]:
        """The version that last scored each of ``ids`` (logged ones only)."""

    @abstractmethod
    def holding(self, models: Sequence[str], ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` the log holds under any of ``models``."""

    @abstractmethod
    def forget(self, conn: Connection, model: str, ids: Sequence[str]) -> int:
        """Remove every logged row of ``ids`` under ``model`` (a deletion request); returns the
        rows removed. The store does it in ``conn``'s transaction; files are rewritten at once."""


def open_log_store(settings: Settings, engine: Engine) -> LogStore:
    """The log store the ``log_backend`` setting names."""
    if settings.log_backend == "store":
        from assay.store.log_tables import StoreLog

        return StoreLog(engine)
    if settings.log_backend == "parquet":
        from assay.store.log_files import ParquetLog

        return ParquetLog(settings.home / "log")
    raise SettingsError(
        f"log_backend (ASSAY_LOG_BACKEND) must be one of {', '.join(BACKENDS)}; got {settings.log_backend!r}"
    )


def selected(frame: LogFrame, window: Window) -> LogFrame:
    """The rows of ``frame`` (in any order) in ``window``, sorted by time: the last step of a read."""
    since, until, after = window.since, window.until, window.after
    at = frame.at
    keep = np.ones(len(at), dtype=bool)
    if since is not None:
        keep &= at >= since
    if until is not None:
        keep &= at < until
    if after is not None:
        keep &= frame.positions > after
    order = np.flatnonzero(keep)
    times = at[order]
    if len(order) and not (times[1:] >= times[:-1]).all():
        order = order[np.argsort(times, kind="stable")]
    elif len(order) and order[-1] - order[0] + 1 == len(order):
        # Rows written in time order, the window one run of them: views, not a copy of a million rows.
        run = slice(int(order[0]), int(order[-1]) + 1)
        ids = frame.ids[run] if frame.ids is not None else None
        return LogFrame(
            frame.model, frame.version, frame.positions[run], at[run], frame.X[run], frame.proba[run], ids
        )
    ids = [frame.ids[i] for i in order.tolist()] if frame.ids is not None else None
    return LogFrame(
        frame.model, frame.version, frame.positions[order], at[order], frame.X[order], frame.proba[order], ids
    )


def counted_back(chunks: Iterable[tuple[int, int]], position: int, rows: int) -> int | None:
    """``LogStore.start_before`` over (number, rows) of chunks, newest first, none past ``position``."""
    total = 0
    for number, n in chunks:
        total += min(n, position - number * CHUNK_ROWS + 1)
        if total >= rows:
            return number * CHUNK_ROWS - 1
    return None


def check_width(model: str, version: int, values: int, rows: int, width: tuple[int, int]) -> None:
    """Refuse logged rows whose width is not the version's (a log written by another schema)."""
    d, k = width
    if values != rows * (1 + d + k):
        raise InvalidInput(
            f"logged rows of {model}@{version} do not have {d} features and {k} probabilities each",
            field="version",
        )
