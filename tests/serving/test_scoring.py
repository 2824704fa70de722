"""The scorer: one path for API, CLI and review; validation per item, batching, cache, aliases."""

from __future__ import annotations

import gc
import logging
import math
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from assay.cli import main
from assay.errors import ArtifactError, InvalidInput, NotFound
from assay.registry.artifacts import load_model, save_model
from assay.registry.loaded import LoadedModel
from assay.registry.schema import FeatureSchema
from assay.registry.versions import LOAD_CACHE_SIZE
from assay.serving import scoring
from assay.serving.cache import MemoryCache, RedisCache, score_key
from assay.serving.features import FeatureTable
from assay.serving.predictor import fast_predict
from assay.serving.scoring import Scorer
from assay.settings import Settings
from assay.store import tables
from assay.store.notices import NoticeWatcher
from assay.web.app import create_app
from assay.workspace import Workspace
from tests.conftest import edits_frame
from tests.registry.test_records import CARD_CRAFTS, tamper
from tests.servers import FEATURES, AppClient, add_version, edit_items


class Recorder:
    """Collects what the scorer reports (its ScoringObserver protocol)."""

    def __init__(self) -> None:
        self.hits = self.misses = self.scored = self.failed = 0
        self.loaded: list[tuple[str, int]] = []
        self.unloaded: list[tuple[str, int]] = []

    def cache_lookups(self, hits: int, misses: int) -> None:
        self.hits += hits
        self.misses += misses

    def items_scored(self, model: str, version: int, scored: int, failed: int) -> None:
        self.scored += scored
        self.failed += failed

    def model_loaded(self, model: str, version: int) -> None:
        self.loaded.append((model, version))

    def model_unloaded(self, model: str, version: int) -> None:
        self.unloaded.append((model, version))


