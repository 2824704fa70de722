"""The fast predictor: single rows of LightGBM models through LightGBM's FastConfig API,
batches of big compiled forests a block of trees at a time.

Serving answers many one-item requests; ``Booster.predict`` sets a predictor up
on every call, which costs several times the prediction itself for one row.
Compiled tree ensembles are LightGBM models too, so they take the same path; a
compiled linear model answers one row in plain Python by itself.

LightGBM walks every tree for one row before it starts the next row. A compiled random
forest of deep trees is several times the size of a core's cache, so every row of a batch
fetched every node from memory again; predicted a block of trees at a time (each block about
``BLOCK_NODES`` nodes, a part of a core's cache), a block's nodes are fetched once per batch
(editquality's forest, 300 trees of ~520 leaves, 1,000 rows on one thread: 57 -> 35 ms).
The block sums are raw scores, added in block order and averaged as the whole model's are:
the same probabilities to the last bits of float64 rounding (the tests bound the difference).
Every other model, and every other batch, keeps the artifact's ``predict_proba``.
"""

from __future__ import annotations

import ctypes
import re
import threading
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from assay.registry import lightgbm_lib
from assay.registry.artifacts import Predictor
from assay.registry.attributions import as_matrix

# Nodes per block of trees when a forest's batch is predicted block by block: ~0.7 MB of
# LightGBM's node arrays, within a core's 1 MB L2 cache here (blocks of 10 to 100 of editquality's
# ~1,040-node trees measured: 25 the fastest, 100 a third slower, 10 the calls' own cost showing).
BLOCK_NODES = 32_768
# Below this many rows a block's nodes are not reused enough to pay for its extra call.
BLOCK_MIN_ROWS = 128
_LEAVES = re.compile(r"^num_leaves=(\d+)$", re.MULTILINE)


def fast_predict(predictor: Predictor) -> Callable[[np.ndarray], np.ndarray]:
    """``predictor.predict_proba``, with single rows of LightGBM models through LightGBM's fast path
    and batches of big compiled forests block by block (see the module doc).

    ``Booster.predict`` sets up a predictor on every call, which costs several times
    the prediction itself for one row; LightGBM's FastConfig API configures once.
    It runs the same trees, so the probabilities are identical (the tests check it).
    Any other model, or a LightGBM without that API, keeps ``predict_proba``.
    """
    booster = getattr(predictor, "booster", None)
    if predictor.kind != "lightgbm" or booster is None:
        return predictor.predict_proba
    if not hasattr(lightgbm_lib.library(), "LGBM_BoosterPredictForMatSingleRowFast"):  # pragma: no cover
        return predictor.predict_proba
    return _FastRows(predictor, booster)


