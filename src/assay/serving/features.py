"""Where features come from when a client sends only an item id: the ``feature_rows`` table.

A model's feature table is loaded from a CSV/Parquet file (``assay features
load``) or posted rows (``PUT /v1/features/{model}``), checked against the
model's feature schema on the way in, and stored as JSON values of the right
type (numbers, booleans, category strings, null), so a lookup hands the scorer
exactly what a client could have sent itself. Rows are keyed by (model name,
item id) and replaced when loaded again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from assay.errors import DataError, InvalidInput
from assay.registry.schema import FeatureSchema
from assay.store import db, tables

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

# SQLite allows 32,766 bound parameters per statement; stay far below for IN (...) lookups.
_LOOKUP_CHUNK = 900
_WRITE_CHUNK = 2000
MAX_ID_LENGTH = 200  # the width of feature_rows.item_id

# Built once: constructing a select costs more than running it on SQLite.
_ROW = sa.select(tables.feature_rows.c.item_id, tables.feature_rows.c.features).where(
    tables.feature_rows.c.model == sa.bindparam("model")
)
_LOOKUP_ONE = _ROW.where(tables.feature_rows.c.item_id == sa.bindparam("item_id"))
_LOOKUP_MANY = _ROW.where(tables.feature_rows.c.item_id.in_(sa.bindparam("ids", expanding=True)))


class FeatureTable:
    """Feature rows in the store, by (model, item id)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def lookup(self, model: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The stored features of those of ``ids`` that the model's table has."""
        found: dict[str, dict[str, Any]] = {}
        unique = list(dict.fromkeys(ids))
        with self.engine.connect() as conn:
            if len(unique) == 1:  # the id-only request of the hot path: no IN list to expand
                rows = conn.execute(_LOOKUP_ONE, {"model": model, "item_id": unique[0]})
                found.update({row.item_id: row.features for row in rows})
                return found
            for start in range(0, len(unique), _LOOKUP_CHUNK):
                chunk = unique[start : start + _LOOKUP_CHUNK]
                rows = conn.execute(_LOOKUP_MANY, {"model": model, "ids": chunk})
                found.update({row.item_id: row.features for row in rows})
        return found

    def count(self, model: str) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(tables.feature_rows)
                    .where(tables.feature_rows.c.model == model)
                ).scalar_one()
            )

    def load_frame(
        self, model: str, frame: pd.DataFrame, schema: FeatureSchema, *, id_column: str
    ) -> list[str]:
        """Check ``frame`` against ``schema`` and store its rows; returns the ids written.

        Columns the schema does not name (a label, other ids) are left out; a missing
        feature column or a value of the wrong kind is a ``DataError`` naming it.
        """
        source = str(frame.attrs.get("source", "<frame>"))
        if id_column not in frame.columns:
            raise DataError(
                f"{source}: the id column {id_column!r} is missing; "
                f"columns are: {', '.join(map(str, frame.columns))}",
                field="id_column",
            )
        if frame[id_column].isna().any():
            raise DataError(f"{source}: the id column {id_column!r} has empty values", field=id_column)
        ids = frame[id_column].astype(str)
        dupes = ids[ids.duplicated()]
        if not dupes.empty:
            raise DataError(f"{source}: duplicate item ids, e.g. {dupes.iloc[0]!r}", field=id_column)
        long_ids = ids[ids.str.len() > MAX_ID_LENGTH]
        if not long_ids.empty:
            raise DataError(f"{source}: item id longer than {MAX_ID_LENGTH} characters", field=id_column)
        values = _json_columns(frame, schema, source)
        names = schema.names
        id_list = ids.tolist()
        rows = ({n: col[i] for n, col in zip(names, values, strict=True)} for i in range(len(id_list)))
        self._write(model, zip(id_list, rows, strict=True))
        return id_list

    def load_records(
        self, model: str, records: Sequence[Mapping[str, Any]], schema: FeatureSchema
    ) -> list[str]:
        """Store posted rows ``[{"id": ..., "features": {...}}]``; every row is checked first.

        Any bad row refuses the whole load (``InvalidInput`` naming ``rows[i]``), so a
        client never has to work out which half of a load went in.
        """
        checked: list[tuple[str, dict[str, Any]]] = []
        seen: set[str] = set()
        for i, record in enumerate(records):
            where = f"rows[{i}]"
            if not isinstance(record, Mapping):
                raise InvalidInput(f"{where} must be an object with 'id' and 'features'", field=where)
            item_id = item_id_of(record.get("id"), f"{where}.id")
            if item_id in seen:
                raise InvalidInput(f"item id {item_id!r} appears twice", field=f"{where}.id")
            seen.add(item_id)
            features = record.get("features")
            if not isinstance(features, Mapping):
                raise InvalidInput(f"{where}.features must be an object", field=f"{where}.features")
            extra = set(record) - {"id", "features"}
            if extra:
                raise InvalidInput(f"{where} has unknown field {sorted(extra)[0]!r}", field=where)
            try:
                schema.encode_record(features)
            except InvalidInput as exc:
                raise InvalidInput(exc.message, field=f"{where}.{exc.field}", code=exc.code) from None
            checked.append((item_id, {name: features[name] for name in schema.names}))
        self._write(model, checked)
        return [item_id for item_id, _ in checked]

    def delete(self, model: str, ids: Sequence[str]) -> int:
        """Forget rows (a deletion request); returns how many existed."""
        with self.engine.begin() as conn:
            return delete_rows(conn, model, ids)

    def _write(self, model: str, rows: Iterable[tuple[str, dict[str, Any]]]) -> None:
        now = db.now()
        batch: list[dict[str, Any]] = []
        with self.engine.begin() as conn:  # one transaction: a failed load leaves the old table
            for item_id, features in rows:
                batch.append({"model": model, "item_id": item_id, "features": features, "updated_at": now})
                if len(batch) >= _WRITE_CHUNK:
                    _upsert(conn, batch)
                    batch = []
            if batch:
                _upsert(conn, batch)


