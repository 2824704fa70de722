"""The prediction log's item index: ids inserted in key order vs as they come, side by side.

Every chunk the log writes adds one ``prediction_items`` row per distinct item id (the index
labels and forgetting read). ``StoreLog`` has the database insert a chunk's ids in key order;
the peer is the same ``StoreLog`` with the statement it used before (ids inserted in the order
they were scored). Both write 1,000,000 rows (the editquality width: 9 features, 2
probabilities) a round into a store of their own that keeps growing, in interleaved rounds,
for two kinds of ids:

* random: nine-digit ids in no order (what a file of real edits or users looks like);
* sequential: ``"0"`` to ``"999999"`` in scoring order (the serving benchmark's million rows).

CPU is the process's (all threads), so the machine's other load barely moves it.

    python bench/bench_log_items.py [--rows 1000000] [--rounds 4]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from assay.store import db
from assay.store.log_tables import StoreLog


class AsTheyCome(StoreLog):
    """The peer: the item rows inserted in the order the ids were scored (the statement before)."""

    def _add_items(self, conn: Any, model: str, version: int, chunk: int, listed: str) -> None:
        conn.exec_driver_sql(
            "INSERT OR IGNORE INTO prediction_items (model, item_id, chunk_id, version) "
            "SELECT ?, value, ?, ? FROM json_each(?) WHERE value IS NOT NULL",
            (model, chunk, version, listed),
        )


def store(kind: type[StoreLog], folder: Path) -> StoreLog:
    return kind(db.connect(f"sqlite:///{folder / 'assay.db'}"))


def timed(log: StoreLog, ids: list[str], X: np.ndarray, proba: np.ndarray) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    log.write("m", 1, time.time(), ids, X, proba)
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    X, proba = rng.random((args.rows, 9)), rng.random((args.rows, 2))
    shuffle = random.Random(0)
    print(f"{args.rows:,} rows a round into stores that keep growing; CPU s (wall s)\n")
    print("| ids | round | item rows before | in key order (assay) | as they come (peer) | ratio |")
    print("|---|---|---|---|---|---|")
    for name in ("random", "sequential"):
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            ordered, peer = store(StoreLog, Path(a)), store(AsTheyCome, Path(b))
            for k in range(args.rounds):
                if name == "random":
                    ids = [str(shuffle.randrange(10**8, 10**9)) for _ in range(args.rows)]
                else:
                    ids = [str(i) for i in range(args.rows)]
                mine = timed(ordered, ids, X, proba)
                theirs = timed(peer, ids, X, proba)
                print(
                    f"| {name} | {k + 1} | {k * args.rows:,} | {mine[0]:.2f} ({mine[1]:.2f}) | "
                    f"{theirs[0]:.2f} ({theirs[1]:.2f}) | {theirs[0] / mine[0]:.2f}x |"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
