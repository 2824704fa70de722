"""Run Evidently's DataDriftPreset on two Parquet files and print its per-column verdicts as JSON.

Run by bench/bench_monitoring.py with an interpreter that has Evidently: Evidently 0.7 does not
import with the pandas assay pins (3.x), so it lives in its own virtual environment, e.g.

    python -m venv /tmp/evidently-venv && /tmp/evidently-venv/bin/pip install evidently "pandas<3" pyarrow

Usage: evidently_drift.py REFERENCE.parquet CURRENT.parquet NUMERIC,COLUMNS CATEGORICAL,COLUMNS
The time printed is Evidently's report alone (building its datasets and running the preset).
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("DO_NOT_TRACK", "1")

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

# Evidently's display names of its tests, and how each decides (its own comparisons).
P_AT_MOST = {"K-S p_value"}
P_BELOW = {"chi-square p_value", "Z-test p_value"}
NAMES = {
    "K-S p_value": "ks",
    "chi-square p_value": "chisquare",
    "Z-test p_value": "z",
    "Wasserstein distance (normed)": "wasserstein",
    "Jensen-Shannon distance": "jensenshannon",
    "PSI": "psi",
}


def main() -> None:
    ref_path, cur_path, numeric, categorical = sys.argv[1:5]
    reference = pd.read_parquet(ref_path)
    current = pd.read_parquet(cur_path)
    definition = DataDefinition(
        numerical_columns=[c for c in numeric.split(",") if c],
        categorical_columns=[c for c in categorical.split(",") if c],
    )
    started = time.perf_counter()
    snapshot = Report([DataDriftPreset()]).run(
        reference_data=Dataset.from_pandas(reference, data_definition=definition),
        current_data=Dataset.from_pandas(current, data_definition=definition),
    )
    seconds = time.perf_counter() - started
    columns = {}
    share = None
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if config["type"].endswith("DriftedColumnsCount"):
            share = metric["value"]["share"]
            continue
        method, threshold, value = config["method"], config["threshold"], metric["value"]
        if method in P_AT_MOST:
            drift = value <= threshold
        elif method in P_BELOW:
            drift = value < threshold
        else:
            drift = value >= threshold
        columns[config["column"]] = {
            "test": NAMES.get(method, method),
            "statistic": value,
            "threshold": threshold,
            "drift": bool(drift),
        }
    json.dump({"seconds": seconds, "share": share, "columns": columns}, sys.stdout)


if __name__ == "__main__":
    main()
