"""Crafted LightGBM text models: every one made from a real trained model by the change an
attacker (or a damaged disk) would make, and every one refused before LightGBM's C parser reads
it — at load, at import (one line, nothing written) and in a server that keeps serving the rest."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from itertools import pairwise

import lightgbm
import numpy as np
import pytest

from assay.errors import ArtifactError
from assay.registry import artifacts
from assay.registry.artifacts import load_model, save_model
from assay.registry.lightgbm_text import check_lightgbm_text
from tests.registry.test_artifacts import fit, make_data, make_reference, rewrite

Craft = Callable[[str], str]


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

    monkeypatch.setattr(artifacts.lightgbm, "Booster", parser_must_not_run)
    with pytest.raises(ArtifactError, match=r"^model\.lgb\.txt is not a LightGBM text model") as info:
        load_model(tmp_path, manifest)
    assert re.search(re.escape(message) if "(" in message else message, info.value.message), (
        info.value.message
    )
    assert "\n" not in info.value.message


def test_the_reported_kind_of_model_really_crashes_lightgbm(models, tmp_path):
    """The first craft is no hypothetical: handed to LightGBM as is, it reads outside the row
    (split_feature 1000000 gives garbage probabilities; a farther one kills the process)."""
    _, crafted = _craft_text(
        models, 2, lambda t: edit_tree(drop_tree_sizes(t), 0, "split_feature", set_at(0, "100000000"))
    )
    (tmp_path / "crafted.txt").write_text(crafted)
    script = textwrap.dedent(
        f"""
        import lightgbm, numpy as np
        booster = lightgbm.Booster(model_file={str(tmp_path / "crafted.txt")!r})
        booster.predict(np.zeros((500, 5)), num_threads=1)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert result.returncode < 0, "expected LightGBM to die of a signal on this file"


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
