"""The prediction log's writes and pruning, against the code before, side by side.

Writing: every chunk the log writes adds one ``prediction_items`` row per distinct item id (the
index labels and forgetting read). ``StoreLog`` sends each chunk's ids once, in a set made in
Python, and has the database insert them in key order; the peer is the same ``StoreLog`` with
the statement before (the chunk's whole list, sorted and its repeats skipped by the database).
Both write 1,000,000 rows (the editquality width: 9 features, 2 probabilities) a round into a
store of their own that keeps growing, in interleaved rounds, for three kinds of ids:

* random: nine-digit ids in no order (what a file of real edits or users looks like);
* sequential: ``"0"`` to ``"999999"`` in scoring order (the serving benchmark's million rows);
* repeated: the same 1,000 ids again and again, 1,000 rows a write (a server answering the
  serving benchmark's 1,000-item requests).

Pruning: a log of 2,000,000 rows cut to 1,000,000 (``prune(max_rows=...)``), with the chunks'
freed pages left as they are (``secure_delete=fast``, assay) and overwritten with zeros (the
peer: what Debian's SQLite does by default, and what pruning did before).

CPU is the process's (all threads), so the machine's other load barely moves it.

    python bench/bench_log_items.py [--rows 1000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from assay.store import db, log_tables
from assay.store.log_tables import StoreLog


@contextmanager
def patched(module: Any, name: str, value: Any) -> Iterator[None]:
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)


def whole_list(ids: list[str | None], listed: str) -> str:
    """The peer's ids for the index: the chunk's whole list (the database sorted it, skipping repeats)."""
    return listed


@contextmanager
def zeroing() -> Iterator[None]:
    """The peer's pruning: what it deletes is overwritten with zeros."""
    original = db.secure_delete

    @contextmanager
    def on(conn: Any, mode: str) -> Iterator[None]:
        with original(conn, "on"):
            yield

    with patched(db, "secure_delete", on):
        yield


def store(folder: Path) -> StoreLog:
    return StoreLog(db.connect(f"sqlite:///{folder / 'assay.db'}"))


def timed(
    log: StoreLog, ids: list[str], X: np.ndarray, proba: np.ndarray, per_write: int
) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    for lo in range(0, len(ids), per_write):
        log.write(
            "m", 1, time.time(), ids[lo : lo + per_write], X[lo : lo + per_write], proba[lo : lo + per_write]
        )
    return time.process_time() - cpu, time.perf_counter() - wall


def ids_of(kind: str, rows: int, shuffle: random.Random) -> list[str]:
    if kind == "random":
        return [str(shuffle.randrange(10**8, 10**9)) for _ in range(rows)]
    if kind == "sequential":
        return [str(i) for i in range(rows)]
    batch = [str(shuffle.randrange(10**8, 10**9)) for _ in range(1000)]
    return batch * (rows // 1000)


def writing(args: argparse.Namespace, X: np.ndarray, proba: np.ndarray) -> None:
    shuffle = random.Random(0)
    print(
        "| ids | round | rows before | distinct ids, sorted by the database (assay) | the whole list (peer) | ratio |"
    )
    print("|---|---|---|---|---|---|")
    for kind in ("random", "sequential", "repeated"):
        # The repeated ids come 1,000 to a write, as a server logs them (the log's writer gathers
        # a chunk's worth before it writes: 65 requests of them a chunk).
        per_write = 65_000 if kind == "repeated" else 131_072
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            mine_log, peer_log = store(Path(a)), store(Path(b))
            for k in range(args.rounds):
                ids = ids_of(kind, args.rows, shuffle)
                mine = timed(mine_log, ids, X, proba, per_write)
                with patched(log_tables, "_distinct", whole_list):
                    theirs = timed(peer_log, ids, X, proba, per_write)
                print(
                    f"| {kind} | {k + 1} | {k * args.rows:,} | {mine[0]:.2f} ({mine[1]:.2f}) | "
                    f"{theirs[0]:.2f} ({theirs[1]:.2f}) | {theirs[0] / mine[0]:.2f}x |"
                )


def pruning(args: argparse.Namespace, X: np.ndarray, proba: np.ndarray) -> None:
    shuffle = random.Random(1)
    print("\n| round | rows pruned | freed pages left (assay) | freed pages zeroed (peer) | ratio |")
    print("|---|---|---|---|---|")
    for k in range(args.rounds):
        times: dict[str, tuple[float, float, int]] = {}
        for name in ("assay", "peer"):
            with tempfile.TemporaryDirectory() as folder:
                log = store(Path(folder))
                for _ in range(2):
                    timed(log, ids_of("random", args.rows, shuffle), X, proba, 131_072)
                cpu, wall = time.process_time(), time.perf_counter()
                if name == "peer":
                    with zeroing():
                        pruned = log.prune(max_rows=args.rows, retention_s=0)
                else:
                    pruned = log.prune(max_rows=args.rows, retention_s=0)
                times[name] = (time.process_time() - cpu, time.perf_counter() - wall, pruned)
        (mc, mw, n), (pc, pw, _) = times["assay"], times["peer"]
        print(f"| {k + 1} | {n:,} | {mc:.2f} ({mw:.2f}) | {pc:.2f} ({pw:.2f}) | {pc / mc:.2f}x |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    X, proba = rng.random((args.rows, 9)), rng.random((args.rows, 2))
    print(f"{args.rows:,} rows a round into stores that keep growing; CPU s (wall s)\n")
    writing(args, X, proba)
    pruning(args, X, proba)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
