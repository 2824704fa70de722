"""A model's feature schema and the one encoding from raw values to the matrix models see.

Training encodes a DataFrame column by column; serving encodes JSON records one
by one. Both go through this module so a feature means the same thing in both
places: numeric -> float, boolean -> 0/1, categorical -> the index of the value
in the vocabulary learnt at training (unknown or missing -> NaN, which every
candidate handles).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from assay.errors import DataError, InvalidInput
from assay.registry.contracts import Kind
from assay.registry.records import check_schema

if TYPE_CHECKING:
    import pandas as pd

_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})


@dataclass
class Feature:
    """One input of a model."""

    name: str
    kind: Kind
    categories: list[str] = field(default_factory=list)  # categorical only, in code order
    nullable: bool = False  # missing values were seen in training, so a client may send null

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "nullable": self.nullable}
        if self.kind == "categorical":
            out["categories"] = self.categories
        return out


@dataclass
class FeatureSchema:
    """The ordered features of a model; column j of the model's matrix is ``features[j]``."""

    features: list[Feature]
    _codes: list[dict[str, int]] = field(init=False, repr=False, compare=False)
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._codes = [{c: i for i, c in enumerate(f.categories)} for f in self.features]
        self._index = {f.name: i for i, f in enumerate(self.features)}

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def categorical_indices(self) -> list[int]:
        return [i for i, f in enumerate(self.features) if f.kind == "categorical"]

    def to_dict(self) -> dict[str, Any]:
        return {"features": [f.to_dict() for f in self.features]}

    @classmethod
    def from_dict(cls, data: Any) -> FeatureSchema:
        """The schema a schema.json record describes, once it passes its contract."""
        return cls(
            [
                Feature(
                    name=f["name"],
                    kind=f["kind"],
                    categories=list(f.get("categories", [])),
                    nullable=f["nullable"],
                )
                for f in check_schema(data)["features"]
            ]
        )

    @classmethod
    def learn(cls, frame: pd.DataFrame, kinds: Mapping[str, Kind], *, source: str) -> FeatureSchema:
        """Learn vocabularies and nullability from training data; ``kinds`` gives each column's kind."""
        return cls.learn_encoded(frame, kinds, source=source)[0]

    @classmethod
    def learn_encoded(
        cls, frame: pd.DataFrame, kinds: Mapping[str, Kind], *, source: str
    ) -> tuple[FeatureSchema, np.ndarray]:
        """The schema ``learn`` learns and the training data encoded by it (encoding is how a bad
        value is found, so the matrix comes at no extra cost)."""
        features = []
        for name, kind in kinds.items():
            column = frame[name]
            categories: list[str] = []
            if kind == "categorical":
                categories = sorted({str(v) for v in column.dropna().unique()})
            features.append(Feature(name, kind, categories, nullable=bool(column.isna().any())))
        schema = cls(features)
        # Fails now, with the column named, if a value is bad.
        return schema, schema.encode_frame(frame, source=source)

    # --- data sets -----------------------------------------------------------

    def encode_frame(self, frame: pd.DataFrame, *, source: str, strict: bool = False) -> np.ndarray:
        """The float64 matrix for a data set; a bad value raises ``DataError`` naming file and column.

        A category the schema does not know is missing in held-out data; with ``strict`` (rows to
        score) it is refused as ``encode_record`` refuses it, never scored as something else.
        """
        missing = [n for n in self.names if n not in frame.columns]
        if missing:
            raise DataError(f"{source}: missing feature column(s): {', '.join(missing)}", field=missing[0])
        out = np.empty((len(frame), len(self.features)), dtype=np.float64)
        for j, feature in enumerate(self.features):
            out[:, j] = self._encode_column(frame[feature.name], j, source)
            if strict and feature.kind == "categorical":
                self._refuse_unknown(frame[feature.name], out[:, j], j, source)
        return out

    def _refuse_unknown(self, column: pd.Series, codes: np.ndarray, j: int, source: str) -> None:
        unknown = np.isnan(codes) & ~np.array([is_missing(v) for v in column], dtype=bool)
        if unknown.any():
            row = int(np.argmax(unknown))
            feature = self.features[j]
            known = ", ".join(repr(c) for c in feature.categories[:10])
            more = ", ..." if len(feature.categories) > 10 else ""
            raise InvalidInput(
                f"{source}: row {row}: feature {feature.name!r} has no category {str(column.iloc[row])[:100]!r} "
                f"(known: {known}{more}); leave it empty to score it as missing",
                field=feature.name,
                code="unknown_category",
            )

    def _encode_column(self, column: pd.Series, j: int, source: str) -> np.ndarray:
        import pandas as pd

        feature = self.features[j]
        if feature.kind == "categorical":
            codes = self._codes[j]

            def code(v: Any) -> float:
                return np.nan if is_missing(v) else codes.get(str(v), np.nan)

            # Text columns (what CSV files give) by distinct value; other values' text can tell
            # apart what pandas counts as one value (0.0 and -0.0), so they go one by one.
            if isinstance(column.dtype, pd.StringDtype):
                return _by_distinct(column, code)
            return np.array([code(v) for v in column], dtype=np.float64)
        if feature.kind == "boolean":
            if column.dtype == object:
                values = np.fromiter((_bool_code(v) for v in column), dtype=np.float64, count=len(column))
            else:
                values = _by_distinct(column, _bool_code)
            bad = column.notna().to_numpy() & np.isnan(values)
            if bad.any():
                raise DataError(
                    f"{source}: column {feature.name!r} is boolean but row {int(np.argmax(bad))} "
                    f"holds {column[bad].iloc[0]!r}",
                    field=feature.name,
                )
            return values

        numbers = _text_numbers(column)
        if numbers is None or (np.isnan(numbers) & column.notna().to_numpy()).any():
            numeric = pd.to_numeric(column, errors="coerce")
            bad = column.notna() & numeric.isna()
            if bad.any():
                raise DataError(
                    f"{source}: column {feature.name!r} must be numeric but holds {column[bad].iloc[0]!r}",
                    field=feature.name,
                )
            numbers = numeric.to_numpy(dtype=np.float64)
        if np.isinf(numbers).any():
            raise DataError(f"{source}: column {feature.name!r} holds inf", field=feature.name)
        return numbers

    # --- requests ------------------------------------------------------------

    def encode_record(self, record: Mapping[str, Any], *, strict: bool = True) -> np.ndarray:
        """One row for a JSON record; ``InvalidInput`` names the first bad feature.

        ``strict`` refuses features the model does not know (a typo would otherwise
        be silently ignored and the score computed without it).
        """
        if strict and len(record) != len(self.features):
            unknown = [k for k in record if k not in self._index]
            if unknown:
                raise self.unknown_feature(unknown[0])
        row = np.empty(len(self.features), dtype=np.float64)
        for j, feature in enumerate(self.features):
            try:
                value = record[feature.name]
            except KeyError:
                raise InvalidInput(
                    f"missing feature {feature.name!r}",
                    field=f"features.{feature.name}",
                    code="missing_feature",
                ) from None
            row[j] = self.encode_value(j, value)
        return row

    def unknown_feature(self, name: str) -> InvalidInput:
        """The error for a feature this model does not take (a typo would otherwise go unnoticed)."""
        return InvalidInput(
            f"unknown feature {name!r}; this model takes: {', '.join(self.names)}",
            field=f"features.{name}",
            code="unknown_feature",
        )

    def encode_value(self, j: int, value: Any) -> float:
        feature = self.features[j]
        where = f"features.{feature.name}"
        if value is None:
            # Every candidate scores a missing category (held-out data has unseen ones too), so
            # null is how a client asks for a category the model never saw to be scored.
            if not feature.nullable and feature.kind != "categorical":
                raise InvalidInput(f"feature {feature.name!r} may not be null", field=where)
            return math.nan
        if feature.kind == "categorical":
            if isinstance(value, bool | dict | list):
                raise InvalidInput(f"feature {feature.name!r} is categorical: send a string", field=where)
            code = self._codes[j].get(str(value))
            if code is None:
                known = ", ".join(repr(c) for c in feature.categories[:10])
                more = ", ..." if len(feature.categories) > 10 else ""
                raise InvalidInput(
                    f"feature {feature.name!r} has no category {str(value)[:100]!r} (known: {known}{more}); "
                    "send null to score it as missing",
                    field=where,
                    code="unknown_category",
                )
            return float(code)
        if feature.kind == "boolean":
            if isinstance(value, bool):
                return 1.0 if value else 0.0
            parsed = _parse_bool_or_none(value) if isinstance(value, str | int) else None
            if parsed is None:
                raise InvalidInput(f"feature {feature.name!r} must be a boolean; got {value!r}", field=where)
            return 1.0 if parsed else 0.0
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(
                f"feature {feature.name!r} must be a number; got {type(value).__name__}", field=where
            )
        number = float(value)
        if not math.isfinite(number):
            raise InvalidInput(f"feature {feature.name!r} must be finite; got {value!r}", field=where)
        return number

    def decode_row(self, row: Sequence[float]) -> dict[str, Any]:
        """The JSON values a row stands for (what a response shows as "features used")."""
        out: dict[str, Any] = {}
        for j, feature in enumerate(self.features):
            v = float(row[j])
            if math.isnan(v):
                out[feature.name] = None
            elif feature.kind == "boolean":
                out[feature.name] = bool(v)
            elif feature.kind == "categorical":
                out[feature.name] = feature.categories[int(v)]
            else:
                out[feature.name] = int(v) if v.is_integer() and abs(v) < 2**53 else v
        return out


