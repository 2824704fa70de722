"""Crafted LightGBM text models: every one made from a real trained model by the change an
attacker (or a damaged disk) would make, and every one refused before LightGBM's C parser reads
it — at load, at import (one line, nothing written) and in a server that keeps serving the rest."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import lightgbm
import numpy as np
import pytest
from click.testing import CliRunner

from assay.cli import main
from assay.errors import ArtifactError
from assay.registry import artifacts, lightgbm_text, probe
from assay.registry.artifacts import load_model, save_model
from assay.registry.lightgbm_text import LightGBMShape, check_lightgbm_text
from assay.settings import Settings
from assay.web.app import create_app
from assay.workspace import Workspace
from tests.conftest import edits_frame
from tests.registry.lightgbm_unchecked import probe_unchecked
from tests.registry.test_artifacts import fit, make_data, make_reference, rewrite
from tests.registry.test_versions import _forge
from tests.servers import AppClient, edit_items

Craft = Callable[[str], str]
REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def models() -> dict[int, tuple[object, np.ndarray]]:
    """Real LightGBM models (binary and 3-class, with a categorical column) and their data."""
    out = {}
    for n_classes in (2, 3):
        X, y = make_data(n_classes)
        out[n_classes] = (fit("lightgbm", X, y), X)
    return out


def tree_block(text: str, index: int) -> tuple[int, int]:
    """Where tree ``index``'s block starts and ends in ``text``."""
    start = text.index(f"Tree={index}\n")
    end = text.find("\nTree=", start) + 1 or text.index("end of trees")
    return start, end


def resize(text: str) -> str:
    """``text`` with tree_sizes recomputed, as a forger who wants the blocks to line up writes it."""
    starts = [m.start() for m in re.finditer(r"^Tree=", text, flags=re.M)] + [text.index("end of trees")]
    sizes = " ".join(str(b - a) for a, b in pairwise(starts))
    return re.sub(r"^tree_sizes=.*$", f"tree_sizes={sizes}", text, count=1, flags=re.M)


def edit_tree(text: str, index: int, key: str, change: Callable[[list[str]], list[str]]) -> str:
    """``text`` with one array of one tree changed, and tree_sizes made to agree."""
    start, end = tree_block(text, index)
    block = text[start:end]
    line = re.search(rf"^{key}=(.*)$", block, flags=re.M)
    assert line is not None, key
    new = f"{key}={' '.join(change(line[1].split(' ') if line[1] else []))}"
    return resize(text[:start] + block.replace(line[0], new, 1) + text[end:])


def set_at(position: int, value: str) -> Callable[[list[str]], list[str]]:
    def change(values: list[str]) -> list[str]:
        values[position] = value
        return values

    return change


def drop_tree_sizes(text: str) -> str:
    return re.sub(r"^tree_sizes=.*\n", "", text, flags=re.M)


def far_split_feature(text: str) -> str:
    return edit_tree(text, 0, "split_feature", set_at(0, "1000000"))


def first_categorical_tree(text: str) -> int:
    at = text.index("\nnum_cat=1")
    return int(text[text.rindex("\nTree=", 0, at) + 6 : text.index("\n", text.rindex("\nTree=", 0, at) + 1)])


