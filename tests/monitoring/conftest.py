"""Shared helpers of the monitoring tests: stores on SQLite and PostgreSQL, a trained home, traffic
with drift injected at known times, logging a data frame."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from assay.serving.cache import MemoryCache
from assay.serving.features import FeatureTable
from assay.serving.scoring import Scorer
from assay.workspace import Workspace
from tests.conftest import copied_workspace, edits_frame, lightgbm_only, trained_root, write_binary_spec

DAY = 86400.0
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def log_frame(ws: Workspace, frame: pd.DataFrame, at: np.ndarray | float, ref: str = "damaging") -> Scorer:
    """Score ``frame`` (raw columns, ids in rev_id) with ``ref`` and log it at times ``at``."""
    scorer = Scorer(ws.registry, FeatureTable(ws.engine), MemoryCache(10))
    served = scorer.model(ref)
    X = served.loaded.schema.encode_frame(frame, source="test")
    scored = scorer.score_frame(ref, frame, id_column="rev_id")
    proba = scored[[f"probability_{c}" for c in served.loaded.classes]].to_numpy(dtype=float)
    ws.log.write(served.name, served.version, at, frame["rev_id"].astype(str).tolist(), X, proba)
    return scorer


PER_DAY = 1440  # a row a minute


@pytest.fixture(scope="session")
def monitored_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with `damaging` trained on 8,000 rows: a reference large enough that Evidently's rule
    (distances for references over 1,000 rows) is not judging its own sampling noise."""
    root = tmp_path_factory.mktemp("monitored")
    return trained_root(root, lightgbm_only(write_binary_spec(root / "data", n_train=8000, n_test=2000)))


@pytest.fixture
def ws(monitored_template: Path, tmp_path: Path) -> Iterator[Workspace]:
    with copied_workspace(monitored_template, tmp_path) as workspace:
        yield workspace


def traffic(days: int, *, drift_from: int | None = None, seed: int = 10) -> pd.DataFrame:
    """A row a minute from T0; from day ``drift_from`` on, words_added triples and most editors are anonymous."""
    frame = edits_frame(days * PER_DAY, seed=seed)
    frame["rev_id"] = np.arange(len(frame)) + 5_000_000
    if drift_from is not None:
        later = frame.index >= drift_from * PER_DAY
        frame.loc[later, "words_added"] *= 3
        frame.loc[later, "user_is_anon"] = np.random.default_rng(seed).random(int(later.sum())) < 0.8
    frame["at"] = T0 + np.arange(len(frame)) * 60.0
    return frame


def classes_of(ws: Workspace) -> Callable[[int], list[str]]:
    """The classes of each version of `damaging` (what labels are checked against)."""
    return lambda v: ws.registry.card(ws.registry.get("damaging", v))["classes"]
