"""Loading a LightGBM text model the way assay did before its strict reader: straight into
LightGBM's C parser. Kept apart (and light to import) for the throwaway processes that tests
run it in, since on a crafted file it kills the process."""

from __future__ import annotations

from multiprocessing.connection import Connection
from pathlib import Path

import lightgbm
import numpy as np


def load_unchecked(path: Path, rows: int = 500) -> None:
    """LightGBM's parser, then a prediction, with no check in between."""
    booster = lightgbm.Booster(model_file=str(path))
    booster.predict(np.zeros((rows, booster.num_feature())), num_threads=1)


def probe_unchecked(answer: Connection, directory: str, manifest: dict[str, str]) -> None:
    """A stand-in for ``probe._probe`` that loads without the strict reader."""
    load_unchecked(Path(directory) / "model.lgb.txt")
    answer.send(None)