CRAFTS: dict[str, tuple[Craft, str]] = {
    # The file of the report: it imported, then a 3-item request segfaulted the server.
    "no tree_sizes, far split_feature": (
        lambda t: far_split_feature(drop_tree_sizes(t)),
        "the header lacks tree_sizes",
    ),
    "no tree_sizes": (drop_tree_sizes, "the header lacks tree_sizes"),
    "split_feature out of range": (far_split_feature, "split_feature 1000000 is not one of the model's 5"),
    "negative split_feature": (
        lambda t: edit_tree(t, 1, "split_feature", set_at(0, "-1")),
        "split_feature -1",
    ),
    "truncated tree": (lambda t: t[: tree_block(t, 3)[0] + 120] + "\n", "tree_sizes says tree 3"),
    "tree_sizes one byte off": (
        lambda t: re.sub(r"^tree_sizes=(\d+)", lambda m: f"tree_sizes={int(m[1]) + 1}", t, flags=re.M),
        "tree 0",
    ),
    "num_leaves disagrees": (
        lambda t: edit_tree(t, 0, "num_leaves", lambda v: [str(int(v[0]) + 1)]),
        "has 7 values, num_leaves=9 needs 8",
    ),
    "leaf_value too short": (lambda t: edit_tree(t, 2, "leaf_value", lambda v: v[:-1]), "leaf_value has 7"),
    "child index out of range": (
        lambda t: edit_tree(t, 0, "left_child", set_at(0, "7")),
        "child index 7 is out of range",
    ),
    "leaf index out of range": (
        lambda t: edit_tree(t, 0, "right_child", set_at(0, "-9")),
        "child index -9 is out of range",
    ),
    "child loop": (
        lambda t: edit_tree(t, 0, "left_child", set_at(1, "0")),
        "do not form a tree",
    ),
    "a leaf reached twice": (
        lambda t: edit_tree(t, 0, "right_child", lambda v: [v[0], *v[1:-1], v[0]]),
        "do not form a tree",
    ),
    "invalid decision_type": (
        lambda t: edit_tree(t, 0, "decision_type", set_at(0, "14")),
        "decision_type 14",
    ),
    "NaN threshold": (lambda t: edit_tree(t, 0, "threshold", set_at(0, "nan")), "threshold holds"),
    "infinite leaf value": (lambda t: edit_tree(t, 0, "leaf_value", set_at(0, "1e999")), "leaf_value holds"),
    "text in an array": (lambda t: edit_tree(t, 0, "internal_count", set_at(0, "12x")), "internal_count"),
    "cat_boundaries too short": (
        lambda t: edit_tree(t, first_categorical_tree(t), "cat_boundaries", lambda v: v[:-1]),
        "cat_boundaries must be",
    ),
    "cat_threshold too short": (
        lambda t: edit_tree(t, first_categorical_tree(t), "cat_threshold", lambda v: v[:-1]),
        "cat_threshold must be",
    ),
    "num_cat disagrees": (
        lambda t: edit_tree(t, first_categorical_tree(t), "num_cat", lambda v: ["2"]),
        "num_cat=2",
    ),
    "unknown tree key": (
        lambda t: resize(t.replace("shrinkage=", "evil=1\nshrinkage=", 1)),
        "unknown key 'evil'",
    ),
    "duplicate tree key": (
        lambda t: resize(t.replace("shrinkage=", "leaf_value=0\nshrinkage=", 1)),
        "leaf_value appears twice",
    ),
    "unsized trees": (lambda t: resize(t.replace("shrinkage=", "\nshrinkage=", 1)), "not a 'Tree=0' block"),
    "too few feature_names": (
        lambda t: re.sub(r"^feature_names=\S+ ", "feature_names=", t, flags=re.M),
        "feature_names",
    ),
    "max_feature_idx raised": (
        lambda t: t.replace("max_feature_idx=4", "max_feature_idx=1000000", 1),
        "max_feature_idx",
    ),
    "trees per round disagree": (
        lambda t: t.replace("num_tree_per_iteration=", "num_tree_per_iteration=2", 1),
        "num_tree_per_iteration",
    ),
    "regression objective": (
        lambda t: re.sub(r"^objective=.*$", "objective=regression", t, flags=re.M),
        "objective 'regression'",
    ),
    "objective without sigmoid": (
        lambda t: re.sub(r"^objective=.*$", "objective=binary", t, flags=re.M),
        "objective binary must carry exactly sigmoid",
    ),
    "parameter line without a colon": (
        lambda t: t.replace("[boosting: gbdt]", "[boosting]", 1),
        "parameters line",
    ),
    "parameter that breaks JSON": (
        lambda t: t.replace("[boosting: gbdt]", '[boosting: gb"dt]', 1),
        "parameters line",
    ),
    "parser section": (
        lambda t: t.replace(
            "\npandas_categorical:null\n", "\nparser:\nx\nend of parser\n\npandas_categorical:null\n"
        ),
        "something other than a parameters block",
    ),
    "pandas_categorical other than null": (
        lambda t: t.replace("pandas_categorical:null", 'pandas_categorical:["a"]'),
        "does not end with",
    ),
    "carriage returns": (lambda t: t.replace("\n", "\r\n"), "carriage returns"),
    # These made LightGBM segfault (-11) or abort (-6) while loading, before any prediction.
    "num_leaves 0": (
        lambda t: edit_tree(t, 0, "num_leaves", lambda v: ["0"]),
        "num_leaves must be an integer",
    ),
    "negative num_leaves": (
        lambda t: edit_tree(t, 0, "num_leaves", lambda v: ["-5"]),
        "num_leaves must be an integer",
    ),
    "num_cat without cat_boundaries": (
        lambda t: edit_tree(t, 0, "num_cat", lambda v: ["1"]),
        "keys missing or out of place: cat_boundaries, cat_threshold",
    ),
    "tree_sizes past the end": (
        lambda t: re.sub(r"^tree_sizes=\d+", "tree_sizes=9999999999", t, flags=re.M),
        "tree_sizes says tree 0 has 9999999999 bytes",
    ),
    "no classes": (
        lambda t: re.sub(r"^(num_class|num_tree_per_iteration)=\d+$", r"\1=0", t, flags=re.M),
        "num_class must be an integer from 1",
    ),
    "a line without '='": (lambda t: t.replace("label_index=0\n", "label_index=0\nhello\n", 1), "'hello'"),
}


