"""ONNX Runtime as the serving runtime, against the compiled form assay serves, one run.

For logistic regression, HistGradientBoosting and random forest, fitted with assay's defaults on
editquality's training file, this converts each estimator to ONNX (skl2onnx; float32 input, as
ONNX tree ensembles compare in float, and float64 input where the converter offers it) and
measures, interleaved, one thread each (``intra_op_num_threads=1``, OpenMP 1):

* one row and 1,000 rows through ``onnxruntime.InferenceSession.run``;
* the same through assay's compiled form (``served_predict``: LightGBM text through the
  FastConfig single-row path, or the linear terms), the peer;
* the largest probability difference of each against the estimator's ``predict_proba`` on the
  testing file (assay's tolerance is 1e-6).

skl2onnx, onnxmltools and onnxruntime are not assay dependencies: run this from a throwaway
virtual environment that sees the project's packages, e.g.

    python -m venv --system-site-packages /tmp/onnx-venv
    /tmp/onnx-venv/bin/pip install onnxruntime skl2onnx onnxmltools
    PYTHONPATH=src /tmp/onnx-venv/bin/python bench/bench_onnx.py
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # fits and predicts on one thread: fair and quiet

import numpy as np
import onnxruntime
from bench_compiled import _data, _time
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

from assay.modelling.candidates import CANDIDATES
from assay.modelling.compilation import compile_estimator
from assay.modelling.timing import served_predict

ROUNDS = 5
FAMILIES = ("logistic_regression", "hist_gradient_boosting", "random_forest")


def _session(estimator: Any, n_features: int, double: bool) -> tuple[Any, str] | str:
    """(an ONNX Runtime predict function, the input type), or why the conversion failed."""
    kind = DoubleTensorType if double else FloatTensorType
    try:
        onx = convert_sklearn(
            estimator,
            initial_types=[("X", kind([None, n_features]))],
            options={id(estimator): {"zipmap": False}},
            target_opset={"": 17, "ai.onnx.ml": 3},
        )
    except Exception as exc:  # the converter raises many kinds; all mean "not this way"
        return f"{type(exc).__name__}: {str(exc)[:120]}"
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    try:
        session = onnxruntime.InferenceSession(
            onx.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # e.g. an operator ONNX Runtime has no kernel for at this type
        return f"{type(exc).__name__}: {str(exc)[:160]}"
    dtype = np.float64 if double else np.float32
    output = [o.name for o in session.get_outputs()][1]  # label, probabilities

    def predict(X: np.ndarray) -> np.ndarray:
        return session.run([output], {"X": X.astype(dtype, copy=False)})[0]

    return predict, "float64" if double else "float32"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=0, help="fit on the first N rows (0: all)")
    args = parser.parse_args()
    os.chdir(Path(__file__).resolve().parents[1])
    X, y, X_test, schema = _data(Path(__file__).resolve().parents[2] / "shared/data/editquality")
    if args.train_rows:
        X, y = X[: args.train_rows], y[: args.train_rows]
    print(f"machine: {os.cpu_count()} cores shared with other work (load average {os.getloadavg()[0]:.1f})")
    print(f"onnxruntime {onnxruntime.__version__}; train {X.shape}, test {X_test.shape}; one thread each\n")
    fitted = {n: CANDIDATES[n].fit(CANDIDATES[n].estimator({}, schema, 0), X, y, schema) for n in FAMILIES}
    row, batch = X_test[:1], np.resize(X_test, (1000, X_test.shape[1]))
    runners: dict[str, dict[str, Any]] = {}
    for name, est in fitted.items():
        compiled = compile_estimator(est, X_test)
        runners[name] = {f"assay {compiled.runtime}": served_predict(est, compiled)}
        for double in (False, True):
            made = _session(est, X.shape[1], double)
            if isinstance(made, str):
                print(f"{name}: ONNX with {'float64' if double else 'float32'} input not made: {made}")
                continue
            runners[name][f"onnxruntime {made[1]}"] = made[0]
    times: dict[tuple[str, str, int], list[float]] = {}
    for _ in range(ROUNDS):  # interleaved: every runtime sees the same machine load
        for name, runs in runners.items():
            for label, fn in runs.items():
                times.setdefault((name, label, 1), []).append(_time(fn, row, 300))
                times.setdefault((name, label, 1000), []).append(_time(fn, batch, 5))
    print(f"{'family':24} {'runtime':22} {'max |diff|':>10} {'1 row µs':>9} {'1,000 rows ms':>14}")
    for name, runs in runners.items():
        reference = fitted[name].predict_proba(X_test)
        peer = next(iter(runs))
        for label, fn in runs.items():
            diff = float(np.max(np.abs(fn(X_test) - reference)))
            one, many = (float(np.median(times[(name, label, n)])) for n in (1, 1000))
            ratio = ""
            if label != peer:
                p1, p1000 = (float(np.median(times[(name, peer, n)])) for n in (1, 1000))
                ratio = f"  ({p1 / one:.2f}x, {p1000 / many:.2f}x of assay's)"
            print(f"{name:24} {label:22} {diff:10.1e} {one * 1e6:9.1f} {many * 1e3:14.2f}{ratio}")
    print("\n(Nx of assay's) > 1: ONNX Runtime is faster than the compiled form assay serves.")


if __name__ == "__main__":
    main()
