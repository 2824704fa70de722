"""Batch scoring of Parquet folders: the scorer, one per engine worker, over batches of rows.

``score_parquet`` resolves the model reference once (an alias that moves during the job
does not change which version scores it), then has the engine stream the input folder's
rows through ``FrameScoring``: each worker opens the workspace and loads that version
once, and scores every batch it is given with ``Scorer.score_frame`` — the same path as
``assay score`` on a file and the HTTP API. Output: Parquet files of ``id``, ``version``,
``prediction`` and ``probability_<class>``, one per input batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from assay.engines.engine import Engine
from assay.errors import InvalidInput
from assay.serving.cache import MemoryCache
from assay.serving.features import FeatureTable
from assay.serving.scoring import Scorer
from assay.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

BATCH_ROWS = 65_536


class FrameScoring:
    """Built once per worker: the workspace, a scorer, and the version loaded."""

    def __init__(self, settings: Settings, ref: str, id_column: str, keys: str = "classes") -> None:
        from assay.workspace import Workspace  # the composition root: opened here, in the worker

        self.workspace = Workspace.open(settings)
        self.scorer = Scorer(self.workspace.registry, FeatureTable(self.workspace.engine), MemoryCache(0))
        self.ref, self.id_column, self.keys = ref, id_column, keys
        self.scorer.model(ref)  # load it now, not on the first batch

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        return self.scorer.score_frame(self.ref, batch, id_column=self.id_column, keys=self.keys)


def score_parquet(
    settings: Settings,
    scorer: Scorer,
    ref: str,
    source: Path,
    dest: Path,
    *,
    id_column: str,
    engine: Engine,
    workers: int,
    batch_rows: int = BATCH_ROWS,
    keys: str = "classes",
) -> tuple[str, int]:
    """Score every row of the Parquet files under ``source`` into ``dest``; (version ref, rows)."""
    if dest.exists() and any(dest.iterdir()):
        raise InvalidInput(f"{dest}: the output folder must be empty or new", field="--output")
    pinned = scorer.model(ref).loaded.record.ref  # name@N: every worker scores the same version
    kwargs = {"settings": settings, "ref": pinned, "id_column": id_column, "keys": keys}
    return pinned, engine.map_parquet(
        FrameScoring, kwargs, source, dest, workers=max(workers, 1), batch_rows=batch_rows
    )