class _FastRows:
    """Callable predict_proba: one FastConfig per thread (a FastConfig must not be shared by threads)."""

    def __init__(self, predictor: Predictor, booster: Any) -> None:
        self.predictor = predictor
        self.booster = booster
        self.n_classes = predictor.n_classes
        self.n_features = predictor.n_features
        # Booster.predict's default: the best iteration when training recorded one, else all.
        self.num_iteration = booster.best_iteration if booster.best_iteration > 0 else -1
        # A compiled forest's probabilities are its raw scores averaged (see LightGBMPredictor).
        self.average = getattr(predictor, "average", False)
        self.rounds = float(booster.current_iteration())
        self.blocks = tree_blocks(booster) if self.average else None
        # Each block its own model: LightGBM keeps the iterations a prediction asks for in the
        # booster itself, so two threads predicting different blocks of one booster at once
        # computed each other's trees (a forest's 1M-row file, split over two threads, came
        # back with half its rows off by up to 0.1).
        self._parts = [
            lightgbm_lib.Booster(booster.model_to_string(start_iteration=start, num_iteration=count))
            for start, count in self.blocks or ()
        ]
        self._local = threading.local()

    def _state(self) -> tuple[Any, Any, np.ndarray, Any, np.ndarray, Any, Any]:
        """This thread's FastConfig and the buffers it reads and writes, with their C pointers made
        once: a ctypes pointer built per call cost more than a microsecond of every row."""
        state = getattr(self._local, "state", None)
        if state is None:
            config = ctypes.c_void_p()
            lib = lightgbm_lib.library()
            lightgbm_lib.check(
                lib.LGBM_BoosterPredictForMatSingleRowFastInit(
                    self.booster._handle,  # ours, or the lightgbm package's (the same library)
                    ctypes.c_int(
                        lightgbm_lib.PREDICT_RAW_SCORE if self.average else lightgbm_lib.PREDICT_NORMAL
                    ),
                    ctypes.c_int(0),
                    ctypes.c_int(self.num_iteration),
                    ctypes.c_int(lightgbm_lib.FLOAT64),
                    ctypes.c_int32(self.n_features),
                    ctypes.c_char_p(lightgbm_lib.PARAMETERS),
                    ctypes.byref(config),
                )
            )
            weakref.finalize(self, lib.LGBM_FastConfigFree, config)
            row = np.empty(self.n_features, dtype=np.float64)
            out = np.empty(1 if self.n_classes == 2 else self.n_classes, dtype=np.float64)
            out_len = ctypes.c_int64()
            state = (
                lib.LGBM_BoosterPredictForMatSingleRowFast,
                config,
                row,
                ctypes.c_void_p(row.ctypes.data),
                out,
                out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
                ctypes.byref(out_len),
            )
            self._local.state = state
        return state

    def __call__(self, X: np.ndarray) -> np.ndarray:
        if X.shape != (1, self.n_features):
            if self.blocks is not None and len(X) >= BLOCK_MIN_ROWS:
                return self._by_blocks(X)
            return self.predictor.predict_proba(X)
        predict, config, row, row_ptr, out, out_ptr, out_len = self._state()
        row[:] = X[0]
        if predict(config, row_ptr, out_len, out_ptr) != 0:
            lightgbm_lib.check(-1)  # raises LightGBM's own error message
        if self.n_classes == 2:
            p = float(out[0]) / self.rounds if self.average else float(out[0])
            return np.array([[1.0 - p, p]])
        return out.reshape(1, -1) / self.rounds if self.average else out.reshape(1, -1).copy()

    def _by_blocks(self, X: np.ndarray) -> np.ndarray:
        """A forest's averaged probabilities of many rows, its trees taken block by block."""
        X = as_matrix(X, self.n_features)
        total = np.zeros(len(X) if self.n_classes == 2 else (len(X), self.n_classes))
        for part in self._parts:
            total += part.predict(X, raw_score=True)
        proba = total / self.rounds
        if self.n_classes != 2:
            return proba
        out = np.empty((len(X), 2))
        out[:, 1] = proba
        np.subtract(1.0, proba, out=out[:, 0])
        return out


def tree_blocks(booster: Any) -> list[tuple[int, int]] | None:
    """(first iteration, iterations) of each block of about ``BLOCK_NODES`` nodes, or None when
    the whole model is about one block (blocks would only add calls).

    The nodes per iteration are estimated from a few of them (a forest's trees grow alike, from
    samples of one size): writing out a big forest's whole text costs 0.4 s per load.
    """
    iterations = booster.current_iteration()
    sampled = sorted({0, iterations // 2, iterations - 1})
    leaves = [
        sum(map(int, _LEAVES.findall(booster.model_to_string(start_iteration=i, num_iteration=1))))
        for i in sampled
    ]
    nodes = 2 * sum(leaves) / len(leaves)  # a tree of L leaves has L - 1 splits
    per_block = max(1, int(BLOCK_NODES // nodes))
    if 2 * per_block > iterations:
        return None
    return [(s, min(per_block, iterations - s)) for s in range(0, iterations, per_block)]
