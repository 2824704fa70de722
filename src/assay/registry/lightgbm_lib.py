"""LightGBM's C library, called directly for what serving needs of a model: reading it from its
text, and its probabilities, raw scores and contributions for a matrix (``Booster``).

The lightgbm package is what trains. Serving needs none of its Python side, and importing the
package imports scikit-learn and SciPy with it: 0.9 s of every command that scores a file. The
library is the very file the package loads (``lightgbm/lib/lib_lightgbm.so``), found without
importing the package, and called the way the package calls it, so the numbers are the
package's own, bit for bit (the tests compare them). Where the file is not where the package
keeps it, the package is imported and its loaded library used.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import sys
import weakref
from pathlib import Path
from typing import Any

import numpy as np

# The C API's constants (LightGBM's c_api.h).
FLOAT64 = 1
ROW_MAJOR = 1
PREDICT_NORMAL = 0
PREDICT_RAW_SCORE = 1
PREDICT_CONTRIB = 3
# One thread: this runs per request, and OpenMP fan-out on a request's rows costs more than it
# saves and fights with the server's own workers.
PARAMETERS = b"num_threads=1"


class LightGBMError(Exception):
    """LightGBM's library refused a call; the message is the library's (as the package's error)."""


@functools.cache
def library() -> Any:
    """The loaded library, its functions' result types declared once."""
    lib = _load()
    lib.LGBM_GetLastError.restype = ctypes.c_char_p
    return lib


def _load() -> Any:
    spec = importlib.util.find_spec("lightgbm")
    name = {"win32": "lib_lightgbm.dll", "darwin": "lib_lightgbm.dylib"}.get(sys.platform, "lib_lightgbm.so")
    if spec is not None and spec.origin is not None:
        package = Path(spec.origin).parent
        for folder in (package / "lib", package / "bin", package.parent):
            if (folder / name).is_file():
                return ctypes.cdll.LoadLibrary(str(folder / name))
    from lightgbm.basic import _LIB  # a build that keeps its library elsewhere

    return _LIB


def check(status: int) -> None:
    """Raise the library's own message when a call failed."""
    if status != 0:
        raise LightGBMError(library().LGBM_GetLastError().decode("utf-8"))


class Booster:
    """A model read from its text: what ``lightgbm.Booster(model_str=...)`` is to serving.

    It answers ``predict`` with the package's arguments (``raw_score``, ``pred_contrib``) and its
    result shapes, so a predictor takes either. It predicts with every iteration, always: LightGBM
    keeps the iterations a prediction asks for in the booster itself, so threads asking one booster
    for different ones compute each other's trees. A part of a model is a model of its own
    (``model_to_string`` of the part, read back). Predictions of several threads at once are safe.
    """

    best_iteration = -1  # a model read from text has none: predictions use every iteration

    def __init__(self, text: str) -> None:
        lib = library()
        self._handle = ctypes.c_void_p()
        iterations = ctypes.c_int()
        check(
            lib.LGBM_BoosterLoadModelFromString(
                ctypes.c_char_p(text.encode("utf-8")), ctypes.byref(iterations), ctypes.byref(self._handle)
            )
        )
        weakref.finalize(self, lib.LGBM_BoosterFree, self._handle)

    def current_iteration(self) -> int:
        out = ctypes.c_int()
        check(library().LGBM_BoosterGetCurrentIteration(self._handle, ctypes.byref(out)))
        return out.value

    def predict(
        self,
        X: np.ndarray,
        *,
        raw_score: bool = False,
        pred_contrib: bool = False,
        num_threads: int = 1,
    ) -> np.ndarray:
        """Probabilities (or raw scores, or contributions) of the rows of ``X``: one value a row
        for a binary model, a row of values otherwise, as ``lightgbm.Booster.predict`` gives them."""
        if num_threads != 1:
            raise ValueError("serving predicts on one thread a call")
        X = np.ascontiguousarray(X, dtype=np.float64)
        rows, columns = X.shape
        kind = PREDICT_CONTRIB if pred_contrib else PREDICT_RAW_SCORE if raw_score else PREDICT_NORMAL
        lib = library()
        size = ctypes.c_int64()
        check(
            lib.LGBM_BoosterCalcNumPredict(
                self._handle,
                ctypes.c_int(rows),
                ctypes.c_int(kind),
                ctypes.c_int(0),  # every iteration, from the first
                ctypes.c_int(-1),
                ctypes.byref(size),
            )
        )
        out = np.empty(size.value, dtype=np.float64)
        written = ctypes.c_int64()
        check(
            lib.LGBM_BoosterPredictForMat(
                self._handle,
                X.ctypes.data_as(ctypes.c_void_p),
                ctypes.c_int(FLOAT64),
                ctypes.c_int32(rows),
                ctypes.c_int32(columns),
                ctypes.c_int(ROW_MAJOR),
                ctypes.c_int(kind),
                ctypes.c_int(0),  # every iteration, from the first
                ctypes.c_int(-1),
                ctypes.c_char_p(PARAMETERS),
                ctypes.byref(written),
                out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
            )
        )
        if written.value != out.size:
            raise LightGBMError(f"LightGBM wrote {written.value} predictions where {out.size} were expected")
        return out.reshape(rows, -1) if out.size != rows else out

    def model_to_string(self, start_iteration: int = 0, num_iteration: int = -1) -> str:
        """The model's text (of the iterations asked for), as the library writes it."""
        lib = library()
        needed = ctypes.c_int64()
        size = 1 << 20
        while True:
            buffer = ctypes.create_string_buffer(size)
            check(
                lib.LGBM_BoosterSaveModelToString(
                    self._handle,
                    ctypes.c_int(start_iteration),
                    ctypes.c_int(num_iteration),
                    ctypes.c_int(0),  # feature importance by split counts, as the package's default
                    ctypes.c_int64(size),
                    ctypes.byref(needed),
                    buffer,
                )
            )
            if needed.value <= size:
                return buffer.value.decode("utf-8")
            size = needed.value
