"""Batch scoring of Parquet folders: the scorer, one per engine worker, over batches of rows.

``score_parquet`` resolves the model reference once (an alias that moves during the job
does not change which version scores it), then has the engine stream the input folder's
rows through ``FrameScoring``: each worker opens the workspace and loads that version
once, and scores every batch it is given with ``Scorer.score_frame`` — the same path as
``assay score`` on a file and the HTTP API. Output: Parquet files of ``id``, ``version``,
``prediction`` and ``probability_<class>``, one per input batch.

With ``log`` (a picklable opener, ``monitoring.log.open_log`` say: serving does not import the
monitoring that reads what it scored), each worker writes its batches' scores to the prediction
log as a file's are, and a batch counts as done only once its rows are written: a Ray worker may
be stopped as soon as its last batch is done, with nothing left queued to lose.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from assay.engines.engine import Engine
from assay.errors import InvalidInput, Unavailable
from assay.serving.cache import MemoryCache
from assay.serving.features import FeatureTable
from assay.serving.scoring import PredictionSink, Scorer
from assay.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

BATCH_ROWS = 65_536
LOG_WRITE_S = 600.0  # how long a batch may wait for its rows to reach the prediction log


class BatchLog(PredictionSink, Protocol):
    """The prediction log as a batch worker uses it: the scorer records into it, the worker waits
    for each batch's rows to be written and closes it when done."""

    def flush(self, timeout: float) -> bool: ...

    def close(self) -> None: ...


LogOpener = Callable[..., BatchLog | None]
"""``opener(store, settings, queue_rows=...)``: the worker's prediction log, or None when logging is off."""


class FrameScoring:
    """Built once per worker: the workspace, a scorer (logging when ``log``), the version loaded."""

    def __init__(
        self,
        settings: Settings,
        ref: str,
        id_column: str,
        keys: str = "classes",
        log: LogOpener | None = None,
    ) -> None:
        from assay.workspace import Workspace  # the composition root: opened here, in the worker

        self.workspace = Workspace.open(settings)
        # A whole batch is queued at once: nothing waits on the log but the batch itself.
        self.log = log(self.workspace.log, settings, queue_rows=2**62) if log is not None else None
        features = FeatureTable(self.workspace.engine)
        self.scorer = Scorer(self.workspace.registry, features, MemoryCache(0), prediction_log=self.log)
        self.ref, self.id_column, self.keys = ref, id_column, keys
        self.scorer.model(ref)  # load it now, not on the first batch

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        scored = self.scorer.score_frame(self.ref, batch, id_column=self.id_column, keys=self.keys)
        if self.log is not None and not self.log.flush(LOG_WRITE_S):
            raise Unavailable(f"the prediction log did not take a batch in {LOG_WRITE_S:g}s")
        return scored

    def close(self) -> None:
        """Stop the log's writer and let the store go (an engine calls it when it can)."""
        if self.log is not None:
            self.log.close()
        self.workspace.close()


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
    log: LogOpener | None = None,
) -> tuple[str, int]:
    """Score every row of the Parquet files under ``source`` into ``dest``; (version ref, rows).
    ``log``: opens each worker's prediction log, where the scores go too (sampled by ``log_sample``)."""
    if dest.exists() and any(dest.iterdir()):
        raise InvalidInput(f"{dest}: the output folder must be empty or new", field="--output")
    pinned = scorer.model(ref).loaded.record.ref  # name@N: every worker scores the same version
    kwargs = {"settings": settings, "ref": pinned, "id_column": id_column, "keys": keys, "log": log}
    return pinned, engine.map_parquet(
        FrameScoring, kwargs, source, dest, workers=max(workers, 1), batch_rows=batch_rows
    )
