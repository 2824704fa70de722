"""Reading the prediction log back: logged rows of a version as arrays, decoded, or exported.

``read_log`` reads a version's chunks (``monitoring.log`` writes them) with one join and one
``numpy.frombuffer`` into a ``LogFrame``: a row each would have the driver build millions of
Python objects. ``decoded`` gives the rows as clients sent them (feature values, the decision),
``export_log`` writes them to CSV, Parquet or JSON lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from assay.errors import InvalidInput
from assay.monitoring.log import CHUNK_ROWS, DTYPE
from assay.registry.loaded import LoadedModel
from assay.store import tables

if TYPE_CHECKING:
    import pandas as pd

EXPORT_SUFFIXES = (".csv", ".parquet", ".jsonl")


@dataclass(frozen=True)
class LogFrame:
    """Logged rows of one model version, sorted by time."""

    model: str
    version: int
    positions: np.ndarray  # each row's place in the log: chunk id * CHUNK_ROWS + index in its chunk
    at: np.ndarray  # UNIX seconds
    X: np.ndarray  # encoded features (n, d)
    proba: np.ndarray  # class probabilities (n, k), in the version's class order
    ids: list[str | None] | None  # item ids, when asked for

    def __len__(self) -> int:
        return len(self.at)

    @classmethod
    def empty(cls, model: str, version: int, d: int, k: int) -> LogFrame:
        return cls(model, version, np.empty(0, np.int64), np.empty(0), np.empty((0, d)), np.empty((0, k)), [])


def log_span(
    engine: Engine, model: str, version: int, *, after: int | None = None
) -> tuple[float, float, int] | None:
    """(first time, last time, rows) of ``model@version``'s log, or None if empty; ``after`` (a
    position) leaves out the chunks before it (the rows are then an upper bound)."""
    table = tables.prediction_log
    query = sa.select(sa.func.min(table.c.at_min), sa.func.max(table.c.at_max), sa.func.sum(table.c.n)).where(
        table.c.model == model, table.c.version == version
    )
    if after is not None:
        query = query.where(table.c.id >= after // CHUNK_ROWS)
    with engine.connect() as conn:
        first, last, n = conn.execute(query).one()
    return None if not n else (float(first), float(last), int(n))


def read_log(
    engine: Engine,
    model: str,
    version: int,
    *,
    width: tuple[int, int],
    since: float | None = None,
    until: float | None = None,
    after: int | None = None,
    with_ids: bool = False,
) -> LogFrame:
    """The rows of ``model@version`` logged in [since, until) (and after position ``after``),
    sorted by time; ``width`` is (features, classes) of the version."""
    table = tables.prediction_log
    d, k = width
    columns = [table.c.id, table.c.n, table.c.data] + ([table.c.ids] if with_ids else [])
    query = sa.select(*columns).where(table.c.model == model, table.c.version == version)
    if since is not None:
        query = query.where(table.c.at_max >= since)
    if until is not None:
        query = query.where(table.c.at_min < until)
    if after is not None:
        query = query.where(table.c.id >= after // CHUNK_ROWS)
    with engine.connect() as conn:
        chunks = conn.execute(query.order_by(table.c.id)).all()
    if not chunks:
        return LogFrame.empty(model, version, d, k)
    matrix = np.frombuffer(b"".join(c.data for c in chunks), dtype=DTYPE)
    total = sum(c.n for c in chunks)
    if matrix.size != total * (1 + d + k):
        raise InvalidInput(
            f"logged rows of {model}@{version} do not have {d} features and {k} probabilities each",
            field="version",
        )
    matrix = matrix.reshape(total, 1 + d + k)
    positions = np.concatenate([c.id * CHUNK_ROWS + np.arange(c.n, dtype=np.int64) for c in chunks])
    at = matrix[:, 0]
    keep = np.ones(total, dtype=bool)
    if since is not None:
        keep &= at >= since
    if until is not None:
        keep &= at < until
    if after is not None:
        keep &= positions > after
    order = np.flatnonzero(keep)
    order = order[np.argsort(at[order], kind="stable")]
    ids = None
    if with_ids:
        every: list[str | None] = []
        for c in chunks:
            every.extend(orjson.loads(c.ids) if c.ids is not None else [None] * c.n)
        ids = [every[i] for i in order.tolist()]
    return LogFrame(
        model, version, positions[order], at[order], matrix[order, 1 : 1 + d], matrix[order, 1 + d :], ids
    )


def frame_of(loaded: LoadedModel, engine: Engine, **kwargs: Any) -> LogFrame:
    """``read_log`` for a loaded version (its widths from its schema and classes)."""
    return read_log(
        engine,
        loaded.record.model,
        loaded.record.version,
        width=(len(loaded.schema.features), len(loaded.classes)),
        **kwargs,
    )


def decoded(loaded: LoadedModel, frame: LogFrame) -> pd.DataFrame:
    """A log frame as people read it: time, version, id, feature values, probabilities, prediction."""
    import pandas as pd  # exports only: the server's log never needs it

    out = pd.DataFrame(
        {
            "at": pd.to_datetime(frame.at, unit="s", utc=True),
            "model": frame.model,
            "version": frame.version,
            "id": frame.ids if frame.ids is not None else [None] * len(frame),
        }
    )
    for j, feature in enumerate(loaded.schema.features):
        column = frame.X[:, j]
        missing = np.isnan(column)
        if feature.kind == "boolean":
            values = pd.array(np.where(missing, False, column == 1.0), dtype="boolean")
            values[missing] = pd.NA
        elif feature.kind == "categorical":
            cats = np.asarray(feature.categories, dtype=object)
            codes = np.where(missing, 0, column).astype(np.int64)
            values = cats[codes] if len(cats) else np.full(len(column), None, dtype=object)
            values[missing] = None
        else:
            values = column
        out[feature.name] = values
    classes = loaded.classes
    for j, cls in enumerate(classes):
        out[f"probability_{cls}"] = frame.proba[:, j]
    if loaded.positive_index is not None:
        pi = loaded.positive_index
        flagged = frame.proba[:, pi] >= loaded.decision_threshold()
        out["prediction"] = np.where(flagged, classes[pi], classes[1 - pi])
    else:
        out["prediction"] = (
            np.asarray(classes, dtype=object)[frame.proba.argmax(axis=1)] if len(frame) else []
        )
    return out


def export_log(frames: Sequence[pd.DataFrame], output: Path) -> int:
    """Write decoded log rows to CSV, Parquet or JSON lines (by the suffix); returns the row count."""
    import pandas as pd

    suffix = output.suffix.lower()
    if suffix not in EXPORT_SUFFIXES:
        raise InvalidInput(f"{output}: write {', '.join(EXPORT_SUFFIXES)}", field="output")
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    if suffix == ".csv":
        frame.to_csv(tmp, index=False)
    elif suffix == ".parquet":
        frame.to_parquet(tmp, index=False)
    else:
        frame.to_json(tmp, orient="records", lines=True, date_format="iso")
    tmp.replace(output)  # a reader never sees half a file
    return len(frame)
