"""The prediction log: rows round-trip, sampling, bounded queue and storage, and faults that drop
rows (counted) instead of failing or slowing the caller."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from assay.monitoring.frames import export_log, read_log
from assay.monitoring.log import PredictionLog, logged_versions, prune, write_rows
from assay.store import db, tables


def _rows(n: int, d: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    X = g.normal(size=(n, d))
    X[0, 1] = np.nan  # a missing value survives the trip
    p = g.random(n)
    return X, np.column_stack([1 - p, p])


def test_rows_round_trip_in_time_order(store: Engine) -> None:
    X, proba = _rows(500)
    at = 1000.0 + np.arange(500)[::-1]  # written newest first
    ids = [f"i{k}" for k in range(500)]
    assert write_rows(store, "m", 1, at, ids, X, proba) == 500
    write_rows(store, "m", 2, 5.0, None, X[:7], proba[:7])
    frame = read_log(store, "m", 1, width=(3, 2), with_ids=True)
    assert np.array_equal(frame.at, np.sort(at))
    order = np.argsort(at)
    assert np.array_equal(frame.X, X[order], equal_nan=True) and np.array_equal(frame.proba, proba[order])
    assert frame.ids == [ids[k] for k in order]
    assert len(read_log(store, "m", 1, width=(3, 2), since=1100, until=1200)) == 100
    # Positions follow the writes (here newest first), whatever the rows' times.
    assert len(read_log(store, "m", 1, width=(3, 2), after=int(frame.positions.max()))) == 0
    assert len(read_log(store, "m", 1, width=(3, 2), after=int(frame.positions.min()))) == 499
    assert logged_versions(store, "m") == {1: 500, 2: 7}
    assert read_log(store, "m", 2, width=(3, 2), with_ids=True).ids == [None] * 7


def test_the_sink_writes_in_the_background(store: Engine) -> None:
    sink = PredictionLog(store, flush_interval_s=0.05)
    try:
        X, proba = _rows(10)
        for k in range(10):
            sink.record("m", 1, [f"i{k}"], X[k : k + 1], proba[k : k + 1])
        assert sink.flush()
        assert logged_versions(store, "m") == {1: 10} and sink.written == 10 and sink.dropped == {}
    finally:
        sink.close()


def test_sampling_keeps_about_the_share_asked_for(store: Engine) -> None:
    sink = PredictionLog(store, sample=0.25, flush_interval_s=0.05)
    try:
        X, proba = _rows(1)
        for k in range(4000):
            sink.record("m", 1, [str(k)], X, proba)
        sink.flush()
        assert 800 < logged_versions(store, "m")[1] < 1200
    finally:
        sink.close()


def test_a_full_queue_drops_and_counts_without_waiting(tmp_path: Path) -> None:
    engine = db.connect(f"sqlite:///{tmp_path / 'a.db'}")
    drops: list[tuple[str, int]] = []
    gate = threading.Event()
    real_begin = engine.begin

    def stuck_begin():  # type: ignore[no-untyped-def]
        gate.wait(10)  # the writer is stuck on a store that does not answer
        return real_begin()

    sink = PredictionLog(
        engine, queue_rows=50, flush_interval_s=0.01, on_drop=lambda r, n: drops.append((r, n))
    )
    engine.begin = stuck_begin  # type: ignore[method-assign]
    try:
        X, proba = _rows(10)
        started = time.perf_counter()
        for _ in range(100):
            sink.record("m", 1, None, X, proba)
        assert time.perf_counter() - started < 0.5  # a thousand rows queued or dropped, never waited on
        assert sink.dropped["queue_full"] >= 900 and sum(n for _, n in drops) == sink.dropped["queue_full"]
    finally:
        gate.set()
        engine.begin = real_begin  # type: ignore[method-assign]
        sink.close()
        engine.dispose()


def test_a_store_that_refuses_writes_drops_rows_and_the_caller_never_sees_it(tmp_path: Path) -> None:
    engine = db.connect(f"sqlite:///{tmp_path / 'b.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE prediction_log"))  # every insert now fails
    sink = PredictionLog(engine, flush_interval_s=0.01)
    try:
        X, proba = _rows(5)
        sink.record("m", 1, None, X, proba)  # returns; the failure happens on the writer
        assert sink.flush()
        assert sink.dropped == {"store_error": 5} and sink.written == 0
    finally:
        sink.close()
        engine.dispose()


def test_storage_is_bounded_by_age_and_count(store: Engine) -> None:
    X, proba = _rows(300)
    for lo in range(0, 300, 10):  # as the writer writes: a chunk at a time
        at = np.arange(lo, lo + 10, dtype=float)
        ids = [f"i{k}" for k in range(lo, lo + 10)]
        write_rows(store, "m", 1, at, ids, X[lo : lo + 10], proba[lo : lo + 10])
        write_rows(store, "other", 1, at, None, X[lo : lo + 10], proba[lo : lo + 10])
    # Retention: chunks whose rows are all older than 100 s before "now" (= 350) go.
    assert prune(store, max_rows=0, retention_s=100.0, now=350.0) == 2 * 250
    assert logged_versions(store, "m") == {1: 50}
    prune(store, max_rows=20, retention_s=0, now=350.0)
    kept = read_log(store, "m", 1, width=(3, 2), with_ids=True)
    assert len(kept) == 20 and kept.at.min() == 280.0 and kept.ids == [f"i{k}" for k in range(280, 300)]
    assert logged_versions(store, "other") == {1: 20}
    with store.connect() as conn:  # the items of deleted chunks went with them
        assert conn.execute(sa.select(sa.func.count()).select_from(tables.prediction_items)).scalar() == 20


def test_export_writes_every_format(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"at": pd.to_datetime([0, 1], unit="s", utc=True), "id": ["a", None], "x": [1.5, np.nan]}
    )
    for suffix in (".csv", ".parquet", ".jsonl"):
        assert export_log([frame], tmp_path / f"out{suffix}") == 2
    back = pd.read_parquet(tmp_path / "out.parquet")
    assert back["id"].iloc[0] == "a" and pd.isna(back["id"].iloc[1]) and len(back) == 2
    with pytest.raises(Exception, match="write"):
        export_log([frame], tmp_path / "out.xlsx")
