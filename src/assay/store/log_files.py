"""The prediction log in Parquet files (``ParquetLog``, the ``parquet`` log backend).

Files are partitioned by model and by the UTC date of their rows:
``ROOT/model=NAME/date=YYYY-MM-DD/part-SEQUENCE-vVERSION.parquet``, each with the columns ``at``
(UNIX seconds), ``id`` (text, may be null), ``x`` (the encoded features, a fixed-size list) and
``p`` (the class probabilities, a fixed-size list), at most ``CHUNK_ROWS`` rows, and its first
and last time in the file's metadata. A part's number comes from the model's ``_sequence`` file,
taken under an exclusive lock, so that processes writing side by side never share one; rows'
positions are that number times ``CHUNK_ROWS`` plus their index.

A part is written to a hidden temporary file and renamed into place: a process killed mid-write
leaves whole parts and a temporary file no reader looks at (pruning removes it later). Deleting
items rewrites the parts that hold them the same way. Footers (rows, first and last time) are
cached per file, keyed by its size and modification time, so windows and spans open only the
parts they need.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy.engine import Connection

from assay.errors import InvalidInput
from assay.store import log_store
from assay.store.log_store import CHUNK_ROWS, LogFrame, LogStore, Rows, Span, Window

_PART = re.compile(r"^part-(\d{12})-v(\d+)\.parquet$")
_DATE = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
_DAY = 86_400.0
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
_STALE_TMP_S = 3600.0  # a temporary part this old was left by a killed writer


@dataclass(frozen=True)
class _Part:
    path: Path
    seq: int
    version: int
    date: str


@dataclass(frozen=True)
class _Footer:
    n: int
    at_min: float
    at_max: float


def _date(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).date().isoformat()


class ParquetLog(LogStore):
    """The log as Parquet files under ``root`` (see the module docstring)."""

    # Gather rows longer than the store does: each write is a file, and fewer, larger parts
    # make windows faster to read. The writer also writes as soon as a part's worth is queued.
    flush_interval_s = 30.0

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._footers: dict[Path, tuple[int, int, _Footer]] = {}

    # --- writing ------------------------------------------------------------------------------

    def _write(self, model: str, version: int, rows: Rows) -> None:
        # One part per date and ``CHUNK_ROWS`` rows.
        times, ids, X, proba = rows.at, rows.ids, rows.X, rows.proba
        n = len(X)
        days = np.floor(times / _DAY)
        item_ids = pa.array(list(ids) if ids is not None else [None] * n, type=pa.string())
        for day in np.unique(days):
            on_day = np.flatnonzero(days == day)
            for lo in range(0, len(on_day), CHUNK_ROWS):
                take = on_day[lo : lo + CHUNK_ROWS]
                self._write_part(
                    model,
                    version,
                    _date(float(day) * _DAY),
                    times[take],
                    item_ids.take(take),
                    X[take],
                    proba[take],
                )

    def _write_part(
        self,
        model: str,
        version: int,
        date: str,
        at: np.ndarray,
        ids: pa.Array,
        X: np.ndarray,
        proba: np.ndarray,
    ) -> None:
        folder = self._model_dir(model) / f"date={date}"
        folder.mkdir(parents=True, exist_ok=True)
        seq = self._next_seq(model)
        table = pa.table(
            {
                "at": pa.array(at, type=pa.float64()),
                "id": ids,
                "x": _fixed(np.ascontiguousarray(X, dtype=np.float64)),
                "p": _fixed(np.ascontiguousarray(proba, dtype=np.float64)),
            }
        )
        self._replace(folder / f"part-{seq:012d}-v{version}.parquet", table)

    def _replace(self, path: Path, table: pa.Table) -> None:
        """Write ``table`` to ``path`` whole: to a temporary file first, then renamed over it."""
        at = table.column("at")
        bounds = pc.min_max(at)
        meta = {
            b"at_min": repr(bounds["min"].as_py()).encode(),
            b"at_max": repr(bounds["max"].as_py()).encode(),
        }
        table = table.replace_schema_metadata(meta)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        pq.write_table(table, tmp, compression="zstd", row_group_size=CHUNK_ROWS)
        os.replace(tmp, path)

    def _next_seq(self, model: str) -> int:
        """The model's next part number, taken under a lock on its ``_sequence`` file."""
        with open(self._model_dir(model) / "_sequence", "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            raw = f.read().strip()
            seq = int(raw) if raw.isdigit() else max((p.seq for p in self._parts(model)), default=0) + 1
            f.seek(0)
            f.truncate()
            f.write(str(seq + 1).encode())
            f.flush()
        return seq

    def _model_dir(self, model: str) -> Path:
        # Model names are checked by the registry; one that could leave the folder is refused here too.
        if not model or model.startswith(".") or not set(model) <= _NAME_CHARS:
            raise InvalidInput(f"model name {model!r} cannot name a log folder", field="model")
        return self.root / f"model={model}"

    # --- finding parts --------------------------------------------------------------------------

    def _models(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name[len("model=") :] for p in self.root.iterdir() if p.name.startswith("model="))

    def _parts(
        self,
        model: str,
        version: int | None = None,
        *,
        since: float | None = None,
        until: float | None = None,
        after: int | None = None,
    ) -> list[_Part]:
        """The model's parts (of ``version``; with dates that can hold [since, until); numbered
        from ``after``'s), in the order they were written."""
        folder = self._model_dir(model)
        if not folder.is_dir():
            return []
        first = _date(since) if since is not None else None
        last = _date(until) if until is not None else None
        out = []
        for day in os.scandir(folder):
            m = _DATE.match(day.name)
            if m is None or (first and m[1] < first) or (last and m[1] > last):
                continue
            for entry in os.scandir(day.path):
                p = _PART.match(entry.name)
                if p is None:
                    continue
                part = _Part(Path(entry.path), int(p[1]), int(p[2]), m[1])
                if version is not None and part.version != version:
                    continue
                if after is not None and part.seq < after // CHUNK_ROWS:
                    continue
                out.append(part)
        return sorted(out, key=lambda p: p.seq)

    def _footer(self, path: Path) -> _Footer | None:
        """A part's rows and time bounds (None when it is gone: pruned or forgotten meanwhile)."""
        try:
            st = path.stat()
            cached = self._footers.get(path)
            if cached is not None and cached[:2] == (st.st_mtime_ns, st.st_size):
                return cached[2]
            meta = pq.read_metadata(path)
        except FileNotFoundError:
            return None
        kv = meta.metadata or {}
        footer = _Footer(meta.num_rows, float(kv[b"at_min"]), float(kv[b"at_max"]))
        self._footers[path] = (st.st_mtime_ns, st.st_size, footer)
        return footer

    def _with_footers(self, parts: list[_Part]) -> Iterator[tuple[_Part, _Footer]]:
        for part in parts:
            footer = self._footer(part.path)
            if footer is not None:
                yield part, footer

    # --- reading ------------------------------------------------------------------------------

    def _rows(
        self, model: str, version: int, window: Window, width: tuple[int, int], with_ids: bool
    ) -> LogFrame:
        since, until = window.since, window.until
        d, k = width
        parts = [
            (part, footer)
            for part, footer in self._with_footers(
                self._parts(model, version, since=since, until=until, after=window.after)
            )
            if (since is None or footer.at_max >= since) and (until is None or footer.at_min < until)
        ]
        columns = ["at", "x", "p"] + (["id"] if with_ids else [])
        tables, positions = [], []
        for part, _footer in parts:
            try:
                table = pq.read_table(part.path, columns=columns)
            except FileNotFoundError:
                continue
            tables.append(table)
            positions.append(part.seq * CHUNK_ROWS + np.arange(table.num_rows, dtype=np.int64))
        if not tables:
            return LogFrame.empty(model, version, d, k)
        table = pa.concat_tables(tables)
        total = table.num_rows
        x, p = _matrix(table.column("x"), total), _matrix(table.column("p"), total)
        log_store.check_width(model, version, total * (1 + x.shape[1] + p.shape[1]), total, width)
        ids = table.column("id").to_pylist() if with_ids else None
        at = table.column("at").to_numpy()
        return LogFrame(model, version, np.concatenate(positions), at, x, p, ids)

    def span(self, model: str, version: int, *, after: int | None = None) -> Span | None:
        footers = [f for _p, f in self._with_footers(self._parts(model, version, after=after))]
        n = sum(f.n for f in footers)
        if not n:
            return None
        return min(f.at_min for f in footers), max(f.at_max for f in footers), n

    def versions(self, model: str) -> dict[int, int]:
        out: dict[int, int] = {}
        for part, footer in self._with_footers(self._parts(model)):
            out[part.version] = out.get(part.version, 0) + footer.n
        return out

    def start_before(self, model: str, version: int, position: int, rows: int) -> int | None:
        parts = [p for p in self._parts(model, version) if p.seq <= position // CHUNK_ROWS]
        sizes = ((p.seq, f.n) for p, f in self._with_footers(parts[::-1]))
        return log_store.counted_back(sizes, position, rows)

    def _ids_in(self, model: str, ids: Sequence[str]) -> Iterator[tuple[_Part, pa.ChunkedArray, pa.Array]]:
        """Each part of ``model`` holding any of ``ids``, with its id column and which rows hold one."""
        wanted = pa.array(list(dict.fromkeys(ids)), type=pa.string())
        for part in self._parts(model):
            try:
                column = pq.read_table(part.path, columns=["id"]).column("id")
            except FileNotFoundError:
                continue
            mask = pc.fill_null(pc.is_in(column, value_set=wanted), False)
            if pc.any(mask).as_py():
                yield part, column, mask

    def last_versions(self, model: str, ids: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        # Parts in the order written: the last one to hold an item decides its version.
        for part, column, mask in self._ids_in(model, ids):
            for item in column.filter(mask).to_pylist():
                out[item] = part.version
        return out

    def holding(self, models: Sequence[str], ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for model in models:
            for _part, column, mask in self._ids_in(model, ids):
                found.update(column.filter(mask).to_pylist())
        return found

    # --- deleting -----------------------------------------------------------------------------

    def forget(self, conn: Connection, model: str, ids: Sequence[str]) -> int:
        """Rewrite each part holding one of ``ids`` without those rows (delete it when none is
        left), at once: files are outside the store's transaction (``conn`` is not used)."""
        removed = 0
        for part, _column, mask in list(self._ids_in(model, ids)):
            table = pq.read_table(part.path)
            gone = int(pc.sum(mask).as_py())
            removed += gone
            if gone == table.num_rows:
                part.path.unlink(missing_ok=True)
            else:
                self._replace(part.path, table.filter(pc.invert(mask)))
        return removed

    def prune(self, *, max_rows: int, retention_s: float, now: float | None = None) -> int:
        now = time.time() if now is None else now
        deleted = 0
        for model in self._models():
            parts = list(self._with_footers(self._parts(model)))
            doomed = [(p, f) for p, f in parts if retention_s > 0 and f.at_max < now - retention_s]
            if max_rows > 0:
                gone = {p.seq for p, _f in doomed}
                kept = 0
                for part, footer in reversed(parts):
                    if part.seq in gone:
                        continue
                    if kept >= max_rows:
                        doomed.append((part, footer))
                    kept += footer.n
            for part, footer in doomed:
                part.path.unlink(missing_ok=True)
                self._footers.pop(part.path, None)
                deleted += footer.n
            self._tidy(self._model_dir(model), now)
        return deleted

    def _tidy(self, folder: Path, now: float) -> None:
        """Remove temporary parts killed writers left and date folders left empty."""
        for day in folder.iterdir():
            if not day.is_dir() or _DATE.match(day.name) is None:
                continue
            for entry in day.iterdir():
                if entry.name.endswith(".tmp") and now - entry.stat().st_mtime > _STALE_TMP_S:
                    entry.unlink(missing_ok=True)
            if not any(day.iterdir()):
                day.rmdir()


def _fixed(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """A 2-D float array as one fixed-size-list column (its rows' values end to end)."""
    width = matrix.shape[1]
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1), type=pa.float64()), width)


def _matrix(column: pa.ChunkedArray, rows: int) -> np.ndarray:
    """A fixed-size-list column back as an (rows, width) float array."""
    width = column.type.list_size
    values = (
        pa.concat_arrays([chunk.flatten() for chunk in column.chunks]) if column.num_chunks else pa.array([])
    )
    return values.to_numpy(zero_copy_only=False).reshape(rows, width)
