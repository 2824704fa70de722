"""Reading labelled data sets: files in, checked frames and a content fingerprint out.

CSV, TSV and Parquet, gzip/bz2/xz/zstd-compressed or not, with a header row or
with column names given by the spec. Everything that would make training
meaningless (no rows, duplicate ids, a single class, a missing column) is
refused here with a message naming the file and the column.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import io
import lzma
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa

from assay.errors import DataError
from assay.registry.schema import Kind, infer_kind

if TYPE_CHECKING:  # the spec's candidates import scikit-learn: reading a file needs none of it
    from assay.modelling.spec import ModelSpec

_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")


def _format_of(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    while suffixes and suffixes[-1] in _COMPRESSIONS:
        suffixes.pop()
    ext = suffixes[-1] if suffixes else ""
    if ext in (".parquet", ".pq"):
        return "parquet"
    if ext in (".tsv", ".tab"):
        return "tsv"
    if ext == ".csv":
        return "csv"
    raise DataError(
        f"{path}: unknown file type {ext or '(none)'}; use .csv, .tsv or .parquet (optionally .gz/.bz2/.xz/.zst)"
    )


def _open(path: Path) -> BinaryIO | pa.NativeFile:
    """A binary stream of the file's content, decompressed when its last suffix names a compression."""
    suffix = path.suffix.lower()
    if suffix == ".zst":
        # pyarrow bundles zstd; pandas would need the optional zstandard package for it.
        return pa.input_stream(str(path), compression="zstd")
    if suffix == ".gz":
        return gzip.open(path, "rb")
    if suffix == ".bz2":
        return bz2.open(path, "rb")
    if suffix == ".xz":
        return lzma.open(path, "rb")
    return open(path, "rb")


def _read_parquet(path: Path) -> pd.DataFrame:
    if path.suffix.lower() not in _COMPRESSIONS:
        return pd.read_parquet(path)
    # Parquet seeks (its index is at the end of the file), which a decompressing stream cannot.
    with _open(path) as fh:
        return pd.read_parquet(io.BytesIO(fh.read()))


# Frames already read in this context (``read_once``), by file and reading options.
_READ_ONCE: ContextVar[dict[tuple[Any, ...], pd.DataFrame] | None] = ContextVar(
    "assay_read_once", default=None
)


@contextmanager
def read_once() -> Iterator[None]:
    """Within the block, a file read again (the same path, size, modification time and options)
    is not parsed again: forgetting reads the same data to find the ids and then to train."""
    token = _READ_ONCE.set({})
    try:
        yield
    finally:
        _READ_ONCE.reset(token)


def read_table(
    path: str | Path, *, header: bool = True, columns: list[str] | None = None, sep: str | None = None
) -> pd.DataFrame:
    """A file as a DataFrame of raw values; ids and labels stay strings so '007' stays '007'."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    memo = _READ_ONCE.get()
    if memo is None:
        return _read_table(path, header, columns, sep)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, header, tuple(columns or ()), sep)
    if key not in memo:
        memo[key] = _read_table(path, header, columns, sep)
    frame = memo[key].copy()  # callers may change their frame; the one kept stays as read
    frame.attrs["source"] = str(path)
    return frame


def _read_table(path: Path, header: bool, columns: list[str] | None, sep: str | None) -> pd.DataFrame:
    fmt = _format_of(path)
    try:
        if fmt == "parquet":
            frame = _read_parquet(path)
        else:
            frame = _read_text(path, sep or ("\t" if fmt == "tsv" else ","), header)
        if columns:
            frame.columns = _check_width(path, columns, frame.shape[1])
    except DataError:
        raise
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: the file is empty") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError, ValueError, lzma.LZMAError) as exc:
        raise DataError(f"{path}: cannot be read as {fmt}: {exc}") from exc
    if frame.empty:
        raise DataError(f"{path}: has no rows")
    frame.attrs["source"] = str(path)
    return frame


_NA_VALUES = ["", "NA", "NaN", "nan", "null", "None"]  # missing, with pandas' own list
# From this size on a CSV/TSV file is parsed by Arrow's threads (5-6x faster on 20-100 MB);
# below it pandas' parser is as fast and Arrow's threads cost more to start than they save.
ARROW_MIN_BYTES = 4 << 20


def _read_text(path: Path, sep: str, header: bool) -> pd.DataFrame:
    """A CSV/TSV file as strings. A large one is read by Arrow's parser, unless it cannot read
    the file as pandas' would (short rows, extra separators, a separator longer than a
    character...): then, as for small files, pandas' parser reads it and says what is wrong."""
    options: dict[str, Any] = {
        "sep": sep,
        "header": 0 if header else None,
        "dtype": str,
        "keep_default_na": True,
        "na_values": _NA_VALUES,
    }
    if path.stat().st_size >= ARROW_MIN_BYTES:
        try:
            with _open(path) as fh:
                return pd.read_csv(fh, engine="pyarrow", **options)
        except (pa.ArrowException, ValueError, OSError, EOFError, lzma.LZMAError):
            pass
    with _open(path) as fh:
        return pd.read_csv(fh, **options, quoting=csv.QUOTE_MINIMAL, index_col=False)