def _craft_text(models: dict, n_classes: int, craft: Craft) -> tuple[str, str]:
    estimator, _ = models[n_classes]
    text = estimator.booster_.model_to_string()
    crafted = craft(text)
    assert crafted != text
    return text, crafted


@pytest.mark.parametrize("n_classes", [2, 3])
def test_real_models_pass_the_reader(models, n_classes):
    estimator, X = models[n_classes]
    shape = check_lightgbm_text(estimator.booster_.model_to_string().encode())
    assert (shape.n_features, shape.num_class) == (X.shape[1], 1 if n_classes == 2 else 3)
    assert shape.n_trees == estimator.booster_.num_trees()


def test_a_text_that_passed_is_not_read_again_and_one_refused_is_refused_every_time(models, monkeypatch):
    estimator, _ = models[2]
    text = estimator.booster_.model_to_string()
    first = check_lightgbm_text(text.encode())
    reads = []
    monkeypatch.setattr(lightgbm_text, "_check", lambda data: reads.append(data) or first)
    assert check_lightgbm_text(text.encode()) == first and reads == []  # the same bytes: remembered
    monkeypatch.undo()
    crafted = text.replace("num_leaves=", "num_leaves=9", 1)
    for _ in range(2):
        with pytest.raises(ArtifactError):
            check_lightgbm_text(crafted.encode())


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("name", sorted(CRAFTS))
def test_a_crafted_model_never_reaches_lightgbm(models, tmp_path, monkeypatch, n_classes, name):
    craft, message = CRAFTS[name]
    estimator, X = models[n_classes]
    manifest = save_model(estimator, tmp_path, reference=make_reference(X))
    _, crafted = _craft_text(models, n_classes, craft)
    manifest = rewrite(tmp_path, manifest, "model.lgb.txt", crafted.encode())

    def parser_must_not_run(*args, **kwargs):
        raise AssertionError("LightGBM's parser was handed a crafted model")

    monkeypatch.setattr(lightgbm, "Booster", parser_must_not_run)
    with pytest.raises(ArtifactError, match=r"^model\.lgb\.txt is not a LightGBM text model") as info:
        load_model(tmp_path, manifest)
    assert re.search(re.escape(message) if "(" in message else message, info.value.message), (
        info.value.message
    )
    assert "\n" not in info.value.message


def segfaulting(text: str) -> str:
    """The reported file, with the split feature farther out: LightGBM dies reading it."""
    return edit_tree(drop_tree_sizes(text), 0, "split_feature", set_at(0, "100000000"))


def aborting(text: str) -> str:
    """A categorical count without its categories: LightGBM aborts while loading it."""
    return edit_tree(text, 0, "num_cat", lambda v: ["1"])


