"""Request encoding: JSON feature records to the matrix a version's model takes.

``FeatureSchema.encode_record`` is the one definition of what a value means and
names every problem; this module adds the fast paths a serving hot loop needs
and may only ever agree with it (a property test checks that they do):

* a plain row: every value already has its feature's JSON type (a finite
  number, a boolean, a known category string) — encoded without checks;
* a column at a time, for batches whose every value is plain;
* columns in (``encode_columns``: one list or numpy array per feature, as
  protocol tensors arrive), encoded whole with numpy when plain;
* anything else (a missing or unknown feature, a string for a number, null,
  NaN) goes row by row through the schema, and a bad row becomes that row's
  error while the others are still encoded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from assay.errors import AssayError
from assay.registry.schema import FeatureSchema

# Below this many records the column path's setup costs more than it saves.
COLUMNAR_MIN_ITEMS = 8


@dataclass(frozen=True)
class Encoder:
    """A schema's encoding plan, precomputed once per served version."""

    schema: FeatureSchema
    names: list[str]
    name_set: frozenset[str]
    codes: list[dict[str, int] | None]  # categorical vocabularies by column
    plan: tuple[tuple[str, str, dict[str, int] | None], ...]  # (name, kind, vocabulary) per column

    @classmethod
    def of(cls, schema: FeatureSchema) -> Encoder:
        codes = [
            {c: i for i, c in enumerate(f.categories)} if f.kind == "categorical" else None
            for f in schema.features
        ]
        return cls(
            schema=schema,
            names=schema.names,
            name_set=frozenset(schema.names),
            codes=codes,
            plan=tuple((f.name, f.kind, c) for f, c in zip(schema.features, codes, strict=True)),
        )

    def encode(self, records: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, list[AssayError | None]]:
        """The model matrix of ``records`` and each record's error (its row is then garbage)."""
        if len(records) >= COLUMNAR_MIN_ITEMS:
            X = self.columns(records)
            if X is not None:
                return X, [None] * len(records)
        X = np.empty((len(records), len(self.names)), dtype=np.float64)
        errors: list[AssayError | None] = [None] * len(records)
        for k, record in enumerate(records):
            row = self.plain_row(record)
            if row is not None:
                X[k] = row
                continue
            try:
                X[k] = self.schema.encode_record(record)
            except AssayError as exc:
                errors[k] = exc
        return X, errors

    def plain_row(self, record: Mapping[str, Any]) -> list[float] | None:
        """One row when every value has its feature's plain JSON type, else None (the schema decides)."""
        if len(record) != len(self.plan):
            return None
        row = []
        for name, kind, codes in self.plan:
            value = record.get(name)
            kind_of = type(value)
            if kind == "numeric":
                if (kind_of is not int and kind_of is not float) or not math.isfinite(value):  # type: ignore[arg-type]
                    return None
                row.append(float(value))  # type: ignore[arg-type]
            elif kind == "boolean":
                if kind_of is not bool:
                    return None
                row.append(1.0 if value else 0.0)
            else:
                code = codes.get(value) if kind_of is str and codes is not None else None  # type: ignore[arg-type]
                if code is None:
                    return None
                row.append(float(code))
        return row

    def columns(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray | None:
        """Column-wise encoding, or None when any value needs the row path's checks or messages."""
        d = len(self.names)
        if any(len(r) != d for r in records):
            return None  # a missing or unknown feature somewhere
        X = np.empty((len(records), d), dtype=np.float64)
        try:
            for j, (name, kind, codes) in enumerate(self.plan):
                if not _fill(X[:, j], [r[name] for r in records], kind, codes):
                    return None
        except KeyError:
            return None
        return X

    def encode_columns(
        self, columns: Mapping[str, Sequence[Any] | np.ndarray], rows: int
    ) -> tuple[np.ndarray, list[AssayError | None]]:
        """The model matrix of one column per feature (``rows`` values each) and each row's error.

        Plain columns (numbers as a numeric array or list, booleans, known category
        strings) are encoded whole; when any value is not plain, the rows go through
        ``encode``, so every problem is named exactly as for records. ``columns`` must
        hold every feature of the schema and nothing else (the caller checks names).
        """
        if rows >= COLUMNAR_MIN_ITEMS:
            X = np.empty((rows, len(self.names)), dtype=np.float64)
            if all(
                _fill(X[:, j], columns[name], kind, codes) for j, (name, kind, codes) in enumerate(self.plan)
            ):
                return X, [None] * rows
        lists = [v.tolist() if isinstance(v, np.ndarray) else v for v in (columns[n] for n in self.names)]
        return self.encode([dict(zip(self.names, row, strict=True)) for row in zip(*lists, strict=True)])


def _fill(
    out: np.ndarray, column: Sequence[Any] | np.ndarray, kind: str, codes: dict[str, int] | None
) -> bool:
    """Write a plain column into ``out`` (a column of the matrix); False when some value is not plain.

    Plain means what the schema would encode without a question: finite numbers for numeric
    features, booleans (or integers 0/1 from a typed array) for boolean ones, known category
    strings for categorical ones.
    """
    if isinstance(column, np.ndarray):
        dtype_kind = column.dtype.kind
        if kind == "numeric" and dtype_kind in "iuf":
            out[:] = column
            return dtype_kind != "f" or bool(np.isfinite(out).all())
        if kind == "boolean" and (
            dtype_kind == "b" or (dtype_kind in "iu" and bool(((column == 0) | (column == 1)).all()))
        ):
            out[:] = column
            return True
        if dtype_kind not in "USO" or kind != "categorical":
            return False
        column = column.tolist()
    kinds = set(map(type, column))
    try:
        if kind == "numeric":
            if not kinds <= {int, float}:
                return False
            out[:] = column
            return bool(np.isfinite(out).all())
        if kind == "boolean":
            if not kinds <= {bool}:
                return False
            out[:] = column
            return True
        if not kinds <= {str} or codes is None:
            return False
        out[:] = [codes[v] for v in column]  # an unknown category: the row path names it
    except (KeyError, OverflowError):
        return False
    return True
