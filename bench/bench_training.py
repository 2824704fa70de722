"""Training quality and time on ORES's editquality data: assay's default candidates vs ORES's recipe.

Both are trained in the same run on the same training file and scored on the
same testing file. The ORES recipe is the one editquality used for its
"reverted" model: scikit-learn GradientBoostingClassifier, 700 trees, depth 5,
learning rate 0.01, max_features log2. The held-out table's fit times are like
for like: each model's one fit on the whole training file (for assay, the
chosen candidate's refit, which training records as ``refit_s``); the
cross-validation table's are per fold, on four fifths of it.

    python bench/bench_training.py [--data ../shared/data/editquality]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import average_precision_score, roc_auc_score

from assay.modelling.spec_file import load_spec
from assay.modelling.training import train
from assay.settings import Settings
from assay.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "editquality.toml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "editquality")
    args = parser.parse_args()
    train_file = args.data / "enwiki.features_reverted.training.20k_2015.tsv.bz2"
    test_file = args.data / "enwiki.features_reverted.testing.20k_2015.tsv.bz2"
    if not train_file.is_file():
        print(f"skipped: {train_file} is not present")
        return 0

    spec = load_spec(SPEC)
    spec.data.train, spec.data.test = [str(train_file)], [str(test_file)]
    print(f"machine: {os.cpu_count()} cores; data: {args.data}")

    with tempfile.TemporaryDirectory() as home:
        ws = Workspace.open(Settings.load(home=home, environ={}))
        started = time.perf_counter()
        result = train(spec, ws.registry)
        assay_seconds = time.perf_counter() - started
        ws.close()

    columns = spec.data.columns
    features = spec.features.include
    tr = pd.read_csv(train_file, sep="\t", header=None, names=columns)
    te = pd.read_csv(test_file, sep="\t", header=None, names=columns)
    X, y = tr[features].astype(float).to_numpy(), tr["reverted"].astype(bool).to_numpy()
    Xt, yt = te[features].astype(float).to_numpy(), te["reverted"].astype(bool).to_numpy()
    ores = GradientBoostingClassifier(
        n_estimators=700, max_depth=5, learning_rate=0.01, max_features="log2", random_state=0
    )
    started = time.perf_counter()
    ores.fit(X, y)
    ores_fit = time.perf_counter() - started
    p = ores.predict_proba(Xt)[:, 1]
    ores_roc, ores_pr = roc_auc_score(yt, p), average_precision_score(yt, p)

    print("\ncandidates, 5-fold cross-validation on the training file (average precision):")
    print(f"{'candidate':<24}{'mean AP':>9}{'min':>8}{'max':>8}{'fold fit s (mean)':>19}")
    for c in sorted(result.comparison, key=lambda c: -c.mean_score):
        print(
            f"{c.candidate:<24}{c.mean_score:>9.4f}{min(c.fold_scores):>8.4f}{max(c.fold_scores):>8.4f}"
            f"{c.mean_fit_time:>19.2f}"
        )

    s = result.record.summary
    winner_fit = result.record.lineage["refit_s"]
    print("\nheld-out testing file (4,862 edits); fit s: one fit on the whole training file:")
    print(f"{'model':<44}{'ROC-AUC':>9}{'PR-AUC':>9}{'fit s':>9}")
    print(
        f"{'assay (' + result.winner.candidate + ', chosen by CV)':<44}{s['roc_auc']:>9.4f}{s['pr_auc']:>9.4f}{winner_fit:>9.2f}"
    )
    print(
        f"{'ORES recipe (GradientBoosting 700x5, lr 0.01)':<44}{ores_roc:>9.4f}{ores_pr:>9.4f}{ores_fit:>9.2f}"
    )
    print(
        f"\nratios assay/ORES: ROC-AUC {s['roc_auc'] / ores_roc:.4f}  PR-AUC {s['pr_auc'] / ores_pr:.4f}  "
        f"fit time {winner_fit / ores_fit:.3f}"
    )
    print(f"assay train end to end (4 candidates x 5 folds, refit, evaluation, card): {assay_seconds:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