@pytest.mark.parametrize(("craft", "signal"), [(segfaulting, -11), (aborting, -6)], ids=["segfault", "abort"])
def test_such_files_really_kill_the_process_that_loads_them(models, tmp_path, craft, signal):
    """The crafts are no hypothesis: handed to LightGBM as they are, they kill the process."""
    _, crafted = _craft_text(models, 2, craft)
    (tmp_path / "crafted.txt").write_text(crafted)
    script = f"from tests.registry.lightgbm_unchecked import load_unchecked; load_unchecked({str(tmp_path / 'crafted.txt')!r})"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120, cwd=REPOSITORY)
    assert result.returncode == signal


def test_a_model_with_a_mismatched_width_is_refused_before_parsing(models, tmp_path):
    estimator, X = models[2]
    manifest = save_model(estimator, tmp_path, reference=make_reference(X))
    other = fit("lightgbm", np.hstack([X, X[:, :1]]), make_data(2)[1])
    manifest = rewrite(tmp_path, manifest, "model.lgb.txt", other.booster_.model_to_string().encode())
    with pytest.raises(ArtifactError, match=r"does not match model\.json: 6 features"):
        load_model(tmp_path, manifest)


def test_save_refuses_a_model_it_could_not_load(models, tmp_path, monkeypatch):
    estimator, X = models[2]
    written = lightgbm.Booster.model_to_string
    monkeypatch.setattr(
        lightgbm.Booster, "model_to_string", lambda self, **kw: drop_tree_sizes(written(self))
    )
    with pytest.raises(ArtifactError, match="tree_sizes"):
        save_model(estimator, tmp_path / "v", reference=make_reference(X))
    assert not (tmp_path / "v" / "model.lgb.txt").exists()


@pytest.mark.parametrize(
    "params", [{"linear_tree": True}, {"boosting_type": "rf", "subsample": 0.8, "subsample_freq": 1}]
)
def test_other_lightgbm_layouts_load(tmp_path, params):
    X, y = make_data(2)
    X = np.nan_to_num(X)  # linear trees refuse missing values
    estimator = lightgbm.LGBMClassifier(n_estimators=5, verbose=-1, **params).fit(X, y)
    manifest = save_model(estimator, tmp_path, reference=make_reference(X))
    np.testing.assert_allclose(
        load_model(tmp_path, manifest).predict_proba(X)[:, 1], estimator.predict_proba(X)[:, 1]
    )


# --------------------------------------------------------------------------- in a workspace


def add_lightgbm_version(ws: Workspace, *, craft: Craft | None = None, alias: str | None = None) -> int:
    """A new version of ``damaging`` whose model is a real LightGBM model (its text crafted by
    ``craft``, the manifest hashing what was written, as a store written past the registry would)."""
    record = ws.registry.resolve("damaging")
    schema = ws.registry.load(record).schema
    frame = edits_frame(600, seed=5)
    X = schema.encode_frame(frame, source="edits")
    estimator = lightgbm.LGBMClassifier(n_estimators=20, num_leaves=8, verbose=-1)
    estimator.fit(X, frame["reverted"].to_numpy().astype(int))
    staging = ws.registry.staging_dir("damaging")
    for path in record.directory.iterdir():
        if not path.name.startswith("model."):
            shutil.copy2(path, staging / path.name)
    save_model(estimator, staging, reference=np.nanmedian(X, axis=0))
    if craft is not None:
        model_file = staging / "model.lgb.txt"
        model_file.write_text(craft(model_file.read_text()))
    new = ws.registry.add(
        name="damaging",
        task="binary",
        staging=staging,
        candidate="lightgbm",
        spec=record.spec,
        spec_hash=record.spec_hash,
        data_fingerprint=record.data_fingerprint,
        summary=dict(record.summary),
        lineage=dict(record.lineage),
    )
    if alias is not None:
        ws.registry.set_alias(
            "damaging", alias, new.version, actor="test", reason="test", forced=True, gates=[]
        )
    return new.version