def assert_same_score(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Equal scores; probabilities to 1e-12 (a matrix product may round differently in a batch)."""
    assert {k: v for k, v in a.items() if k != "probability"} == {
        k: v for k, v in b.items() if k != "probability"
    }
    assert a["probability"] == pytest.approx(b["probability"], abs=1e-12)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def scorer(trained_workspace: Workspace, recorder: Recorder) -> Scorer:
    """The server's scorer: every alias's version loaded at each refresh."""
    return Scorer(
        trained_workspace.registry,
        FeatureTable(trained_workspace.engine),
        MemoryCache(1000),
        observer=recorder,
        preload=True,
    )


def test_a_score_is_the_models_probability(scorer: Scorer) -> None:
    item = edit_items(1)[0]
    score = scorer.score(["damaging"], [item])["scores"][item["id"]]["damaging"]
    loaded = scorer.model("damaging").loaded
    proba = loaded.predictor.predict_proba(loaded.schema.encode_record(item["features"])[None, :])[0]
    positive = loaded.classes.index("True")
    assert score["version"] == "1"
    assert list(score["probability"]) == ["true", "false"]
    assert score["probability"]["true"] == pytest.approx(proba[positive], abs=1e-12)
    assert score["probability"]["false"] == pytest.approx(proba[1 - positive], abs=1e-12)
    assert score["prediction"] is bool(proba[positive] >= loaded.decision_threshold())
    for name, point in loaded.operating_points.items():
        passes = point["threshold"] is not None and proba[positive] >= point["threshold"]
        assert score["operating_points"][name] is bool(passes)


def test_a_batch_scores_exactly_like_single_items(scorer: Scorer) -> None:
    items = edit_items(40)
    batch = scorer.score(["damaging"], items)["scores"]
    for item in items:
        alone = scorer.score(["damaging"], [item])["scores"][item["id"]]["damaging"]
        assert_same_score(batch[item["id"]]["damaging"], alone)


def test_one_bad_item_does_not_spoil_the_batch(scorer: Scorer) -> None:
    items = edit_items(20)
    items[3]["features"]["words_added"] = "many"
    del items[5]["features"]["words_removed"]
    items[7]["features"]["user_is_anon"] = None
    items[9]["features"]["words_added"] = math.inf
    items[11]["features"]["typo"] = 1
    items[13]["features"] = [1, 2]
    scores = scorer.score(["damaging"], items)["scores"]
    expected = {
        3: ("invalid_input", "features.words_added"),
        5: ("missing_feature", "features.words_removed"),
        7: ("invalid_input", "features.user_is_anon"),
        9: ("invalid_input", "features.words_added"),
        11: ("unknown_feature", "features.typo"),
        13: ("invalid_input", "features"),
    }
    for i, item in enumerate(items):
        result = scores[item["id"]]["damaging"]
        if i in expected:
            assert (result["error"]["code"], result["error"]["field"]) == expected[i]
            assert result["error"]["message"]
        else:
            assert_same_score(result, scorer.score(["damaging"], [item])["scores"][item["id"]]["damaging"])


@pytest.mark.parametrize(
    ("refs", "items", "error", "code"),
    [
        (["nope"], [], NotFound, "unknown_model"),
        (["damaging@9"], [], NotFound, "unknown_version"),
        (["damaging@staging"], [], NotFound, "unknown_alias"),
        (["bad name"], [], InvalidInput, "invalid_input"),
        ([], [], InvalidInput, "invalid_input"),
        (["damaging"], [{"id": "1"}, {"id": 1}], InvalidInput, "duplicate_id"),
        (["damaging"], ["1"], InvalidInput, "invalid_input"),
        (["damaging"], [{"id": "1", "feature": {}}], InvalidInput, "invalid_input"),
        (["damaging"], [{"features": {}}], InvalidInput, "invalid_id"),
        (["damaging"], {"id": "1"}, InvalidInput, "invalid_input"),
    ],
)
def test_request_level_errors(scorer: Scorer, refs: list[str], items: Any, error: type, code: str) -> None:
    with pytest.raises(error) as exc:
        scorer.score(refs, items)
    assert exc.value.code == code


@pytest.mark.parametrize("explain", [-1, 51, 2.5, "yes"])
def test_explain_must_be_a_small_count(scorer: Scorer, explain: Any) -> None:
    with pytest.raises(InvalidInput) as exc:
        scorer.score(["damaging"], edit_items(1), explain=explain)
    assert exc.value.field == "explain"


def test_stored_features_and_injected_overrides(scorer: Scorer) -> None:
    items = edit_items(3)
    loaded = scorer.model("damaging").loaded
    scorer.features.load_records("damaging", items, loaded.schema)
    by_id = scorer.score(["damaging"], [{"id": items[0]["id"]}])["scores"][items[0]["id"]]["damaging"]
    direct = scorer.score(["damaging"], [items[0]])["scores"][items[0]["id"]]["damaging"]
    assert by_id == direct
    # "What if this edit had come from an anonymous user with bad words?"
    what_if = {"user_is_anon": True, "badwords_prop_delta_sum": 2.0}
    injected = scorer.score(["damaging"], [{"id": items[1]["id"], "features": what_if}], features=True)
    result = injected["scores"][items[1]["id"]]["damaging"]
    merged = {**items[1]["features"], **what_if}
    assert result["features"] == merged
    assert (
        result["probability"]
        == scorer.score(["damaging"], [{"id": "x", "features": merged}])["scores"]["x"]["damaging"][
            "probability"
        ]
    )
    unknown = scorer.score(["damaging"], [{"id": "404"}, {"id": "405", "features": {"words_added": 1}}])[
        "scores"
    ]
    assert unknown["404"]["damaging"]["error"]["code"] == "unknown_item"
    assert unknown["405"]["damaging"]["error"]["code"] == "missing_feature"
    with pytest.raises(NotFound):
        scorer.score_one("damaging", "404")


def test_id_only_scores_are_cached_by_version(scorer: Scorer, recorder: Recorder) -> None:
    items = edit_items(2)
    scorer.features.load_records("damaging", items, scorer.model("damaging").loaded.schema)
    ids = [{"id": item["id"]} for item in items]
    first = scorer.score(["damaging"], ids)
    assert (recorder.hits, recorder.misses) == (0, 2)
    assert scorer.score(["damaging"], ids) == first
    assert (recorder.hits, recorder.misses) == (2, 2)
    assert scorer.cache.get_many([score_key("damaging", 1, items[0]["id"])])[0] is not None
    detailed = scorer.score(["damaging"], ids, features=True, explain=2)  # never answered from the cache
    assert (recorder.hits, recorder.misses) == (2, 2)
    assert "explanation" in detailed["scores"][items[0]["id"]]["damaging"]
    assert "explanation" not in scorer.score(["damaging"], ids)["scores"][items[0]["id"]]["damaging"]
    scorer.invalidate("damaging", [items[0]["id"]])
    scorer.score(["damaging"], ids[:1])
    assert recorder.misses == 3


def test_the_scorer_follows_alias_moves_after_a_refresh(
    scorer: Scorer, trained_workspace: Workspace, recorder: Recorder
) -> None:
    item = edit_items(1)[0]
    assert scorer.score(["damaging"], [item])["scores"][item["id"]]["damaging"]["version"] == "1"
    version = add_version(trained_workspace, "damaging", alias="production")
    trained_workspace.registry.set_alias(
        "damaging", "candidate", version, actor="test", reason="test", forced=True, gates=[]
    )
    assert scorer.score(["damaging"], [item])["scores"][item["id"]]["damaging"]["version"] == "1"
    scorer.refresh()
    loaded = {(m.name, m.version) for m in scorer.loaded()}
    assert ("damaging", version) in loaded  # loaded before switching
    # The version no alias points at any more is let go (memory does not grow with promotions).
    assert ("damaging", 1) not in loaded and recorder.unloaded == [("damaging", 1)]
    result = scorer.score(["damaging", "damaging@1"], [item])["scores"][item["id"]]
    assert result["damaging"]["version"] == str(version)
    assert result["damaging@1"]["version"] == "1"
    assert result["damaging"]["probability"] == result["damaging@1"]["probability"]


def test_a_one_shot_scorer_loads_only_the_model_it_is_asked_for(
    trained_workspace: Workspace, recorder: Recorder
) -> None:
    """By default (the commands' scorer) a refresh reads the table and loads nothing; a model is
    loaded when first named, and the others never are. A server's scorer (``preload=True``)
    loads them all."""
    ws = trained_workspace
    lazy = Scorer(ws.registry, FeatureTable(ws.engine), MemoryCache(0), observer=recorder)
    lazy.refresh()
    assert {m.name for m in lazy.models()} == {"damaging", "quality"}
    assert recorder.loaded == [] and lazy.loaded() == []
    item = edit_items(1)[0]
    assert lazy.score(["damaging"], [item])["scores"][item["id"]]["damaging"]["version"] == "1"
    assert recorder.loaded == [("damaging", 1)]
    version = add_version(ws, "damaging", alias="production")
    lazy.refresh()
    assert lazy.model("damaging").version == version
    assert recorder.loaded == [("damaging", 1), ("damaging", version)]
    eager = Recorder()
    Scorer(ws.registry, FeatureTable(ws.engine), MemoryCache(0), observer=eager, preload=True).refresh()
    aliased = {(m.name, v) for m in ws.registry.models() for v in m.aliases.values()}
    assert set(eager.loaded) == aliased and {"damaging", "quality"} <= {name for name, _ in aliased}


def test_a_damaged_version_is_not_served(
    scorer: Scorer, trained_workspace: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    item = edit_items(1)[0]
    scorer.refresh()
    with caplog.at_level(logging.ERROR):
        add_version(trained_workspace, "damaging", alias="production", damage=True)
        scorer.refresh()
    assert "still serving version 1" in caplog.text
    assert scorer.score(["damaging"], [item])["scores"][item["id"]]["damaging"]["version"] == "1"


def test_multiclass_scores_and_explanations(scorer: Scorer) -> None:
    item = {"id": "p1", "features": {"length": 12000.0, "refs": 30, "topic": "science"}}
    score = scorer.score(["quality"], [item], explain=True)["scores"]["p1"]["quality"]
    loaded = scorer.model("quality").loaded
    assert set(score["probability"]) == set(loaded.classes)
    assert sum(score["probability"].values()) == pytest.approx(1.0)
    assert score["prediction"] == max(score["probability"], key=score["probability"].get)
    explanation = score["explanation"]
    assert explanation["class"] == score["prediction"]
    assert len(explanation["contributions"]) == 3
    assert {c["feature"]: c["value"] for c in explanation["contributions"]} == item["features"]
    # A category the model never saw is refused by name, never silently scored as something else;
    # null asks for it to be scored as missing, as the model scored unseen held-out categories.
    unseen = scorer.score(
        ["quality"],
        [
            {"id": "p2", "features": {**item["features"], "topic": "chess"}},
            {"id": "p3", "features": {**item["features"], "topic": 5}},
            {"id": "p4", "features": {**item["features"], "topic": None}},
        ],
        features=True,
    )["scores"]
    for item_id in ("p2", "p3"):
        error = unseen[item_id]["quality"]["error"]
        assert (error["code"], error["field"]) == ("unknown_category", "features.topic")
        assert "send null" in error["message"]
    assert unseen["p4"]["quality"]["features"]["topic"] is None
    many = [
        {"id": f"m{i}", "features": {**item["features"], "topic": "chess" if i == 5 else "science"}}
        for i in range(20)
    ]  # the column-at-a-time path for batches
    batch = scorer.score(["quality"], many)["scores"]
    assert batch["m5"]["quality"]["error"]["code"] == "unknown_category"
    assert all("probability" in batch[f"m{i}"]["quality"] for i in range(20) if i != 5)


def test_exact_explanations_add_up_to_the_score(scorer: Scorer) -> None:
    item = edit_items(1, seed=9)[0]
    score = scorer.score(["damaging"], [item], explain=50)["scores"][item["id"]]["damaging"]
    explanation = score["explanation"]
    assert explanation["method"] == "exact"
    assert len(explanation["contributions"]) == len(FEATURES)
    magnitudes = [abs(c["contribution"]) for c in explanation["contributions"]]
    assert magnitudes == sorted(magnitudes, reverse=True)
    p = score["probability"]["true"]
    total = explanation["base"] + sum(c["contribution"] for c in explanation["contributions"])
    assert total == pytest.approx(math.log(p / (1 - p)), abs=1e-6)


def test_score_frame_matches_json_scores(scorer: Scorer) -> None:
    frame = edits_frame(300, seed=4)
    frame["rev_id"] = frame["rev_id"].astype(str)
    out = scorer.score_frame("damaging", frame, id_column="rev_id")
    # Files name the model's classes (JSON keeps ORES's true/false for binary models).
    assert list(out.columns) == ["id", "version", "prediction", "probability_True", "probability_False"]
    items = edit_items(300, seed=4)
    scores = scorer.score(["damaging"], items)["scores"]
    for row in out.itertuples():
        expected = scores[row.id]["damaging"]
        assert row.prediction == ("True" if expected["prediction"] else "False")
        assert row.probability_True == pytest.approx(expected["probability"]["true"], abs=1e-12)
    multiclass = scorer.score_frame(
        "quality",
        pd.DataFrame({"page_id": ["a"], "length": [12000.0], "refs": [30], "topic": ["science"]}),
        id_column="page_id",
    )
    loaded = scorer.model("quality").loaded
    assert list(multiclass.columns) == [
        "id",
        "version",
        "prediction",
        *(f"probability_{c}" for c in loaded.classes),
    ]
    assert multiclass["prediction"][0] in loaded.classes
    assert (out["version"] == 1).all()


class ListSink:
    """A prediction log that keeps what it is handed, in order."""

    def __init__(self) -> None:
        self.batches: list[tuple[list[str | None], np.ndarray, np.ndarray]] = []

    def record(
        self, model: str, version: int, ids: Any, X: np.ndarray, proba: np.ndarray, at: Any = None
    ) -> None:
        self.batches.append((list(ids), X.copy(), proba.copy()))


def test_a_file_is_logged_a_slice_at_a_time_every_row_once(
    trained_workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scoring, "_LOG_SLICE", 300)
    sink = ListSink()
    scorer = Scorer(
        trained_workspace.registry,
        FeatureTable(trained_workspace.engine),
        MemoryCache(0),
        prediction_log=sink,
    )
    frame = edits_frame(1000, seed=4)
    out = scorer.score_frame("damaging", frame, id_column="rev_id")
    assert [len(ids) for ids, _, _ in sink.batches] == [300, 300, 300, 100]
    assert [i for ids, _, _ in sink.batches for i in ids] == out["id"].tolist()
    X = scorer.model("damaging").loaded.schema.encode_frame(frame, source="f", strict=True)
    np.testing.assert_array_equal(np.vstack([b[1] for b in sink.batches]), X)
    logged = np.vstack([b[2] for b in sink.batches])
    np.testing.assert_allclose(logged[:, scorer.model("damaging").loaded.classes.index("True")],
                               out["probability_True"], rtol=0, atol=0)  # fmt: skip


def test_big_batches_are_split_over_threads_in_order(trained_workspace: Workspace) -> None:
    def scorer_with(threads: int) -> Scorer:
        return Scorer(
            trained_workspace.registry,
            FeatureTable(trained_workspace.engine),
            MemoryCache(0),
            threads=threads,
        )

    frame = pd.concat([edits_frame(1000, seed=s) for s in range(70)], ignore_index=True)  # > one chunk
    parallel, serial = scorer_with(3), scorer_with(1)
    try:
        chunked = parallel.score_frame("damaging", frame, id_column="rev_id")
        single = serial.score_frame("damaging", frame, id_column="rev_id")
        np.testing.assert_allclose(
            chunked["probability_True"], single["probability_True"], rtol=0, atol=1e-12
        )
        items = edit_items(600)
        a, b = parallel.score(["damaging"], items)["scores"], serial.score(["damaging"], items)["scores"]
        for item in items:
            assert_same_score(a[item["id"]]["damaging"], b[item["id"]]["damaging"])
    finally:
        parallel.close()


def test_a_batch_is_split_only_while_no_other_batch_holds_the_cores(trained_workspace: Workspace) -> None:
    scorer = Scorer(
        trained_workspace.registry, FeatureTable(trained_workspace.engine), MemoryCache(0), threads=2
    )
    served = scorer.model("damaging")
    X = served.encoder.encode([item["features"] for item in edit_items(600)])[0]
    first_in, release = threading.Event(), threading.Event()
    calls: list[tuple[str, int]] = []

    class Held:  # the served model, its pool chunks held until the second batch was predicted
        keys = served.keys

        def predict(self, rows: np.ndarray) -> np.ndarray:
            name = threading.current_thread().name
            calls.append((name, len(rows)))
            if name.startswith("assay-predict"):
                first_in.set()
                assert release.wait(10)
            return served.predict(rows)

    held = Held()
    try:
        with ThreadPoolExecutor(1) as other:
            first = other.submit(scorer._predict, held, X)  # type: ignore[arg-type]
            assert first_in.wait(10)
            second = scorer._predict(held, X)  # type: ignore[arg-type]
            # Whole, on its own thread; the first batch's other chunk may still be arriving in the pool.
            assert [call for call in calls if not call[0].startswith("assay-predict")] == [
                (threading.current_thread().name, 600)
            ]
            release.set()
            np.testing.assert_array_equal(first.result(), second)
        assert sorted(n for name, n in calls if name.startswith("assay-predict")) == [300, 300]
        calls.clear()
        scorer._predict(held, X)  # type: ignore[arg-type]
        assert sorted(n for _, n in calls) == [300, 300]  # the cores are free again: split
    finally:
        release.set()
        scorer.close()


def test_score_columns_agrees_with_items_and_is_all_or_nothing(scorer: Scorer) -> None:
    items = edit_items(40)
    names = scorer.model("damaging").names
    lists = {name: [item["features"][name] for item in items] for name in names}
    # Typed columns, as raw protocol tensors arrive: numbers and booleans as numpy arrays.
    typed = {
        name: np.asarray(column) if type(column[0]) is not str else column for name, column in lists.items()
    }
    by_items = scorer.score(["damaging"], items)["scores"]
    for columns in (lists, typed):
        served, proba, groups = scorer.score_columns("damaging", columns, len(items))
        assert groups == [None] * len(items)  # no per-group thresholds
        assert proba.shape == (40, 2) and served.version == 1
        for k, item in enumerate(items):
            score = by_items[item["id"]]["damaging"]
            assert proba[k, served.positive_index] == pytest.approx(score["probability"]["true"], abs=1e-12)

    bad = {**typed, "words_added": typed["words_added"].astype(np.float64)}
    bad["words_added"][4] = np.nan
    with pytest.raises(InvalidInput) as exc:
        scorer.score_columns("damaging", bad, len(items))
    assert exc.value.message.startswith("row 4:") and exc.value.field == "features.words_added"

    flag = next(f.name for f in scorer.model("damaging").loaded.schema.features if f.kind == "boolean")
    odd = {**typed, flag: np.where(np.arange(40) == 7, 2, typed[flag].astype(np.int64))}
    with pytest.raises(InvalidInput) as exc:
        scorer.score_columns("damaging", odd, len(items))
    assert exc.value.message.startswith("row 7:") and exc.value.field == f"features.{flag}"

    with pytest.raises(InvalidInput) as exc:
        scorer.score_columns("damaging", {k: v for k, v in lists.items() if k != names[0]}, len(items))
    assert exc.value.code == "missing_feature" and exc.value.field == f"features.{names[0]}"
    with pytest.raises(InvalidInput) as exc:
        scorer.score_columns("damaging", {**lists, "typo": [1] * 40}, len(items))
    assert exc.value.code == "unknown_feature"
    with pytest.raises(InvalidInput):
        scorer.score_columns("damaging", {**lists, names[0]: lists[names[0]][:3]}, len(items))


def test_precache_fills_the_cache(scorer: Scorer, recorder: Recorder) -> None:
    items = edit_items(5)
    scorer.features.load_records("damaging", items, scorer.model("damaging").loaded.schema)
    ids = [item["id"] for item in items] + ["404"]
    assert scorer.precache(["damaging"], ids) == {"scored": 5, "cached": 0, "failed": {"unknown_item": 1}}
    assert scorer.precache(["damaging"], ids) == {"scored": 0, "cached": 5, "failed": {"unknown_item": 1}}
    before = recorder.hits
    scorer.score(["damaging"], [{"id": i} for i in ids[:5]])
    assert recorder.hits == before + 5


@pytest.mark.parametrize("n_classes", [2, 3])
def test_single_rows_take_lightgbms_fast_path_with_identical_probabilities(
    tmp_path: Path, n_classes: int
) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 5))
    X[:, 4] = rng.integers(0, 3, 400)
    X[::7, 1] = np.nan
    y = (X[:, 0] > 0).astype(int) + (n_classes == 3) * (X[:, 2] > 0.5)
    estimator = lightgbm.LGBMClassifier(n_estimators=30, verbose=-1).fit(X, y)
    predictor = load_model(tmp_path, save_model(estimator, tmp_path))
    fast = fast_predict(predictor)
    assert fast != predictor.predict_proba  # the fast path is taken
    rows = [fast(row[None, :]) for row in X]
    np.testing.assert_array_equal(np.vstack(rows), predictor.predict_proba(X))
    np.testing.assert_allclose(np.vstack(rows), estimator.predict_proba(X), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(fast(X), predictor.predict_proba(X))  # batches use the predictor
    with ThreadPoolExecutor(4) as pool:  # one FastConfig per thread
        threaded = list(pool.map(lambda row: fast(row[None, :]), X))
    np.testing.assert_array_equal(np.vstack(threaded), np.vstack(rows))


def test_score_command_scores_a_file(trained_home: Path, tmp_path: Path) -> None:
    data = trained_home.parent / "data" / "edits.test.tsv"  # no header row: the spec names the columns
    runner = CliRunner()
    home = ["--home", str(trained_home)]
    out = tmp_path / "scores.csv"
    # The shared home is left as it was: logging is tested on a copy below.
    result = runner.invoke(
        main,
        [*home, "score", "damaging", "--input", str(data), "--output", str(out), "--no-header", "--no-log"],
    )
    assert result.exit_code == 0, result.output
    assert "scored 500 rows with damaging@1" in result.stderr
    scored = pd.read_csv(out, dtype={"id": str})
    # The API's answer, column for field (ORES's true/false for a binary model).
    assert list(scored.columns) == ["id", "version", "prediction", "probability_true", "probability_false"]
    assert len(scored) == 500 and (scored["version"] == 1).all()
    raw = pd.read_csv(data, sep="\t", header=None, names=["rev_id", *FEATURES, "reverted"])
    first = {"id": str(raw["rev_id"][0]), "features": {name: raw[name][0].item() for name in FEATURES}}
    ws = Workspace.open(Settings.load(home=trained_home, environ={}))
    try:
        expected = Scorer(ws.registry, FeatureTable(ws.engine), MemoryCache(0)).score(["damaging"], [first])
    finally:
        ws.close()
    assert scored["id"][0] == first["id"]
    score = expected["scores"][first["id"]]["damaging"]
    assert scored["probability_true"][0] == pytest.approx(score["probability"]["true"], abs=1e-12)
    assert str(scored["prediction"][0]) == str(score["prediction"])  # a CSV reader may make it a bool

    parquet = tmp_path / "scores.parquet"
    args = [
        *home,
        "score",
        "damaging@1",
        "--input",
        str(data),
        "--output",
        str(parquet),
        "--no-header",
        "--no-log",
        "--keys",
        "classes",
    ]
    assert runner.invoke(main, args).exit_code == 0
    named = pd.read_parquet(parquet)
    assert set(named["prediction"]) <= {"True", "False"} and "probability_True" in named.columns
    bad = runner.invoke(
        main, [*home, "score", "damaging", "--input", str(data), "--output", str(tmp_path / "x.json")]
    )
    assert bad.exit_code == 1 and "error" in bad.stderr


def test_score_command_logs_its_scores_sampled_like_served_ones(trained_home: Path, tmp_path: Path) -> None:
    from assay.monitoring.frames import frame_of

    copy = tmp_path / "home"
    shutil.copytree(trained_home, copy)
    data = trained_home.parent / "data" / "edits.test.tsv"
    args = ["--home", str(copy), "score", "damaging", "--input", str(data), "--no-header"]
    result = CliRunner().invoke(main, [*args, "--output", str(tmp_path / "a.csv")])
    assert result.exit_code == 0, result.output
    assert "logged 500 rows" in result.stderr
    half = CliRunner(env={"ASSAY_LOG_SAMPLE": "0.5"}).invoke(
        main, [*args, "--output", str(tmp_path / "b.csv")]
    )
    assert half.exit_code == 0, half.output
    off = CliRunner(env={"ASSAY_LOG_SAMPLE": "0"}).invoke(main, [*args, "--output", str(tmp_path / "c.csv")])
    assert off.exit_code == 0 and "logged" not in off.stderr
    ws = Workspace.open(Settings.load(home=copy, environ={}))
    try:
        loaded = ws.registry.load(ws.registry.resolve("damaging"))
        logged = frame_of(loaded, ws.log, with_ids=True)
    finally:
        ws.close()
    scored = pd.read_csv(tmp_path / "a.csv", dtype={"id": str})
    assert 500 + 180 < len(logged) < 500 + 320  # all of the first run, about half of the second
    k = (logged.ids or []).index(scored["id"][0])
    assert logged.proba[k, loaded.classes.index("True")] == pytest.approx(
        scored["probability_true"][0], abs=1e-12
    )


def test_score_command_logs_a_folders_scores_sampled_like_a_files(trained_home: Path, tmp_path: Path) -> None:
    from assay.monitoring.frames import frame_of

    copy, source = tmp_path / "home", tmp_path / "in"
    shutil.copytree(trained_home, copy)
    source.mkdir()
    frame = edits_frame(3000, seed=8)
    for part in range(3):
        frame.iloc[part * 1000 : (part + 1) * 1000].to_parquet(source / f"part-{part}.parquet")
    args = ["--home", str(copy), "score", "damaging", "--input", str(source)]
    runs = [
        ({}, ["--output", str(tmp_path / "a")], "logged 3000 rows of damaging@1"),
        ({}, ["--output", str(tmp_path / "b"), "--no-log"], None),
        ({"ASSAY_LOG_SAMPLE": "0"}, ["--output", str(tmp_path / "c")], None),
        ({"ASSAY_LOG_SAMPLE": "0.5"}, ["--output", str(tmp_path / "d")], "logged 1"),
    ]
    for env, more, said in runs:
        result = CliRunner(env=env).invoke(main, [*args, *more])
        assert result.exit_code == 0, result.output
        assert "scored 3000 rows" in result.stderr
        assert (said in result.stderr) if said else "logged" not in result.stderr
    ws = Workspace.open(Settings.load(home=copy, environ={}))
    try:
        loaded = ws.registry.load(ws.registry.resolve("damaging"))
        logged = frame_of(loaded, ws.log, with_ids=True)
    finally:
        ws.close()
    assert 3000 + 1300 < len(logged) < 3000 + 1700  # all of the first run, about half of the last
    scored = pd.read_parquet(tmp_path / "a")
    ids = logged.ids or []
    assert sorted(ids[:3000]) == sorted(scored["id"]) == sorted(frame["rev_id"].astype(str))
    k = ids.index(scored["id"][0])
    assert logged.proba[k, loaded.classes.index("True")] == pytest.approx(
        scored["probability_true"][0], abs=1e-12
    )


@pytest.mark.redis
def test_precache_command_fills_the_shared_cache(trained_home: Path, redis_url: str, tmp_path: Path) -> None:
    data = trained_home.parent / "data" / "edits.test.tsv"
    runner = CliRunner(env={"ASSAY_REDIS_URL": redis_url})
    home = ["--home", str(trained_home)]
    assert (
        runner.invoke(main, [*home, "features", "load", "damaging", str(data), "--no-header"]).exit_code == 0
    )
    ids = pd.read_csv(data, sep="\t", header=None)[0].astype(str).tolist()[:50]
    id_file = tmp_path / "ids.txt"
    id_file.write_text("\n".join([*ids, "nope"]) + "\n")
    first = runner.invoke(main, [*home, "precache", "damaging", "--file", str(id_file), "--batch", "20"])
    assert first.exit_code == 0, first.output
    assert "scored 50, already cached 0, failed: unknown_item=1" in first.stderr
    again = runner.invoke(main, [*home, "precache", "damaging"], input="\n".join(ids[:10]))
    assert "scored 0, already cached 10" in again.stderr
    cache = RedisCache(redis_url, ttl_s=60)
    try:
        assert cache.get_many([score_key("damaging", 1, ids[0])])[0]["version"] == "1"
    finally:
        cache.clear()
        cache.close()


def test_precache_command_needs_a_shared_cache_or_a_server(trained_home: Path) -> None:
    result = CliRunner(env={"ASSAY_REDIS_URL": ""}).invoke(
        main, ["--home", str(trained_home), "precache", "damaging"], input="1\n"
    )
    assert result.exit_code == 1 and "--url" in result.stderr


def _break_card(ws: Workspace, version: int) -> None:
    tamper(ws, "damaging", version, "card.json", CARD_CRAFTS["operating point answer a list"][0])


def _threshold_as_text(ws: Workspace, version: int) -> None:
    tamper(ws, "damaging", version, "card.json", CARD_CRAFTS["decision_threshold 'abc'"][0])


def _break_row(ws: Workspace, version: int) -> None:
    with ws.engine.begin() as conn:
        conn.execute(
            sa.update(tables.versions)
            .where(tables.versions.c.model == "damaging", tables.versions.c.version == version)
            .values(summary={"roc_auc": "high"})
        )


def _delete_model_file(ws: Workspace, version: int) -> None:
    directory = ws.registry.get("damaging", version).directory
    next(p for p in directory.iterdir() if p.name.startswith("model.") and p.suffix != ".json").unlink()


BAD_VERSIONS = {
    "operating point answer a list": _break_card,
    "decision_threshold 'abc'": _threshold_as_text,
    "row with a bad summary": _break_row,
    "model file deleted": _delete_model_file,
}


@pytest.mark.parametrize("damage", sorted(BAD_VERSIONS))
def test_a_bad_version_never_stops_the_scorer(
    trained_workspace: Workspace, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    """A server starts with a bad version in production, answers for it with its error only,
    and keeps following every other alias (and this one, once it moves to a good version)."""
    ws = trained_workspace
    bad = add_version(ws, "damaging", alias="production")
    BAD_VERSIONS[damage](ws, bad)
    scorer = Scorer(ws.registry, FeatureTable(ws.engine), MemoryCache(100), preload=True)
    with caplog.at_level(logging.ERROR):
        scorer.refresh()  # what the server does at start-up: it must not raise
    assert f"cannot load damaging@{bad} for alias 'production'" in caplog.text
    item = edit_items(1)[0]
    scores = scorer.score(["damaging", "damaging@1"], [item])["scores"][item["id"]]
    assert scores["damaging"]["error"]["code"] == "artifact_invalid"
    assert scores["damaging"]["error"]["message"].startswith(f"damaging@{bad}: ")
    assert scores["damaging@1"]["version"] == "1"
    with pytest.raises(ArtifactError):
        scorer.score_one("damaging", item["id"])
    assert scorer.precache(["damaging"], ["1", "2"])["failed"] == {"artifact_invalid": 2}
    newer = add_version(ws, "quality", alias="production")
    scorer.refresh()
    assert scorer.model("quality").version == newer
    ws.registry.set_alias("damaging", "production", 1, actor="test", reason="back", forced=True, gates=[])
    scorer.refresh()
    assert scorer.score(["damaging"], [item])["scores"][item["id"]]["damaging"]["version"] == "1"


def test_a_server_starts_and_serves_with_a_bad_version_in_production(
    trained_workspace: Workspace, trained_home: Path
) -> None:
    bad = add_version(trained_workspace, "damaging", alias="production")
    _threshold_as_text(trained_workspace, bad)
    items = edit_items(3)
    with AppClient(create_app(Settings.load(home=trained_home, environ={}, alias_refresh_s=0.05))) as client:
        assert client.get("/readyz").status_code == 200
        response = client.post("/v1/scores", json={"models": ["damaging", "damaging@1"], "items": items})
        assert response.status_code == 200
        for item in items:
            scores = response.json()["scores"][item["id"]]
            assert "decision_threshold" in scores["damaging"]["error"]["message"]
            assert scores["damaging@1"]["version"] == "1"
        quality = {"id": "p1", "features": {"length": 12000.0, "refs": 30, "topic": "science"}}
        response = client.post("/v1/scores", json={"models": ["quality"], "items": [quality]})
        assert response.json()["scores"]["p1"]["quality"]["version"] == "1"


def _rss_kib() -> int:
    """This process's resident set, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc/self/status")
def test_loaded_models_stay_flat_over_promotions(trained_workspace: Workspace) -> None:
    """Twenty promotions followed by a scorer: the registry, which owns loaded models, holds the
    production version and a few recent ones, not every version ever loaded."""
    ws = trained_workspace
    scorer = Scorer(ws.registry, FeatureTable(ws.engine), MemoryCache(100))
    item = edit_items(1)[0]
    counts, rss = [], []
    for round_ in range(20):
        version = add_version(ws, "damaging", alias="production")
        scorer.refresh()
        assert scorer.score(["damaging"], [item])["scores"][item["id"]]["damaging"]["version"] == str(version)
        gc.collect()
        counts.append(len(ws.registry.loaded_versions()))
        if round_ >= 5:
            rss.append(_rss_kib())
    assert max(counts) <= LOAD_CACHE_SIZE + 2  # the cache, plus what the scorer serves (both models)
    assert counts[-1] == counts[5]
    assert sum(isinstance(o, LoadedModel) for o in gc.get_objects()) <= LOAD_CACHE_SIZE + 2
    # Roughly flat: each leaked version of these small models would cost about a megabyte.
    assert rss[-1] - rss[0] < 20 * 1024


def test_a_file_and_a_request_get_one_answer(scorer: Scorer) -> None:
    """``assay score`` (keys="api") writes what the API answers, field for field."""
    frame = edits_frame(50, seed=9)
    frame["rev_id"] = frame["rev_id"].astype(str)
    out = scorer.score_frame("damaging", frame, id_column="rev_id", keys="api")
    assert list(out.columns) == ["id", "version", "prediction", "probability_true", "probability_false"]
    scores = scorer.score(["damaging"], edit_items(50, seed=9))["scores"]
    for row in out.itertuples():
        expected = scores[row.id]["damaging"]
        assert row.prediction == expected["prediction"]
        assert row.probability_true == expected["probability"]["true"]
        assert row.probability_false == expected["probability"]["false"]


def test_a_file_with_an_unknown_category_is_refused_as_a_request_is() -> None:
    """Files score through ``encode_frame(strict=True)``: an unseen category is refused with the
    API's code, never scored as missing."""
    frame = pd.DataFrame({"kind": ["a", "b", "a"], "size": [1.0, 2.0, 3.0]})
    schema = FeatureSchema.learn(frame, {"kind": "categorical", "size": "numeric"}, source="t")
    bad = pd.DataFrame({"kind": ["a", None, "zzz"], "size": [1.0, 2.0, 3.0]})
    with pytest.raises(InvalidInput, match=r"row 2: feature 'kind' has no category 'zzz'") as info:
        schema.encode_frame(bad, source="scores.csv", strict=True)
    assert info.value.code == "unknown_category"
    with pytest.raises(InvalidInput) as request:
        schema.encode_record({"kind": "zzz", "size": 3.0})
    assert request.value.code == info.value.code
    # Held-out data in training keeps reading an unseen category as missing.
    assert np.isnan(schema.encode_frame(bad, source="test.csv")[2, 0])


def test_a_features_notice_drops_scores_in_other_processes_not_in_its_publisher(
    trained_workspace: Workspace,
) -> None:
    """The publisher dropped its own scores when it invalidated; its notice coming back must not
    drop the scores it computed since (they are of the new features), while every other scorer
    following the store drops its stale ones."""
    engine = trained_workspace.engine
    scorers = [Scorer(trained_workspace.registry, FeatureTable(engine), MemoryCache(100)) for _ in range(2)]
    publisher, other = scorers
    items = edit_items(1)
    publisher.features.load_records("damaging", items, publisher.model("damaging").loaded.schema)
    key = [score_key("damaging", 1, items[0]["id"])]
    watcher = NoticeWatcher(engine, poll_s=0.05)
    for scorer in scorers:
        scorer.follow(watcher)
        scorer.score(["damaging"], [{"id": items[0]["id"]}])
        assert scorer.cache.get_many(key)[0] is not None
    watcher.start()
    try:
        time.sleep(0.2)  # the watcher has read where the notices end
        publisher.invalidate("damaging", [items[0]["id"]])
        assert publisher.cache.get_many(key)[0] is None
        publisher.score(["damaging"], [{"id": items[0]["id"]}])  # scored again from the new features
        deadline = time.monotonic() + 10
        while other.cache.get_many(key)[0] is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert other.cache.get_many(key)[0] is None
        assert publisher.cache.get_many(key)[0] is not None
    finally:
        watcher.stop()
