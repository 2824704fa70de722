"""The Ray engine on a local Ray: the same training results as the local engine for the same seed,
a Parquet folder scored by Ray Data actors exactly as the scorer scores the file, and the same
monitoring report (the windows' drift tests as Ray tasks) as the local engine gives.

Ray is started with the machine's cores and tasks and actors ask for at most one each; every test
has a timeout, so a Ray that waits for a core it will never get fails the test instead of blocking
the run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pandas as pd
import pytest

from assay.engines.engine import LocalEngine, open_engine
from assay.modelling.spec_file import load_spec
from assay.modelling.training import train
from assay.monitoring import monitor
from assay.serving.batch import score_parquet
from assay.serving.cache import MemoryCache
from assay.serving.features import FeatureTable
from assay.serving.scoring import Scorer
from assay.settings import Settings
from assay.workspace import Workspace
from tests.conftest import edits_frame, write_binary_spec
from tests.monitoring.conftest import DAY, T0, log_frame, traffic

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.timeout(420)


@pytest.fixture(scope="module")
def ray_engine() -> Iterator[object]:
    engine = open_engine("ray")
    yield engine
    ray.shutdown()


def test_training_on_ray_equals_training_here(ray_engine: object, tmp_path: Path) -> None:
    spec = load_spec(write_binary_spec(tmp_path / "data", n_train=600, n_test=200))
    spec.training.search_budget_s, spec.training.search_trials = 600, 3
    results = {}
    for name, engine in (("local", LocalEngine()), ("ray", ray_engine)):
        ws = Workspace.open(Settings.load(home=tmp_path / name, environ={}))
        try:
            results[name] = train(spec, ws.registry, engine=engine)  # type: ignore[arg-type]
        finally:
            ws.close()
    here, there = results["local"], results["ray"]
    assert [c.fold_scores for c in here.comparison] == [c.fold_scores for c in there.comparison]
    assert here.search is not None and there.search is not None
    assert here.search["history"] == there.search["history"] and there.search["trials"] == 3
    assert here.winner.params == there.winner.params
    assert here.record.summary == there.record.summary
    model_file = next(f for f in here.record.manifest if f.startswith("model."))
    assert (
        here.record.manifest[model_file] == there.record.manifest[model_file]
    )  # the same model, byte for byte


def test_a_parquet_folder_scored_by_ray_actors(
    ray_engine: object, trained_home: Path, tmp_path: Path
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    frame = edits_frame(3000, seed=5)
    for part in range(3):
        frame.iloc[part * 1000 : (part + 1) * 1000].to_parquet(source / f"part-{part}.parquet")
    settings = Settings.load(home=trained_home, environ={})
    ws = Workspace.open(settings)
    scorer = Scorer(ws.registry, FeatureTable(ws.engine), MemoryCache(0))
    try:
        used, rows = score_parquet(
            settings,
            scorer,
            "damaging",
            source,
            tmp_path / "out",
            id_column="rev_id",
            engine=ray_engine,
            workers=2,
            batch_rows=500,  # type: ignore[arg-type]
        )
        expected = scorer.score_frame("damaging", frame, id_column="rev_id")
    finally:
        scorer.close()
        ws.close()
    assert used == "damaging@1" and rows == 3000
    got = (
        pd.read_parquet(tmp_path / "out")
        .sort_values("id", key=lambda s: s.astype(int))
        .reset_index(drop=True)
    )
    expected = expected.sort_values("id", key=lambda s: s.astype(int)).reset_index(drop=True)
    pd.testing.assert_frame_equal(got[expected.columns], expected, check_dtype=False)


def test_a_monitoring_report_on_ray_equals_the_local_one(
    ray_engine: object, trained_workspace: Workspace
) -> None:
    ws = trained_workspace
    frame = traffic(4, drift_from=2)
    log_frame(ws, frame, frame["at"].to_numpy())
    reports = [
        orjson.dumps(
            monitor.analyse(
                ws.engine,
                ws.log,
                ws.registry,
                "damaging",
                since=T0,
                until=T0 + 4 * DAY,
                window="1d",
                with_psi=True,
                work=work,  # type: ignore[arg-type]
            ).to_dict(),
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
        for work in (None, ray_engine)
    ]
    assert reports[0] == reports[1]
    drifted = [w["drift"]["drifted_features"] for w in orjson.loads(reports[1])["windows"]]
    # A report that says something: the drift injected from the third day on is found there.
    assert len(drifted) == 4 and all("words_added" in d and "user_is_anon" in d for d in drifted[2:])