def delete_rows(conn: Connection, model: str, ids: Sequence[str]) -> int:
    """Delete ``model``'s feature rows of ``ids`` in the caller's transaction; how many existed."""
    table = tables.feature_rows
    deleted = 0
    for start in range(0, len(ids), _LOOKUP_CHUNK):
        chunk = list(ids[start : start + _LOOKUP_CHUNK])
        deleted += (
            conn.execute(sa.delete(table).where(table.c.model == model, table.c.item_id.in_(chunk))).rowcount
            or 0
        )
    return deleted


def item_id_of(value: Any, field: str) -> str:
    """An item id as the store keeps it: a non-empty string (integers are accepted and stringified)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidInput("an item id must be a string or an integer", field=field, code="invalid_id")
    item_id = str(value)
    if not item_id or len(item_id) > MAX_ID_LENGTH:
        raise InvalidInput(f"an item id must be 1-{MAX_ID_LENGTH} characters", field=field, code="invalid_id")
    return item_id


def _upsert(conn: Connection, batch: list[dict[str, Any]]) -> None:
    dialect = conn.engine.dialect.name
    stmt: sqlite.Insert | postgresql.Insert
    if dialect == "sqlite":
        stmt = sqlite.insert(tables.feature_rows)
    elif dialect == "postgresql":
        stmt = postgresql.insert(tables.feature_rows)
    else:  # pragma: no cover - the store is SQLite or PostgreSQL
        raise DataError(f"feature tables need SQLite or PostgreSQL, not {dialect}")
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["model", "item_id"],
            set_={"features": stmt.excluded.features, "updated_at": stmt.excluded.updated_at},
        ),
        batch,
    )


def _json_columns(frame: pd.DataFrame, schema: FeatureSchema, source: str) -> list[list[Any]]:
    """Each schema column as a list of JSON values of the feature's kind (None where missing)."""
    encoded = schema.encode_frame(frame, source=source)  # refuses bad values, naming the column
    columns: list[list[Any]] = []
    for j, feature in enumerate(schema.features):
        missing = np.isnan(encoded[:, j])
        if missing.any() and not feature.nullable:
            # Categorical values unseen in training encode to NaN too, but are not missing.
            raw_missing = frame[feature.name].isna().to_numpy()
            if raw_missing.any():
                row = int(np.argmax(raw_missing))
                raise DataError(
                    f"{source}: column {feature.name!r} is empty in row {row} "
                    "but the model never saw it missing",
                    field=feature.name,
                )
        if feature.kind == "categorical":
            # Categories the model never saw are stored as missing, which is how the model scores
            # them (and how a request asks for them); a request naming one is refused instead.
            unseen = int((missing & frame[feature.name].notna().to_numpy()).sum())
            if unseen:
                log.warning(
                    "%s: %d value(s) of %r are categories the model never saw; stored as missing",
                    source,
                    unseen,
                    feature.name,
                )
            columns.append(
                [
                    None if m else feature.categories[int(v)]
                    for v, m in zip(encoded[:, j].tolist(), missing, strict=True)
                ]
            )
        elif feature.kind == "boolean":
            columns.append(
                [None if m else bool(v) for v, m in zip(encoded[:, j].tolist(), missing, strict=True)]
            )
        else:
            columns.append(
                [None if m else _number(v) for v, m in zip(encoded[:, j].tolist(), missing, strict=True)]
            )
    return columns


def _number(value: float) -> int | float:
    return int(value) if value.is_integer() and abs(value) < 2**53 else value