def run(home: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--home", str(home), *args], catch_exceptions=False)
    return result.exit_code, result.output


def assert_nothing_written(home: Path) -> None:
    code, out = run(home, "models")
    assert code == 0 and out.strip() == "no models yet"
    assert [p for p in (home / "artifacts").rglob("*") if not p.is_dir()] == []


@pytest.fixture
def lightgbm_bundle(trained_workspace: Workspace, tmp_path: Path) -> Path:
    """An exported bundle of a LightGBM version of ``damaging``."""
    version = add_lightgbm_version(trained_workspace)
    bundle = tmp_path / "lightgbm.assay"
    trained_workspace.registry.export(f"damaging@{version}", bundle)
    return bundle


def craft_bundle(bundle: Path, out: Path, craft: Craft) -> Path:
    def change(record: dict, files: dict[str, bytes]) -> None:
        files["model.lgb.txt"] = craft(files["model.lgb.txt"].decode()).encode()

    return _forge(bundle, out, change)


def test_a_lightgbm_bundle_imports(lightgbm_bundle: Path, tmp_path: Path) -> None:
    code, out = run(tmp_path / "other", "import", str(lightgbm_bundle))
    assert code == 0 and "imported damaging@2" in out, out  # keeps the number it was exported with


@pytest.mark.parametrize(
    "name",
    [
        "no tree_sizes, far split_feature",
        "split_feature out of range",
        "truncated tree",
        "num_leaves disagrees",
        "child index out of range",
        "num_cat without cat_boundaries",
    ],
)
def test_import_refuses_a_crafted_model_in_one_line(lightgbm_bundle: Path, tmp_path: Path, name: str) -> None:
    forged = craft_bundle(lightgbm_bundle, tmp_path / "forged.assay", CRAFTS[name][0])
    code, out = run(tmp_path / "other", "import", str(forged))
    assert code == 1 and "Traceback" not in out and out.count("\n") == 1, out
    assert out.startswith("error: bundle forged.assay: model.lgb.txt is not a LightGBM text model"), out
    assert_nothing_written(tmp_path / "other")


@pytest.mark.parametrize(("craft", "signal"), [(segfaulting, "SIGSEGV"), (aborting, "SIGABRT")])
def test_a_model_that_still_crashes_the_loader_is_refused_not_fatal(
    lightgbm_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, craft: Craft, signal: str
) -> None:
    """Belt and braces: were the strict reader to miss a file that crashes LightGBM, import
    loads it in a throwaway process first, so the crash is a refusal, not the end of `assay import`."""
    monkeypatch.setattr(artifacts, "check_lightgbm_text", lambda data: LightGBMShape("binary", 1, 1, 9, 20))
    monkeypatch.setattr(probe, "_probe", probe_unchecked)
    forged = craft_bundle(lightgbm_bundle, tmp_path / "forged.assay", craft)
    code, out = run(tmp_path / "other", "import", str(forged))
    assert code == 1 and out.count("\n") == 1, out
    assert f"refused: model file model.lgb.txt crashed the loader ({signal})" in out
    assert_nothing_written(tmp_path / "other")


def test_a_crafted_version_in_the_store_fails_its_own_requests_only(
    trained_workspace: Workspace, trained_home: Path
) -> None:
    """The reported attack, end to end: a crafted LightGBM version named in an unauthenticated
    request for three items. The server answers, with an error for that model, and goes on."""
    bad = add_lightgbm_version(trained_workspace, craft=CRAFTS["no tree_sizes, far split_feature"][0])
    good = add_lightgbm_version(trained_workspace)
    items = edit_items(3)
    settings = Settings.load(home=trained_home, environ={}, alias_refresh_s=0.05)
    with AppClient(create_app(settings)) as client:
        response = client.post("/v1/scores", json={"models": [f"damaging@{bad}", "damaging"], "items": items})
        assert response.status_code == 200, response.text
        for item in items:
            scores = response.json()["scores"][item["id"]]
            assert scores[f"damaging@{bad}"]["error"]["code"] == "artifact_invalid"
            message = scores[f"damaging@{bad}"]["error"]["message"]
            assert message.startswith(f"damaging@{bad}: model.lgb.txt is not a LightGBM text model"), message
            assert scores["damaging"]["version"] == "1"
        again = client.post("/v1/scores", json={"models": [f"damaging@{good}"], "items": items})
        assert (
            again.status_code == 200 and again.json()["scores"][items[0]["id"]][f"damaging@{good}"]["version"]
        )
        assert client.get("/readyz").status_code == 200
