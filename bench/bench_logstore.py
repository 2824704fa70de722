"""The prediction log's two backends side by side: the store's tables (SQLite) and Parquet files.

For each, in interleaved rounds (the machine is shared; a ratio is taken within a round):

* the serving path: CPU per scored row of ``PredictionLog.record`` (what a request pays), and
  CPU per row of the whole log, the background writer's included (single-row batches recorded as
  a server records them, then flushed; process CPU time, all threads);
* the drift check's read: a 1,000,000-row window over 30 days (``read`` with since/until), and one
  day of it (~33,000 rows), in wall time and in CPU time (all threads; on a shared machine the
  wall time follows the other load, the CPU time much less);
* labels and deletions: which version scored 1,000 ids (``last_versions``, what each label batch
  asks) and forgetting one id (``forget``, what a deletion request does).

Rows have the editquality schema's width (9 encoded features, 2 probabilities) and an id each.

    python bench/bench_logstore.py [--rows 1000000] [--rounds 3] [--records 200000]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from assay.monitoring.log import PredictionLog
from assay.store import db
from assay.store.log_files import ParquetLog
from assay.store.log_store import CHUNK_ROWS, LogStore
from assay.store.log_tables import StoreLog

D, K = 9, 2
DAYS = 30
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def stores(root: Path) -> dict[str, Callable[[], LogStore]]:
    """A fresh, empty log of each backend, in its own folder under ``root``."""

    def store() -> LogStore:
        folder = Path(tempfile.mkdtemp(dir=root))
        return StoreLog(db.connect(f"sqlite:///{folder / 'assay.db'}"))

    def parquet() -> LogStore:
        return ParquetLog(Path(tempfile.mkdtemp(dir=root)) / "log")

    return {"store": store, "parquet": parquet}


def fill(log: LogStore, rows: int) -> None:
    """``rows`` rows over 30 days, written a chunk at a time as the writer writes them."""
    g = np.random.default_rng(0)
    at = T0 + np.sort(g.random(rows)) * DAYS * 86400.0
    X = g.normal(size=(rows, D))
    p = g.random(rows)
    proba = np.column_stack([1 - p, p])
    ids = [str(i) for i in range(rows)]
    for lo in range(0, rows, CHUNK_ROWS):
        hi = min(lo + CHUNK_ROWS, rows)
        log.write("m", 1, at[lo:hi], ids[lo:hi], X[lo:hi], proba[lo:hi])


def serving_path(log: LogStore, records: int) -> dict[str, float]:
    """CPU per row of ``record`` alone, and of record + the writer (flushed), single-row batches."""
    X = np.random.default_rng(1).normal(size=(1, D))
    proba = np.array([[0.4, 0.6]])
    sink = PredictionLog(log, queue_rows=10 * records)
    try:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for i in range(records):
            sink.record("m", 1, [str(i)], X, proba)
        record_cpu = time.process_time() - cpu0
        assert sink.flush(600)
        total_cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        sink.close()
    assert sink.written == records and not sink.dropped
    return {"record_us": record_cpu / records * 1e6, "total_us": total_cpu / records * 1e6, "wall_s": wall}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def cpu_timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds of the process, all threads, result)."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def reads(log: LogStore, rows: int) -> dict[str, float]:
    end = T0 + DAYS * 86400.0
    whole_s, whole_cpu, frame = cpu_timed(lambda: log.read("m", 1, width=(D, K), since=T0, until=end))
    assert len(frame) == rows
    day_s, day_cpu, _ = cpu_timed(
        lambda: log.read("m", 1, width=(D, K), since=T0 + 86400.0 * 10, until=T0 + 86400.0 * 11)
    )
    wanted = [str(i) for i in range(0, rows, rows // 1000)][:1000]
    labels_s, found = timed(lambda: log.last_versions("m", wanted))
    assert len(found) == len(wanted)
    return {
        "window_1m_s": whole_s,
        "window_1m_cpu_s": whole_cpu,
        "window_day_s": day_s,
        "window_day_cpu_s": day_cpu,
        "labels_1000_s": labels_s,
    }


def forget_one(log: LogStore, engine_of: Callable[[], Any], rows: int) -> float:
    engine = engine_of()
    with engine.begin() as conn:
        seconds, removed = timed(lambda: log.forget(conn, "m", [str(rows // 2)]))
    assert removed == 1
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--records", type=int, default=200_000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="assay-logstore-"))
    results: dict[str, list[dict[str, float]]] = {"store": [], "parquet": []}
    try:
        makers = stores(root)
        filled: dict[str, LogStore] = {}
        for name, make in makers.items():
            say(f"{name}: writing {args.rows:,} rows")
            log = make()
            seconds, _ = timed(lambda log=log: fill(log, args.rows))  # type: ignore[misc]
            filled[name] = log
            results[name].append({"fill_s": seconds})
        spare = db.connect(f"sqlite:///{root / 'spare.db'}")
        for k in range(args.rounds):
            order = list(makers) if k % 2 == 0 else list(reversed(makers))
            for name in order:
                say(f"round {k + 1} of {args.rounds}: {name}")
                log = filled[name]
                row = {**serving_path(makers[name](), args.records), **reads(log, args.rows)}
                results[name].append(row)
            print_round(k, results)
        for name, log in filled.items():
            engine = log.engine if isinstance(log, StoreLog) else spare
            results[name][0]["forget_1_s"] = forget_one(log, lambda engine=engine: engine, args.rows)
        report(results, args)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def print_round(k: int, results: dict[str, list[dict[str, float]]]) -> None:
    s, p = results["store"][-1], results["parquet"][-1]
    say(
        f"  round {k + 1}: record {s['record_us']:.2f}/{p['record_us']:.2f} us, with writer "
        f"{s['total_us']:.2f}/{p['total_us']:.2f} us, 1M window {s['window_1m_s']:.2f}/{p['window_1m_s']:.2f} s"
    )


def report(results: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name][1:])

    print(f"rows: {args.rows:,} over {DAYS} days ({D} features, {K} probabilities, an id each); SQLite store")
    for name in ("store", "parquet"):
        print(f"  {name:<8} written in {results[name][0]['fill_s']:.1f} s (chunks of {CHUNK_ROWS:,})")
    print(f"\nmedians of {args.rounds} interleaved rounds (store | parquet | parquet/store):")
    keys = [
        ("record_us", "serving path: record() CPU per row, us"),
        ("total_us", f"record + writer CPU per row ({args.records:,} single rows, flushed), us"),
        ("window_1m_s", "drift window of 1,000,000 rows: read, wall s"),
        ("window_1m_cpu_s", "drift window of 1,000,000 rows: read, CPU s (all threads)"),
        ("window_day_s", "one day's window (~33,000 rows): read, wall s"),
        ("window_day_cpu_s", "one day's window (~33,000 rows): read, CPU s"),
        ("labels_1000_s", "which version scored 1,000 ids (a label batch), s"),
    ]
    for key, label in keys:
        s, p = med("store", key), med("parquet", key)
        print(f"  {label:<72} {s:>9.3f} | {p:>9.3f} | {p / s:>6.2f}x")
        for name in ("store", "parquet"):
            print(f"    {name} rounds: {', '.join(f'{r[key]:.3f}' for r in results[name][1:])}")
    s, p = results["store"][0]["forget_1_s"], results["parquet"][0]["forget_1_s"]
    print(f"  {'forget one id (a deletion request), s':<72} {s:>9.3f} | {p:>9.3f} | {p / s:>6.2f}x")


if __name__ == "__main__":
    raise SystemExit(main())
