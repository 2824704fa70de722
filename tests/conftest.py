"""Shared fixtures: workspaces in temporary folders, trained models, optional real servers.

Models are trained once per test session (training is the slow part) into a
template home; each test that needs one gets its own copy, so tests can move
aliases, add versions and write labels without seeing each other.
"""

from __future__ import annotations

import os
import shutil
import tomllib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from assay.modelling.spec_file import load_spec
from assay.modelling.training import train
from assay.settings import Settings
from assay.store import db
from assay.store.log_files import ParquetLog
from assay.store.log_store import LogStore
from assay.store.log_tables import StoreLog
from assay.workspace import Workspace
from tests.browser import chromium

EDITQUALITY = Path(__file__).resolve().parents[2] / "shared" / "data" / "editquality"
# The data's columns, as the example spec names them (one list for the whole repository).
EDITQUALITY_COLUMNS: list[str] = tomllib.loads(
    (Path(__file__).resolve().parents[1] / "examples" / "editquality.toml").read_text()
)["data"]["columns"]
EDITQUALITY_FEATURES = [c for c in EDITQUALITY_COLUMNS if c not in ("rev_id", "reverted")]


# Tests that start servers or processes, drive a browser, fuzz, or train on real data: the
# fast developer loop (`pytest -m "not slow"`) leaves them out; CI runs everything.
SLOW_MODULES = frozenset(
    {"test_ray_engine", "test_review_durability", "test_openapi_fuzz", "test_review_browser", "test_readme"}
)
SLOW_TESTS = frozenset(
    {
        "test_editquality_default_candidates_meet_the_bar",
        "test_one_core_or_two_train_the_same_model_with_progress_in_order",
        "test_quickstart_trains_on_shipped_data",
        "test_a_100000_item_campaign_stays_fast",
        "test_a_login_flood_does_not_starve_the_server",
        "test_a_forget_killed_mid_way_leaves_no_alias_on_held_data_and_resumes",
        "test_a_delivery_whose_sender_was_killed_is_taken_over_after_the_timeout",
        "test_a_retrain_killed_at_any_point_leaves_the_registry_as_it_was",
        "test_the_loop_keeps_the_good_model_and_promotes_a_better_one",
        "test_a_hung_redis_costs_one_timeout_then_nothing",
        "test_deletions_missed_beyond_the_cap_clear_the_whole_cache",
        "test_processes_writing_side_by_side_never_share_a_part",
        "test_a_writer_killed_mid_write_leaves_only_whole_parts",
    }
)