def is_missing(value: Any) -> bool:
    """None, NaN or pandas' NA: a value a table leaves empty."""
    # pandas' NA, recognised without importing pandas (a value can only be NA once pandas is loaded).
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or (type(value).__name__ == "NAType" and value is sys.modules["pandas"].NA)
    )


def _by_distinct(column: pd.Series, value_of: Callable[[Any], float]) -> np.ndarray:
    """``value_of`` of every value of ``column`` (NaN where missing), asked once per distinct value.

    Only for columns whose dtype is not object: there, values pandas counts as equal are the
    same value to ``value_of``."""
    import pandas as pd

    codes, distinct = pd.factorize(column, use_na_sentinel=True)
    table = np.fromiter((value_of(v) for v in distinct), dtype=np.float64, count=len(distinct))
    return np.append(table, np.nan)[codes]  # code -1 (missing) takes the NaN at the end


def _text_numbers(column: pd.Series) -> np.ndarray | None:
    """The numbers in a column of text as pandas' ``to_numeric`` reads them (NaN where missing),
    parsed by Arrow (5-20x faster); None where that is not sure to be pandas' reading: text not
    stored by Arrow, text Arrow does not read as a number (blanks around it, words...: pandas
    reads those), or a negative zero among whole numbers only (pandas reads those as integers,
    and "-0" as 0)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    if not (isinstance(column.dtype, pd.StringDtype) and column.dtype.storage == "pyarrow"):
        return None
    try:
        values = np.asarray(pc.cast(pa.array(column.array), pa.float64()).to_numpy(zero_copy_only=False))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    zeros = values == 0
    if np.signbit(values[zeros]).any() and np.array_equal(values, np.floor(values)):
        return None
    return values


def _bool_code(value: Any) -> float:
    """1.0 or 0.0 for a bool-like value; NaN for a missing or not bool-like one."""
    parsed = _parse_bool_or_none(value)
    return np.nan if parsed is None else float(parsed)


def _parse_bool_or_none(value: Any) -> bool | None:
    if is_missing(value):
        return None
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer) and value in (0, 1):
        return bool(value)
    if isinstance(value, float | np.floating) and value in (0.0, 1.0):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    return None


def infer_kind(column: pd.Series) -> Kind:
    """The kind a column most likely is: bool-like -> boolean, numeric -> numeric, else categorical."""
    import pandas as pd

    values = column.dropna()
    if values.empty:
        return "numeric"
    if pd.api.types.is_bool_dtype(values):
        return "boolean"
    if pd.api.types.is_numeric_dtype(values):
        # A number reads as a boolean only when it is 0 or 1 (``_parse_bool_or_none``): asked of
        # the whole array at once rather than of each value in Python.
        return "boolean" if values.isin((0, 1)).all() else "numeric"
    numbers = _text_numbers(values)
    # Text Arrow reads as numbers, one of them not 0 or 1: not bool-like, and numeric when 90%
    # are numbers ("nan" text is none), as the reading by distinct values below would find.
    if (
        numbers is not None
        and not np.isin(numbers, (0.0, 1.0)).all()
        and np.count_nonzero(~np.isnan(numbers)) / len(values) >= 0.9
    ):
        return "numeric"
    # Each distinct value once, weighted by its count: a million rows of a few categories are a
    # few calls, not a million.
    codes, distinct = pd.factorize(values)
    if all(_parse_bool_or_none(v) is not None for v in distinct):  # stops at the first that is not
        return "boolean"
    # A column that is mostly numbers is numeric with a few bad values, which encoding
    # then reports by name, rather than a categorical that would hide them.
    numbers = np.asarray(pd.to_numeric(distinct, errors="coerce").notna())
    if np.bincount(codes, minlength=len(distinct))[numbers].sum() / len(values) >= 0.9:
        return "numeric"
    return "categorical"
