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

from assay.monitoring.frames import export_log
from assay.monitoring.log import PredictionLog
from assay.store import db, tables
from assay.store.log_files import ParquetLog
from assay.store.log_store import LogStore
from assay.store.log_tables import StoreLog
from tests.conftest import log_rows


def test_the_sink_writes_in_the_background(log_store: LogStore) -> None:
    sink = PredictionLog(log_store, flush_interval_s=0.05)
    try:
        X, proba = log_rows(10)
        for k in range(10):
            sink.record("m", 1, [f"i{k}"], X[k : k + 1], proba[k : k + 1])
        assert sink.flush()
        assert log_store.versions("m") == {1: 10} and sink.written == 10 and sink.dropped == {}
    finally:
        sink.close()


def test_sampling_keeps_about_the_share_asked_for(store: Engine) -> None:
    sink = PredictionLog(StoreLog(store), sample=0.25, flush_interval_s=0.05)
    try:
        X, proba = log_rows(1)
        for k in range(4000):
            sink.record("m", 1, [str(k)], X, proba)
        sink.flush()
        assert 800 < StoreLog(store).versions("m")[1] < 1200
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
        StoreLog(engine), queue_rows=50, flush_interval_s=0.01, on_drop=lambda r, n: drops.append((r, n))
    )
    engine.begin = stuck_begin  # type: ignore[method-assign]
    try:
        X, proba = log_rows(10)
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
    sink = PredictionLog(StoreLog(engine), flush_interval_s=0.01)
    try:
        X, proba = log_rows(5)
        sink.record("m", 1, None, X, proba)  # returns; the failure happens on the writer
        assert sink.flush()
        assert sink.dropped == {"store_error": 5} and sink.written == 0
    finally:
        sink.close()
        engine.dispose()


def test_files_that_cannot_be_written_drop_rows_the_same_way(tmp_path: Path) -> None:
    (tmp_path / "log").write_text("a file where the log's folder should be")
    sink = PredictionLog(ParquetLog(tmp_path / "log"), flush_interval_s=0.01)
    try:
        X, proba = log_rows(5)
        sink.record("m", 1, None, X, proba)
        assert sink.flush()
        assert sink.dropped == {"store_error": 5} and sink.written == 0
    finally:
        sink.close()


def test_a_chunk_worth_of_rows_is_written_before_the_interval(tmp_path: Path) -> None:
    files = ParquetLog(tmp_path / "log")
    sink = PredictionLog(files, queue_rows=200_000)  # the files' interval: 30 s
    try:
        X, proba = log_rows(70_000)
        sink.record("m", 1, None, X, proba)
        deadline = time.monotonic() + 20
        while files.versions("m") != {1: 70_000} and time.monotonic() < deadline:
            time.sleep(0.05)
        assert files.versions("m") == {1: 70_000}
    finally:
        sink.close()


def test_the_items_of_pruned_chunks_go_with_them(store: Engine) -> None:
    store_log = StoreLog(store)
    X, proba = log_rows(300)
    for lo in range(0, 300, 10):
        store_log.write("m", 1, np.arange(lo, lo + 10, dtype=float), [f"i{k}" for k in range(lo, lo + 10)],
                     X[lo : lo + 10], proba[lo : lo + 10])  # fmt: skip
    assert store_log.prune(max_rows=20, retention_s=0, now=350.0) == 280
    with store.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tables.prediction_items)).scalar() == 20


def test_pruning_a_model_purges_its_items_and_no_other_models(store: Engine) -> None:
    store_log = StoreLog(store)
    X, proba = log_rows(60)
    for model, at in (("old", 10.0), ("kept", 300.0), ("capped", 300.0)):
        for lo in range(0, 60, 20):
            store_log.write(model, 1, at + lo, [f"{model}{k}" for k in range(lo, lo + 20)], X[lo : lo + 20],
                            proba[lo : lo + 20])  # fmt: skip
    # Every chunk of "old" is past the retention; the others are within it and the cap.
    assert store_log.prune(max_rows=60, retention_s=100.0, now=350.0) == 60
    with store.connect() as conn:
        left = conn.execute(sa.select(tables.prediction_items.c.model).distinct()).scalars().all()
    assert sorted(left) == ["capped", "kept"]
    # A cap of 20 rows cuts both of the others to their newest chunk.
    assert store_log.prune(max_rows=20, retention_s=0, now=350.0) == 80
    with store.connect() as conn:
        rows = conn.execute(
            sa.select(tables.prediction_items.c.model, tables.prediction_items.c.item_id)
        ).all()
    assert sorted(rows) == [(m, f"{m}{k}") for m in ("capped", "kept") for k in range(40, 60)]


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
