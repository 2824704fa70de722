"""Compiled inference vs each family's own predict_proba, with a LightGBM Booster as the peer.

For every candidate family, fitted with assay's defaults on the editquality training file
(synthetic rows of the same shape when the data is absent), this measures in one run,
interleaved, one thread:

* one row: the estimator's ``predict_proba`` (the reference), the compiled form through the
  server's fast path, and the peer: a LightGBM ``Booster.predict`` of assay's default LightGBM
  model on the same row (what a hand-written Starlette + Booster app calls);
* 1,000 rows: the same three;
* the largest probability difference between compiled and reference on the testing file.

    python bench/bench_compiled.py            # --data ../shared/data/editquality
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # fits and predicts on one thread: fair and quiet

import numpy as np

from assay.modelling.candidates import CANDIDATES
from assay.modelling.compilation import compile_estimator
from assay.modelling.timing import served_predict

ROUNDS = 5  # interleaved rounds; the median of each is reported


def _data(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, object]:
    from assay.modelling.preparation import prepare
    from assay.modelling.spec_file import load_spec

    if any(folder.glob("*.tsv*")):
        spec = load_spec(Path(__file__).resolve().parents[1] / "examples" / "editquality.toml")
        data = prepare(spec, None, lambda _m: None, None)
        return data.X, data.y, data.X_test, data.schema
    raise SystemExit(f"no editquality data in {folder}")


def _time(fn, X: np.ndarray, calls: int) -> float:
    fn(X)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        fn(X)
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/editquality")
    )
    args = parser.parse_args()
    os.chdir(Path(__file__).resolve().parents[1])
    X, y, X_test, schema = _data(Path(args.data))
    print(f"machine: {os.cpu_count()} cores (shared with other work); train {X.shape}, test {X_test.shape}")
    fitted = {}
    for name, candidate in CANDIDATES.items():
        started = time.perf_counter()
        fitted[name] = candidate.fit(candidate.estimator({}, schema, 0), X, y, schema)
        print(f"fitted {name} with assay's defaults in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    peer = fitted["lightgbm"].booster_
    row, batch = X_test[:1], np.resize(X_test, (1000, X_test.shape[1]))
    compiled = {name: compile_estimator(est, X_test) for name, est in fitted.items()}
    served = {name: served_predict(fitted[name], compiled[name]) for name in fitted}
    results: dict[str, dict[str, list[float]]] = {n: {} for n in fitted}
    for _ in range(ROUNDS):  # interleaved: every measurement sees the same machine load
        for name, est in fitted.items():
            r = results[name]
            for key, fn, X_, calls in (
                ("ref1", est.predict_proba, row, 20),
                ("fast1", served[name], row, 300),
                ("peer1", lambda m: peer.predict(m, num_threads=1), row, 300),
                ("ref1000", est.predict_proba, batch, 3),
                ("fast1000", served[name], batch, 3),
                ("peer1000", lambda m: peer.predict(m, num_threads=1), batch, 3),
            ):
                r.setdefault(key, []).append(_time(fn, X_, calls))
    print()
    header = (
        f"{'family':24} {'served by':14} {'max |diff|':>10} {'ref 1 row':>10} {'served':>9} {'Booster':>9} "
        f"{'vs ref':>7} {'vs Booster':>10} {'ref 1k':>9} {'served':>9} {'Booster':>9} {'vs Booster':>10}"
    )
    print(header)
    for name in fitted:
        m = {k: float(np.median(v)) for k, v in results[name].items()}
        c = compiled[name]
        diff = "-" if c.max_abs_diff is None else f"{c.max_abs_diff:.1e}"
        print(
            f"{name:24} {c.runtime:14} {diff:>10} {m['ref1'] * 1e6:8.0f}µs {m['fast1'] * 1e6:7.1f}µs "
            f"{m['peer1'] * 1e6:7.1f}µs {m['ref1'] / m['fast1']:6.0f}x {m['peer1'] / m['fast1']:9.2f}x "
            f"{m['ref1000'] * 1e3:7.1f}ms {m['fast1000'] * 1e3:7.1f}ms {m['peer1000'] * 1e3:7.1f}ms "
            f"{m['peer1000'] / m['fast1000']:9.2f}x"
        )
    print("\n'vs Booster' > 1: the served model answers faster than the LightGBM Booster peer.")


if __name__ == "__main__":
    main()
