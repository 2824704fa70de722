"""The fast predictor: single rows of LightGBM models through LightGBM's FastConfig API.

Serving answers many one-item requests; ``Booster.predict`` sets a predictor up
on every call, which costs several times the prediction itself for one row.
Compiled tree ensembles are LightGBM models too, so they take the same path; a
compiled linear model answers one row in plain Python by itself. Every other
model, and every batch, keeps the artifact's ``predict_proba``.
"""

from __future__ import annotations

import ctypes
import threading
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from assay.registry.artifacts import Predictor


def fast_predict(predictor: Predictor) -> Callable[[np.ndarray], np.ndarray]:
    """``predictor.predict_proba``, with single rows of LightGBM models through LightGBM's fast path.

    ``Booster.predict`` sets up a predictor on every call, which costs several times
    the prediction itself for one row; LightGBM's FastConfig API configures once.
    It runs the same trees, so the probabilities are identical (the tests check it).
    Any other model, or a LightGBM without that API, keeps ``predict_proba``.
    """
    booster = getattr(predictor, "booster", None)
    if predictor.kind != "lightgbm" or booster is None:
        return predictor.predict_proba
    try:
        from lightgbm.basic import _LIB, _c_str, _safe_call
    except ImportError:  # pragma: no cover - a LightGBM that moved its internals
        return predictor.predict_proba
    if not hasattr(_LIB, "LGBM_BoosterPredictForMatSingleRowFast"):  # pragma: no cover
        return predictor.predict_proba
    return _FastRows(predictor, booster, _LIB, _c_str, _safe_call)


class _FastRows:
    """Callable predict_proba: one FastConfig per thread (a FastConfig must not be shared by threads)."""

    _PREDICT_NORMAL = 0
    _PREDICT_RAW = 1
    _FLOAT64 = 1

    def __init__(self, predictor: Predictor, booster: Any, lib: Any, c_str: Any, safe_call: Any) -> None:
        self.predictor = predictor
        self.booster = booster
        self.n_classes = predictor.n_classes
        self.n_features = predictor.n_features
        # Booster.predict's default: the best iteration when training recorded one, else all.
        self.num_iteration = booster.best_iteration if booster.best_iteration > 0 else -1
        # A compiled forest's probabilities are its raw scores averaged (see LightGBMPredictor).
        self.average = getattr(predictor, "average", False)
        self.rounds = float(booster.current_iteration())
        self._lib, self._c_str, self._safe_call = lib, c_str, safe_call
        self._local = threading.local()

    def _state(self) -> tuple[Any, Any, np.ndarray, Any, Any]:
        state = getattr(self._local, "state", None)
        if state is None:
            config = ctypes.c_void_p()
            self._safe_call(
                self._lib.LGBM_BoosterPredictForMatSingleRowFastInit(
                    self.booster._handle,
                    ctypes.c_int(self._PREDICT_RAW if self.average else self._PREDICT_NORMAL),
                    ctypes.c_int(0),
                    ctypes.c_int(self.num_iteration),
                    ctypes.c_int(self._FLOAT64),
                    ctypes.c_int32(self.n_features),
                    self._c_str("num_threads=1"),
                    ctypes.byref(config),
                )
            )
            weakref.finalize(self, self._lib.LGBM_FastConfigFree, config)
            out = np.empty(1 if self.n_classes == 2 else self.n_classes, dtype=np.float64)
            out_len = ctypes.c_int64()
            state = (
                self._lib.LGBM_BoosterPredictForMatSingleRowFast,
                config,
                out,
                out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
                ctypes.byref(out_len),
            )
            self._local.state = state
        return state

    def __call__(self, X: np.ndarray) -> np.ndarray:
        if X.shape != (1, self.n_features):
            return self.predictor.predict_proba(X)
        predict, config, out, out_ptr, out_len = self._state()
        row = np.ascontiguousarray(X[0], dtype=np.float64)
        if predict(config, ctypes.c_void_p(row.ctypes.data), out_len, out_ptr) != 0:
            self._safe_call(-1)  # raises LightGBM's own error message
        if self.n_classes == 2:
            p = float(out[0]) / self.rounds if self.average else float(out[0])
            return np.array([[1.0 - p, p]])
        return out.reshape(1, -1) / self.rounds if self.average else out.reshape(1, -1).copy()
