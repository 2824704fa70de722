"""Shared helpers of the monitoring tests: stores on SQLite and PostgreSQL, logging a data frame."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy.engine import Engine

from assay.monitoring.log import write_rows
from assay.serving.cache import MemoryCache
from assay.serving.features import FeatureTable
from assay.serving.scoring import Scorer
from assay.store import db
from assay.workspace import Workspace

DAY = 86400.0
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An empty, migrated store: SQLite always, PostgreSQL when ASSAY_TEST_POSTGRES_URL is set."""
    url = (
        f"sqlite:///{tmp_path / 'store.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    engine = db.connect(url)
    yield engine
    engine.dispose()


def log_frame(ws: Workspace, frame: pd.DataFrame, at: np.ndarray | float, ref: str = "damaging") -> Scorer:
    """Score ``frame`` (raw columns, ids in rev_id) with ``ref`` and log it at times ``at``."""
    scorer = Scorer(ws.registry, FeatureTable(ws.engine), MemoryCache(10))
    served = scorer.model(ref)
    X = served.loaded.schema.encode_frame(frame, source="test")
    scored = scorer.score_frame(ref, frame, id_column="rev_id")
    proba = scored[[f"probability_{c}" for c in served.loaded.classes]].to_numpy(dtype=float)
    write_rows(ws.engine, served.name, served.version, at, frame["rev_id"].astype(str).tolist(), X, proba)
    return scorer
