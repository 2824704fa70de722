"""scikit-learn tree ensembles written exactly as LightGBM text models.

A ``RandomForestClassifier`` or ``HistGradientBoostingClassifier`` becomes a LightGBM text model
that computes the same numbers: the same splits on the same columns, the same leaf values summed
in the same order. Served by LightGBM's predictor, one row costs tens of microseconds instead of
the estimator's millisecond of input checks and thread start-up, and LightGBM's TreeSHAP gives
exact contributions for free. What needs care:

* scikit-learn's trees compare ``float32(x) <= t`` (``X`` is cast to float32), LightGBM compares
  the float64 value: a threshold becomes the largest float64 whose float32 rounding still goes
  left;
* missing values (NaN) follow each node's ``missing_go_to_left``; LightGBM sends NaN to the
  default side of a "NaN"-type numeric split, and always right at a categorical split, so a
  categorical split whose missing values go left is written with its sides swapped and the
  complementary category set;
* HistGradientBoosting reorders columns (categorical first) and maps category values to ordinal
  codes through its ``_preprocessor``: splits are mapped back to the model's own columns and
  category codes, and a code it never saw goes where missing values go, as in scikit-learn;
* HistGradientBoosting's baseline is added to every leaf of the first tree of each class, which
  adds in the order scikit-learn adds (baseline + tree 0 + tree 1 ...);
* a forest's probabilities are the average of its trees' leaf fractions: LightGBM's
  ``average_output`` over raw scores (the predictor reads raw scores for such a model).

The text goes through LightGBM's own parser and writer once, so the result has exactly the shape
LightGBM writes (and that ``assay.registry.lightgbm_text`` checks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# decision_type bits (LightGBM tree.h): categorical, default left, missing type NaN (2 << 2).
_CATEGORICAL = 1
_DEFAULT_LEFT = 2
_MISSING_NAN = 2 << 2


@dataclass
class _Split:
    feature: int
    threshold: float = 0.0  # numeric splits
    categories: list[int] = field(default_factory=list)  # categorical splits: codes that go left
    categorical: bool = False
    default_left: bool = False
    left: Any = None  # _Split | _Leaf
    right: Any = None
    count: int = 0


@dataclass
class _Leaf:
    value: float
    count: int


class NotCompilable(Exception):
    """The estimator uses something the LightGBM text format cannot say exactly."""


def forest_text(forest: Any) -> str:
    """A fitted ``RandomForestClassifier`` as LightGBM text, to be predicted as raw (averaged) scores."""
    n_classes = len(forest.classes_)
    if getattr(forest, "n_outputs_", 1) != 1:
        raise NotCompilable("multi-output forests")
    classes = [1] if n_classes == 2 else list(range(n_classes))
    trees = [_sklearn_tree(est.tree_, k) for est in forest.estimators_ for k in classes]
    return _model_text(trees, n_classes, int(forest.n_features_in_), average=True, categorical={})


def boosting_text(model: Any) -> str:
    """A fitted ``HistGradientBoostingClassifier`` as LightGBM text (its probabilities as LightGBM's)."""
    n_classes = len(model.classes_)
    columns, categories = _hgb_columns(model)
    baseline = np.asarray(model._baseline_prediction, dtype=np.float64).reshape(-1)
    trees = []
    for i, predictors in enumerate(model._predictors):
        for k, predictor in enumerate(predictors):
            trees.append(_hgb_tree(predictor, columns, categories, float(baseline[k]) if i == 0 else None))
    cats = {j: sorted(int(c) for c in codes) for j, codes in categories.items()}
    return _model_text(trees, n_classes, int(model.n_features_in_), average=False, categorical=cats)


# --- scikit-learn's trees -------------------------------------------------------------


def _below_in_float32(t: float) -> float:
    """The largest float64 ``x`` with ``float32(x) <= t`` (scikit-learn's test on a float32 copy)."""
    t32 = np.float32(t)
    if float(t32) > t:
        t32 = np.nextafter(t32, np.float32(-np.inf))
    up = np.nextafter(t32, np.float32(np.inf))
    if not np.isfinite(up):
        return float(np.finfo(np.float64).max)
    middle = (float(t32) + float(up)) / 2.0  # exact in float64
    # A value exactly half-way rounds to the even neighbour: left when t32 is the even one.
    even = int(t32.view(np.uint32)) % 2 == 0
    return middle if even else float(np.nextafter(middle, -np.inf))


def _finite(t: float) -> float:
    """An infinite threshold (HistGradientBoosting's "every value left, missing right") as the
    largest float, which sends every finite value the same way (assay serves no infinities)."""
    return float(np.clip(t, -np.finfo(np.float64).max, np.finfo(np.float64).max))


def _sklearn_tree(tree: Any, k: int) -> Any:
    """One class's output of a fitted ``sklearn.tree._tree.Tree``: leaf values are class fractions."""
    value = np.asarray(tree.value, dtype=np.float64)[:, 0, :]
    missing_left = getattr(tree, "missing_go_to_left", None)

    def node(i: int) -> Any:
        count = int(tree.n_node_samples[i])
        if tree.children_left[i] == -1:
            # The leaf's stored class fraction is what DecisionTreeClassifier.predict_proba returns.
            return _Leaf(float(value[i, k]), count)
        return _Split(
            feature=int(tree.feature[i]),
            threshold=_below_in_float32(float(tree.threshold[i])),
            default_left=bool(missing_left[i]) if missing_left is not None else False,
            left=node(int(tree.children_left[i])),
            right=node(int(tree.children_right[i])),
            count=count,
        )

    return node(0)


def _hgb_columns(model: Any) -> tuple[list[int], dict[int, list[float]]]:
    """(model column of each preprocessed column, {model column: category value of each ordinal code})."""
    n = int(model.n_features_in_)
    pre = getattr(model, "_preprocessor", None)
    if pre is None:
        if model.is_categorical_ is not None and np.any(model.is_categorical_):
            raise NotCompilable("categorical features without an ordinal encoder")
        return list(range(n)), {}
    columns: list[int] = []
    categories: dict[int, list[float]] = {}
    for name, transformer, selected in pre.transformers_:
        picked = np.arange(n)[selected]
        if name == "encoder":
            for j, codes in zip(picked, transformer.categories_, strict=True):
                # NaN, when seen, is listed last and encoded as missing, not as an ordinal code.
                categories[int(j)] = [float(c) for c in codes if not np.isnan(c)]
        elif name == "remainder" and transformer == "drop":
            continue
        columns.extend(int(j) for j in picked)
    if len(columns) != n:
        raise NotCompilable("a preprocessor that drops or adds columns")
    for j, codes in categories.items():
        if any(c != int(c) or c < 0 for c in codes):
            raise NotCompilable(f"column {j} has categories that are not codes")
    return columns, categories


def _hgb_tree(
    predictor: Any,
    columns: list[int],
    categories: dict[int, list[float]],
    baseline: float | None,
) -> Any:
    """One HistGradientBoosting predictor's tree over the model's own columns and category codes."""
    nodes = predictor.nodes
    bitsets = np.asarray(predictor.raw_left_cat_bitsets)

    def left_codes(node: Any, column: int) -> list[int]:
        words = bitsets[int(node["bitset_idx"])]
        values = categories[column]
        return [int(values[o]) for o in range(len(values)) if (int(words[o // 32]) >> (o % 32)) & 1]

    def node(i: int) -> Any:
        n = nodes[i]
        count = int(n["count"])
        if n["is_leaf"]:
            value = float(n["value"])
            return _Leaf(baseline + value if baseline is not None else value, count)
        column = columns[int(n["feature_idx"])]
        left, right = node(int(n["left"])), node(int(n["right"]))
        if not n["is_categorical"]:
            return _Split(
                feature=column,
                threshold=_finite(float(n["num_threshold"])),
                default_left=bool(n["missing_go_to_left"]),
                left=left,
                right=right,
                count=count,
            )
        go_left = left_codes(n, column)
        if not n["missing_go_to_left"]:
            return _Split(column, categories=go_left, categorical=True, left=left, right=right, count=count)
        # LightGBM sends NaN (and codes outside the set) right: swap the sides, keep the complement.
        known = [int(c) for c in categories[column]]
        rest = [c for c in known if c not in set(go_left)]
        return _Split(column, categories=rest, categorical=True, left=right, right=left, count=count)

    return node(0)


# --- LightGBM's text --------------------------------------------------------------------


def _model_text(
    trees: list[Any], n_classes: int, n_features: int, *, average: bool, categorical: dict[int, list[int]]
) -> str:
    import lightgbm

    per_iteration = 1 if n_classes == 2 else n_classes
    objective = "binary sigmoid:1" if n_classes == 2 else f"multiclass num_class:{n_classes}"
    infos = [
        ":".join(str(c) for c in categorical[j]) if categorical.get(j) else "none" for j in range(n_features)
    ]
    header = [
        "tree",
        "version=v4",
        f"num_class={per_iteration}",
        f"num_tree_per_iteration={per_iteration}",
        "label_index=0",
        f"max_feature_idx={n_features - 1}",
        f"objective={objective}",
        *(["average_output"] if average else []),
        "feature_names=" + " ".join(f"Column_{j}" for j in range(n_features)),
        "feature_infos=" + " ".join(infos),
        "",
    ]
    blocks = [_tree_block(i, tree) for i, tree in enumerate(trees)]
    text = "\n".join(header) + "\n" + "".join(blocks) + "end of trees\n\npandas_categorical:null\n"
    # Through LightGBM's own parser and writer: tree sizes, importances and parameters as it writes them.
    return str(lightgbm.Booster(model_str=text).model_to_string())


def _tree_block(index: int, root: Any) -> str:
    if isinstance(root, _Leaf):
        # LightGBM writes a one-leaf tree with its value alone; a split on feature 0 with two equal
        # leaves computes the same and keeps every tree in the same shape.
        root = _Split(
            0, threshold=0.0, default_left=True, left=root, right=_Leaf(root.value, 0), count=root.count
        )
    splits: list[_Split] = []
    leaves: list[_Leaf] = []
    children: list[tuple[int, int]] = []  # LightGBM's (left, right) of each split; ~i is leaf i

    def visit(n: Any) -> int:
        if isinstance(n, _Leaf):
            leaves.append(n)
            return ~(len(leaves) - 1)
        i = len(splits)
        splits.append(n)
        children.append((0, 0))
        children[i] = (visit(n.left), visit(n.right))
        return i

    visit(root)
    thresholds, decision, boundaries, words = [], [], [0], []
    for s in splits:
        if s.categorical:
            thresholds.append(str(len(boundaries) - 1))
            decision.append(_CATEGORICAL | _MISSING_NAN)
            bits = [0] * (max(s.categories, default=0) // 32 + 1)
            for c in s.categories:
                bits[c // 32] |= 1 << (c % 32)
            words.extend(bits)
            boundaries.append(len(words))
        else:
            thresholds.append(repr(float(s.threshold)))
            decision.append(_MISSING_NAN | (_DEFAULT_LEFT if s.default_left else 0))
    lines = [
        f"Tree={index}",
        f"num_leaves={len(leaves)}",
        f"num_cat={len(boundaries) - 1}",
        "split_feature=" + " ".join(str(s.feature) for s in splits),
        "split_gain=" + " ".join("0" for _ in splits),
        "threshold=" + " ".join(thresholds),
        "decision_type=" + " ".join(str(d) for d in decision),
        "left_child=" + " ".join(str(left) for left, _ in children),
        "right_child=" + " ".join(str(right) for _, right in children),
        "leaf_value=" + " ".join(repr(float(leaf.value)) for leaf in leaves),
        "leaf_weight=" + " ".join(str(leaf.count) for leaf in leaves),
        "leaf_count=" + " ".join(str(leaf.count) for leaf in leaves),
        "internal_value=" + " ".join("0" for _ in splits),
        "internal_weight=" + " ".join(str(s.count) for s in splits),
        "internal_count=" + " ".join(str(s.count) for s in splits),
    ]
    if len(boundaries) > 1:
        lines.append("cat_boundaries=" + " ".join(map(str, boundaries)))
        lines.append("cat_threshold=" + " ".join(map(str, words)))
    lines += ["is_linear=0", "shrinkage=1", "", ""]
    return "\n".join(lines) + "\n"
