"""Reading the prediction log back: a version's rows (``frame_of``), decoded, and exported.

``frame_of`` reads a loaded version's rows from the log store (``store/log_store.py``) with the
version's widths; ``decoded`` gives a ``LogFrame``'s rows (``store/log_store.py`` reads them from either
backend) as clients sent them (feature values, the decision), ``export_log`` writes them to CSV,
Parquet or JSON lines (``assay log export``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from assay.errors import InvalidInput
from assay.registry.loaded import LoadedModel
from assay.store.log_store import LogFrame, LogStore

if TYPE_CHECKING:
    import pandas as pd

EXPORT_SUFFIXES = (".csv", ".parquet", ".jsonl")


def frame_of(loaded: LoadedModel, log: LogStore, **kwargs: Any) -> LogFrame:
    """``LogStore.read`` for a loaded version (its widths from its schema and classes)."""
    return log.read(
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
