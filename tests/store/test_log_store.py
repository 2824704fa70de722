"""Both log stores (the store's tables and Parquet files) keep the same rows the same way: the
round trip, windows by time and position, spans, pruning, labels' lookups and forgetting."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy.engine import Engine

from assay.errors import InvalidInput
from assay.store.log_store import LogStore
from tests.conftest import log_rows


def test_rows_round_trip_in_time_order(log_store: LogStore) -> None:
    X, proba = log_rows(500)
    at = 1000.0 + np.arange(500)[::-1]  # written newest first
    ids = [f"i{k}" for k in range(500)]
    assert log_store.write("m", 1, at, ids, X, proba) == 500
    log_store.write("m", 2, 5.0, None, X[:7], proba[:7])
    frame = log_store.read("m", 1, width=(3, 2), with_ids=True)
    assert np.array_equal(frame.at, np.sort(at))
    order = np.argsort(at)
    assert np.array_equal(frame.X, X[order], equal_nan=True) and np.array_equal(frame.proba, proba[order])
    assert frame.ids == [ids[k] for k in order]
    assert len(log_store.read("m", 1, width=(3, 2), since=1100, until=1200)) == 100
    # Positions follow the writes (here newest first), whatever the rows' times.
    assert len(log_store.read("m", 1, width=(3, 2), after=int(frame.positions.max()))) == 0
    assert len(log_store.read("m", 1, width=(3, 2), after=int(frame.positions.min()))) == 499
    assert log_store.versions("m") == {1: 500, 2: 7}
    assert log_store.read("m", 2, width=(3, 2), with_ids=True).ids == [None] * 7
    assert log_store.span("m", 1) == (1000.0, 1499.0, 500)
    assert log_store.span("m", 3) is None and len(log_store.read("nobody", 1, width=(3, 2))) == 0
    with pytest.raises(InvalidInput, match="do not have 4 features"):
        log_store.read("m", 1, width=(4, 2))


def test_positions_grow_with_every_write_and_count_windows_read_on(log_store: LogStore) -> None:
    X, proba = log_rows(30)
    for lo in range(0, 30, 10):
        log_store.write("m", 1, 100.0 - lo, None, X[lo : lo + 10], proba[lo : lo + 10])
    every = log_store.read("m", 1, width=(3, 2))
    cursor = int(np.sort(every.positions)[9])  # the first write judged
    later = log_store.read("m", 1, width=(3, 2), after=cursor)
    assert len(later) == 20 and set(later.at) == {90.0, 80.0}
    span = log_store.span("m", 1, after=cursor)
    assert span is not None and span[2] >= 20


def test_rows_over_days_and_chunks_stay_one_log(log_store: LogStore) -> None:
    n = 70_000  # more than a chunk, over three UTC days
    X, proba = log_rows(n, d=2)
    at = 86_400.0 * 5 + np.linspace(0, 3 * 86_400.0 - 1, n)
    log_store.write("m", 1, at, [str(k) for k in range(n)], X, proba)
    frame = log_store.read("m", 1, width=(2, 2), since=86_400.0 * 6, until=86_400.0 * 7, with_ids=True)
    day = (at >= 86_400.0 * 6) & (at < 86_400.0 * 7)
    assert len(frame) == day.sum() and frame.ids == [str(k) for k in np.flatnonzero(day)]
    assert len(np.unique(log_store.read("m", 1, width=(2, 2)).positions)) == n


def test_labels_find_the_version_that_scored_an_item_last(log_store: LogStore) -> None:
    X, proba = log_rows(3)
    log_store.write("m", 1, 10.0, ["a", "b", None], X, proba)
    log_store.write("m", 2, 20.0, ["b", "c", "c"], X, proba)
    log_store.write("other", 5, 20.0, ["d", "a", "e"], X, proba)
    assert log_store.last_versions("m", ["a", "b", "c", "d", "zz"]) == {"a": 1, "b": 2, "c": 2}
    assert log_store.holding(["m"], ["a", "d", "zz"]) == {"a"}
    assert log_store.holding(["m", "other"], ["a", "d", "zz"]) == {"a", "d"}


def test_forgetting_removes_every_row_of_the_ids_and_only_theirs(log_store: LogStore, store: Engine) -> None:
    X, proba = log_rows(4)
    log_store.write("m", 1, 10.0, ["keep", "gone", "keep2", "gone"], X, proba)
    log_store.write("m", 1, 20.0, ["gone", "gone", "gone", "gone"], X, proba)  # a part with nothing left
    log_store.write("other", 1, 10.0, ["gone", "x", "y", "z"], X, proba)
    with store.begin() as conn:
        assert log_store.forget(conn, "m", ["gone", "never"]) == 6
    frame = log_store.read("m", 1, width=(3, 2), with_ids=True)
    assert frame.ids == ["keep", "keep2"] and np.array_equal(frame.X, X[[0, 2]], equal_nan=True)
    assert log_store.versions("m") == {1: 2} and log_store.last_versions("m", ["gone"]) == {}
    assert log_store.holding(["other"], ["gone"]) == {"gone"}  # another model's log is its own


def test_storage_is_bounded_by_age_and_count(log_store: LogStore) -> None:
    X, proba = log_rows(300)
    for lo in range(0, 300, 10):  # as the writer writes: a chunk at a time
        at = np.arange(lo, lo + 10, dtype=float)
        ids = [f"i{k}" for k in range(lo, lo + 10)]
        log_store.write("m", 1, at, ids, X[lo : lo + 10], proba[lo : lo + 10])
        log_store.write("other", 1, at, None, X[lo : lo + 10], proba[lo : lo + 10])
    # Retention: chunks whose rows are all older than 100 s before "now" (= 350) go.
    assert log_store.prune(max_rows=0, retention_s=100.0, now=350.0) == 2 * 250
    assert log_store.versions("m") == {1: 50}
    log_store.prune(max_rows=20, retention_s=0, now=350.0)
    kept = log_store.read("m", 1, width=(3, 2), with_ids=True)
    assert len(kept) == 20 and kept.at.min() == 280.0 and kept.ids == [f"i{k}" for k in range(280, 300)]
    assert log_store.versions("other") == {1: 20}
    assert log_store.last_versions("m", ["i0", "i285"]) == {"i285": 1}  # pruned items are unknown