def _check_width(path: Path, columns: list[str], width: int) -> list[str]:
    if len(columns) != width:
        raise DataError(f"{path}: has {width} columns but the spec names {len(columns)}")
    return columns


def fingerprint(paths: list[str], extra: pd.DataFrame | None = None) -> str:
    """SHA-256 over the bytes of the files, in order, and of ``extra`` (labels from a campaign)."""
    digest = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    if extra is not None:
        digest.update(extra.sort_values(list(extra.columns)).to_csv(index=False).encode())
    return digest.hexdigest()


@dataclass
class LabelledData:
    """A checked data set: ids, labels (as strings) and the raw columns features come from."""

    frame: pd.DataFrame
    ids: np.ndarray
    labels: np.ndarray
    source: str


def read_labelled(
    spec: ModelSpec, paths: list[str], campaign_labels: pd.DataFrame | None = None
) -> LabelledData:
    """Read and concatenate ``paths`` and check the id and label columns.

    With ``campaign_labels`` (columns ``id`` and ``label``, from a review campaign)
    the files supply features only: the rows kept are the items the campaign
    resolved, and their label is the reviewers'.
    """
    d = spec.data
    frames = [read_table(p, header=d.header, columns=d.columns or None, sep=d.sep) for p in paths]
    source = ", ".join(paths)
    columns = list(frames[0].columns)
    for p, f in zip(paths[1:], frames[1:], strict=True):
        if list(f.columns) != columns:
            raise DataError(f"{p}: columns differ from {paths[0]}")
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if campaign_labels is not None:
        if d.id not in frame.columns:
            raise DataError(f"{source}: the id column {d.id!r} is missing", field="data.id")
        labels = dict(
            zip(campaign_labels["id"].astype(str), campaign_labels["label"].astype(str), strict=True)
        )
        frame = frame[frame[d.id].astype(str).isin(labels)].reset_index(drop=True)
        if frame.empty:
            raise DataError(
                f"{source}: campaign {d.campaign!r} has no resolved labels for any item in these files",
                field="data.campaign",
            )
        frame[d.label] = frame[d.id].astype(str).map(labels)
        source = f"{source} (labels from campaign {d.campaign!r})"
    for col, what in ((d.id, "id"), (d.label, "label")):
        if col not in frame.columns:
            raise DataError(
                f"{source}: the {what} column {col!r} is missing; columns are: {', '.join(map(str, frame.columns))}",
                field=f"data.{what}",
            )
    ids = frame[d.id].astype(str)
    if frame[d.id].isna().any():
        raise DataError(f"{source}: the id column {d.id!r} has empty values", field="data.id")
    if not ids.is_unique:  # by a hash table; which ids repeat is asked only then (4x the time)
        dupes = ids[ids.duplicated()]
        raise DataError(
            f"{source}: duplicate item ids in {d.id!r}, e.g. {dupes.iloc[0]!r} ({dupes.size} duplicates)",
            field="data.id",
        )
    if frame[d.label].isna().any():
        n = int(frame[d.label].isna().sum())
        raise DataError(f"{source}: the label column {d.label!r} has {n} empty values", field="data.label")
    labels = frame[d.label].astype(str).to_numpy()
    return LabelledData(frame=frame, ids=ids.to_numpy(), labels=labels, source=source)