def workspace_environ() -> dict[str, str]:
    """Settings every test workspace gets: ASSAY_TEST_LOG_BACKEND=parquet runs a test folder with
    the prediction log in Parquet files (the store's tables otherwise)."""
    backend = os.environ.get("ASSAY_TEST_LOG_BACKEND")
    return {"ASSAY_LOG_BACKEND": backend} if backend else {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
        if module in SLOW_MODULES or getattr(item, "originalname", item.name) in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


def edits_frame(n: int, seed: int = 0) -> pd.DataFrame:
    """Synthetic edits shaped like the editquality data (same columns, a learnable 'reverted')."""
    rng = np.random.default_rng(seed)
    anon = rng.random(n) < 0.3
    bot = ~anon & (rng.random(n) < 0.05)
    frame = pd.DataFrame(
        {
            "rev_id": np.arange(100_000, 100_000 + n),
            "longest_repeated_char_added": rng.poisson(1.5, n),
            "words_added": rng.poisson(20, n),
            "words_removed": rng.poisson(8, n),
            "badwords_prop_delta_sum": np.round(rng.exponential(0.2, n) * (rng.random(n) < 0.2), 4),
            "informals_prop_delta_sum": np.round(rng.exponential(0.2, n) * (rng.random(n) < 0.2), 4),
            "non_stopword_prop_delta_sum": np.round(rng.normal(0, 1, n), 4),
            "user_is_anon": anon,
            "user_is_bot_or_sysop": bot,
            "user_seconds_since_registration": np.where(anon, 0, rng.integers(0, 10**8, n)),
        }
    )
    logit = (
        -3.0
        + 2.0 * anon
        - 2.0 * bot
        + 4.0 * frame["badwords_prop_delta_sum"]
        + 0.4 * frame["longest_repeated_char_added"]
        - 0.02 * frame["words_added"]
    )
    frame["reverted"] = rng.random(n) < 1 / (1 + np.exp(-logit))
    return frame


BINARY_SPEC = """\
name = "damaging"
description = "Is this edit damaging?"
seed = 0

[data]
train = "edits.train.tsv"
test = "edits.test.tsv"
header = false
columns = {columns}
id = "rev_id"
label = "reverted"
positive = "True"

[features]
kinds = {{ user_is_anon = "boolean", user_is_bot_or_sysop = "boolean" }}
include = {features}
sensitive = ["user_is_anon"]

[training]
candidates = ["logistic_regression", "lightgbm"]
folds = 3
[training.params.lightgbm]
n_estimators = 60
learning_rate = 0.1

[gates]
minimum = {{ roc_auc = 0.6 }}
max_regression = {{ roc_auc = 0.05 }}
fairness = {{ equalized_odds_difference = 0.99 }}

[operating_points]
likelybad = "maximum recall @ precision >= 0.6"
verylikelybad = "maximum recall @ precision >= 0.9"
"""

MULTICLASS_SPEC = """\
name = "quality"
description = "Which of three quality classes is this article in?"
seed = 0

[data]
train = "articles.csv"
id = "page_id"
label = "quality"
test_size = 0.3

[features]
kinds = {{ topic = "categorical" }}

[training]
candidates = ["logistic_regression", "hist_gradient_boosting"]
folds = 3
[training.params.hist_gradient_boosting]
max_iter = 40
"""


def write_binary_spec(folder: Path, n_train: int = 1200, n_test: int = 500) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    frame = edits_frame(n_train + n_test, seed=1)
    frame.iloc[:n_train].to_csv(folder / "edits.train.tsv", sep="\t", header=False, index=False)
    frame.iloc[n_train:].to_csv(folder / "edits.test.tsv", sep="\t", header=False, index=False)
    spec = folder / "damaging.toml"
    spec.write_text(
        BINARY_SPEC.format(
            columns=repr(EDITQUALITY_COLUMNS).replace("'", '"'),
            features=repr(EDITQUALITY_FEATURES).replace("'", '"'),
        )
    )
    return spec


def write_multiclass_spec(folder: Path, n: int = 900) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    length = rng.gamma(2.0, 2000.0, n)
    refs = rng.poisson(length / 500)
    topic = rng.choice(["science", "sport", "history", "art"], n)
    score = np.log1p(length) / 2 + refs / 10 + (topic == "science") * 0.5 + rng.normal(0, 0.5, n)
    quality = np.where(score < 4.6, "stub", np.where(score < 5.6, "start", "good"))
    frame = pd.DataFrame(
        {
            "page_id": [f"p{i}" for i in range(n)],
            "length": length.round(1),
            "refs": refs,
            "topic": topic,
            "quality": quality,
        }
    )
    frame.to_csv(folder / "articles.csv", index=False)
    spec = folder / "quality.toml"
    spec.write_text(MULTICLASS_SPEC.format())
    return spec


def lightgbm_only(spec: Path) -> Path:
    """The binary edits spec with LightGBM its only candidate (quicker to train)."""
    text = spec.read_text()
    spec.write_text(
        text.replace('candidates = ["logistic_regression", "lightgbm"]', 'candidates = ["lightgbm"]')
    )
    return spec


def trained_root(root: Path, *specs: Path, **train_options: Any) -> Path:
    """``root``, with each spec trained once in a home at ``root / 'home'``."""
    ws = Workspace.open(Settings.load(home=root / "home", environ=workspace_environ()))
    try:
        for spec in specs:
            train(load_spec(spec), ws.registry, **train_options)
    finally:
        ws.close()
    return root


def copied_home(template: Path, folder: Path) -> Path:
    """The home of a private copy of a trained root in ``folder`` (its data beside it in
    ``home.parent / 'data'``)."""
    shutil.copytree(template, folder)
    return folder / "home"


@contextmanager
def copied_workspace(template: Path, tmp_path: Path) -> Iterator[Workspace]:
    """A workspace on a private copy of a trained root (its data beside it in ``home.parent / 'data'``)."""
    home = copied_home(template, tmp_path / "copy")
    ws = Workspace.open(Settings.load(home=home, environ=workspace_environ()))
    try:
        yield ws
    finally:
        ws.close()


@pytest.fixture(scope="session")
def trained_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with `damaging` (binary, version 1 = production) and `quality` (3 classes) trained."""
    root = tmp_path_factory.mktemp("template")
    return trained_root(root, write_binary_spec(root / "data"), write_multiclass_spec(root / "data"))


@pytest.fixture
def trained_home(trained_template: Path, tmp_path: Path) -> Path:
    """A private copy of the trained home (data files beside it in ``home.parent / 'data'``)."""
    return copied_home(trained_template, tmp_path / "copy")


@pytest.fixture
def trained_workspace(trained_home: Path) -> Iterator[Workspace]:
    ws = Workspace.open(Settings.load(home=trained_home, environ=workspace_environ()))
    yield ws
    ws.close()


def write_mitigated_spec(
    folder: Path, mitigation: str, *, name: str = "damaging", as_feature: bool = True
) -> Path:
    """The binary spec with ``[fairness] mitigation`` by ``user_is_anon``; ``as_feature=False``
    leaves that column out of the features (it stays a sensitive column of the data)."""
    spec = write_binary_spec(folder, n_train=1000, n_test=600)
    text = spec.read_text().replace('name = "damaging"', f'name = "{name}"')
    if not as_feature:
        include = next(line for line in text.splitlines() if line.startswith("include = "))
        text = text.replace(include, include.replace('"user_is_anon", ', ""))
    spec = spec.with_name(f"{name}.toml")
    spec.write_text(
        text
        + f'\n[fairness]\nmitigation = "{mitigation}"\nconstraint = "demographic_parity"\nbootstrap = 50\n'
    )
    return spec


@pytest.fixture(scope="session")
def mitigated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with per-group thresholds by ``user_is_anon``: ``fair`` (a feature too) and
    ``fairctx`` (not a feature: requests declare it); data files beside it in ``data``."""
    root = tmp_path_factory.mktemp("mitigated")
    fair = write_mitigated_spec(root / "data", "thresholds", name="fair")
    declared = write_mitigated_spec(root / "data", "thresholds", name="fairctx", as_feature=False)
    return trained_root(root, fair, declared)


@pytest.fixture
def mitigated_home(mitigated_template: Path, tmp_path: Path) -> Path:
    """A private copy of the mitigated home (data files beside it in ``home.parent / 'data'``)."""
    return copied_home(mitigated_template, tmp_path / "mitigated")


@pytest.fixture
def mitigated_workspace(mitigated_home: Path) -> Iterator[Workspace]:
    ws = Workspace.open(Settings.load(home=mitigated_home, environ={}))
    yield ws
    ws.close()


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    """An empty workspace in a temporary folder (SQLite)."""
    ws = Workspace.open(Settings.load(home=tmp_path / "home", environ=workspace_environ()))
    yield ws
    ws.close()


@pytest.fixture
def empty_postgres_url() -> Iterator[str]:
    """A fresh, empty database on a real PostgreSQL server (started by .ci/run), dropped afterwards.

    ASSAY_TEST_POSTGRES_URL names a role that may create databases; skips when it is not set.
    """
    base = os.environ.get("ASSAY_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("ASSAY_TEST_POSTGRES_URL is not set")
    url = sa.engine.make_url(base)
    name = f"assay_t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


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


def log_rows(n: int, d: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows of ``d`` features (one missing value, which must survive a trip through the
    log) and their two-class probabilities."""
    g = np.random.default_rng(seed)
    X = g.normal(size=(n, d))
    X[0, 1] = np.nan
    p = g.random(n)
    return X, np.column_stack([1 - p, p])


@pytest.fixture(params=["store", "parquet"])
def log_store(request: pytest.FixtureRequest, store: Engine, tmp_path: Path) -> LogStore:
    """An empty log store of each backend: the store's tables (of ``store``) or Parquet files."""
    return StoreLog(store) if request.param == "store" else ParquetLog(tmp_path / "log")


@pytest.fixture
def postgres_url(empty_postgres_url: str) -> str:
    """``empty_postgres_url`` migrated, as an operator does once per release (`assay db upgrade`):
    servers and commands do not migrate a PostgreSQL store themselves."""
    engine = db.create_engine(empty_postgres_url)
    db.upgrade(engine)
    engine.dispose()
    return empty_postgres_url


@pytest.fixture
def redis_url() -> str:
    """A real Redis server's URL (started by .ci/run); skips when none is configured."""
    url = os.environ.get("ASSAY_TEST_REDIS_URL")
    if not url:
        pytest.skip("ASSAY_TEST_REDIS_URL is not set")
    return url


@pytest.fixture
def editquality() -> Path:
    """The editquality demo data folder; skips cleanly when it is absent."""
    if not (EDITQUALITY / "enwiki.features_reverted.training.20k_2015.tsv.bz2").is_file():
        pytest.skip("../shared/data/editquality is not present")
    return EDITQUALITY


@pytest.fixture
def browser() -> Iterator[Any]:
    """Debian's headless Chromium, launched for one test (skipped where it is not installed)."""
    yield from chromium()
