"""The quickstart example: a real data set that scikit-learn ships, written out with a spec.

scikit-learn bundles the Wisconsin breast cancer data (569 real biopsies,
labelled malignant or benign): a judgement specialists make today, so a fair
stand-in for "is this edit damaging?" that needs no download.
"""

from __future__ import annotations

from pathlib import Path

from sklearn.datasets import load_breast_cancer

SPEC = """\
# A model that flags biopsies a specialist should look at first.
name = "malignant"
description = "Flags malignant breast-mass biopsies (Wisconsin diagnostic data, shipped with scikit-learn)."
seed = 0

[data]
train = "biopsies.csv"
id = "sample_id"
label = "diagnosis"
positive = "malignant"
test_size = 0.3

[features]
# every column except the id and the label is a numeric feature

[training]
candidates = ["logistic_regression", "lightgbm", "hist_gradient_boosting", "random_forest"]
metric = "average_precision"
folds = 5

[gates]
minimum = { roc_auc = 0.95 }
max_regression = { pr_auc = 0.02 }

[operating_points]
needs_specialist = "maximum recall @ precision >= 0.95"
clearly_benign = "minimum fpr @ recall >= 0.99"
"""


def write_example(folder: Path) -> Path:
    """Write ``biopsies.csv`` and ``spec.toml`` into ``folder``; return the spec's path."""
    folder.mkdir(parents=True, exist_ok=True)
    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame.rename(columns=lambda c: c.replace(" ", "_"))
    frame.insert(0, "sample_id", [f"s{i:04d}" for i in range(len(frame))])
    frame["diagnosis"] = frame.pop("target").map({0: "malignant", 1: "benign"})
    frame.to_csv(folder / "biopsies.csv", index=False)
    spec = folder / "spec.toml"
    spec.write_text(SPEC)
    return spec
