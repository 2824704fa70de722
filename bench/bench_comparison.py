"""The paired bootstrap of `assay compare` against resampling rows and calling scikit-learn.

Both compute the same 95% intervals of the difference in ROC-AUC and PR-AUC between two score
vectors on the same rows (editquality-sized: 4,862 held-out rows by default), from the same
resamples; the peer draws each resample's rows and calls ``roc_auc_score`` and
``average_precision_score`` on them, as a hand-written bootstrap does. Prints both times, the
ratio, and the largest difference between their interval ends (0 up to rounding).

    python bench/bench_comparison.py [--rows 4862] [--resamples 2000]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from assay.modelling.significance import (
    bootstrap_difference,
    resample_weights,
    weighted_average_precision,
    weighted_roc_auc,
)


def peer(y: np.ndarray, a: np.ndarray, b: np.ndarray, resamples: int, seed: int) -> dict[str, list[float]]:
    weights = resample_weights(len(y), resamples, np.random.default_rng(seed))
    out = {}
    for name, fn in (("roc_auc", roc_auc_score), ("pr_auc", average_precision_score)):
        diffs = []
        for row in weights:
            rows = np.repeat(np.arange(len(y)), row.astype(int))
            diffs.append(fn(y[rows], b[rows]) - fn(y[rows], a[rows]))
        out[name] = list(np.quantile(diffs, [0.025, 0.975]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=4862)
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    y = rng.random(args.rows) < 0.05
    a = np.round(y * 1.0 + rng.normal(0, 1, args.rows), 3)
    b = np.round(y * 1.2 + rng.normal(0, 1, args.rows), 3)
    print(
        f"machine: {os.cpu_count()} cores (shared with other work); {args.rows} rows, {args.resamples} resamples"
    )
    started = time.perf_counter()
    ours = {
        "roc_auc": bootstrap_difference(weighted_roc_auc, y, a, b, resamples=args.resamples, seed=0),
        "pr_auc": bootstrap_difference(weighted_average_precision, y, a, b, resamples=args.resamples, seed=0),
    }
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    theirs = peer(y, a, b, args.resamples, 0)
    peer_s = time.perf_counter() - started
    gap = max(abs(ours[k].low - theirs[k][0]) + abs(ours[k].high - theirs[k][1]) for k in ours)
    for k in ours:
        print(
            f"{k}: assay [{ours[k].low:+.5f}, {ours[k].high:+.5f}]  peer [{theirs[k][0]:+.5f}, {theirs[k][1]:+.5f}]"
        )
    print(f"assay {ours_s:.2f}s  resampling + scikit-learn {peer_s:.2f}s  ratio {peer_s / ours_s:.1f}x  "
          f"largest interval difference {gap:.2e}")  # fmt: skip


if __name__ == "__main__":
    main()