def id_strings(ids: np.ndarray) -> np.ndarray:
    """``ids`` as an object array of ``str`` (as read, ids already are one: then not copied)."""
    if ids.dtype == object and pd.api.types.infer_dtype(ids, skipna=False) == "string":
        return ids
    return np.asarray(ids).astype(str).astype(object)


def rows_where(frame: pd.DataFrame, keep: np.ndarray) -> pd.DataFrame:
    """The rows of ``frame`` where ``keep`` (a boolean mask), renumbered from 0. Column by
    column: Arrow-backed columns (what large CSV files give) are filtered by Arrow, which is
    20x faster than pandas' row take on a million rows."""
    out = pd.DataFrame({j: frame.iloc[:, j].array[keep] for j in range(frame.shape[1])})
    out.columns = frame.columns
    out.attrs.update(frame.attrs)
    return out


def feature_kinds(spec: ModelSpec, frame: pd.DataFrame, *, source: str) -> dict[str, Kind]:
    """The features and their kinds: the spec's, else every column but id, label and sensitive ones."""
    f = spec.features
    skip = {spec.data.id, spec.data.label}
    for col in [*f.include, *f.exclude, *f.sensitive, *f.kinds]:
        if col not in frame.columns:
            raise DataError(f"{source}: the spec names column {col!r}, which the data lacks", field=col)
    if spec.data.id in f.include or spec.data.label in f.include:
        raise DataError(
            f"{source}: features.include may not name the id or label column", field="features.include"
        )
    names = f.include or [
        c for c in frame.columns if c not in skip and c not in f.sensitive and c not in f.exclude
    ]
    if not names:
        raise DataError(f"{source}: no feature columns left", field="features")
    return {name: f.kinds.get(name) or infer_kind(frame[name]) for name in names}  # type: ignore[misc]


def check_held_out(spec: ModelSpec, train: LabelledData, test: LabelledData, classes: list[str]) -> None:
    """Refuse held-out data that cannot be evaluated like the training data.

    That is data with columns the training data lacks, label values it lacks, or
    without a sensitive column (fairness is measured on the held-out data).
    """
    extra = [c for c in test.frame.columns if c not in train.frame.columns]
    if extra:
        raise DataError(f"{test.source}: columns the training data lacks: {', '.join(map(str, extra))}")
    missing = [c for c in spec.features.sensitive if c not in test.frame.columns]
    if missing:
        raise DataError(
            f"{test.source}: the sensitive column(s) {', '.join(map(repr, missing))} named by features.sensitive "
            "are missing from the held-out data",
            field="features.sensitive",
        )
    unseen = sorted(set(test.labels) - set(classes))
    if unseen:
        raise DataError(f"{test.source}: label values not in the training data: {', '.join(unseen)}")


def check_labels(labels: np.ndarray, positive: str | None, *, source: str) -> tuple[list[str], str | None]:
    """The classes (sorted, positive last for binary) and the positive class; refuses a single class."""
    classes = sorted(set(labels.tolist()))
    if len(classes) < 2:
        raise DataError(
            f"{source}: the label has a single class ({classes[0]!r}); nothing to learn", field="data.label"
        )
    if positive is not None:
        if positive not in classes:
            raise DataError(
                f"{source}: data.positive {positive!r} is not a label value; values are {', '.join(classes)}",
                field="data.positive",
            )
        if len(classes) != 2:
            raise DataError(f"{source}: data.positive is for binary labels; found {len(classes)} classes")
    elif len(classes) == 2:
        positive = _guess_positive(classes)
    if positive is not None:
        classes = [c for c in classes if c != positive] + [positive]
    return classes, positive


def _guess_positive(classes: list[str]) -> str:
    lowered = {c.lower(): c for c in classes}
    for word in ("true", "1", "yes", "positive"):
        if word in lowered:
            return lowered[word]
    return classes[-1]
