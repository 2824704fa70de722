"""The store's log tables: every logged item gets one ``prediction_items`` row per chunk, whatever
its id holds (the database expands the chunk's JSON list of ids itself)."""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from assay.store import tables
from assay.store.log_store import CHUNK_ROWS
from assay.store.log_tables import StoreLog
from tests.conftest import log_rows

AWKWARD_IDS = ['quote"d', "back\\slash", "é ☃ 𝄞", "", "null", "[1, 2]", "tab\there", "a'b"]


def _items(store: Engine) -> list[tuple[str, int, int]]:
    items = tables.prediction_items
    with store.connect() as conn:
        rows = conn.execute(sa.select(items.c.item_id, items.c.chunk_id, items.c.version)).all()
    return sorted((str(i), int(c), int(v)) for i, c, v in rows)


def test_every_id_gets_one_item_row_per_chunk_exactly_as_written(store: Engine) -> None:
    log = StoreLog(store)
    ids: list[str | None] = [*AWKWARD_IDS, "twice", None, "twice", None]
    X, proba = log_rows(len(ids))
    log.write("m", 3, 10.0, ids, X, proba)
    with store.connect() as conn:
        (chunk,) = conn.execute(sa.select(tables.prediction_log.c.id)).scalars()
    assert _items(store) == sorted((i, chunk, 3) for i in [*AWKWARD_IDS, "twice"])
    assert log.holding(["m"], AWKWARD_IDS) == set(AWKWARD_IDS)
    assert log.read("m", 3, width=(3, 2), with_ids=True).ids == ids


def test_a_write_over_several_chunks_lists_each_item_under_its_chunk(store: Engine) -> None:
    log = StoreLog(store)
    n = CHUNK_ROWS + 10
    X, proba = log_rows(n, d=2)
    ids: list[str | None] = [f"i{k}" for k in range(n)]
    ids[CHUNK_ROWS + 1] = None
    log.write("m", 1, np.arange(n, dtype=float), ids, X, proba)
    items = _items(store)
    assert len(items) == n - 1
    chunks = sorted({c for _, c, _ in items})
    assert len(chunks) == 2
    by_id = {i: c for i, c, _ in items}
    assert by_id["i0"] == chunks[0] and by_id[f"i{CHUNK_ROWS}"] == chunks[1]
    frame = log.read("m", 1, width=(2, 2))
    assert np.array_equal(frame.X, X, equal_nan=True) and np.array_equal(frame.proba, proba)
