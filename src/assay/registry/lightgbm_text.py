"""A strict reader of LightGBM's text model format, run before LightGBM's own parser sees a file.

LightGBM's C++ parser trusts its input: a model whose ``tree_sizes`` line is missing, whose
``split_feature`` names a column the model does not have, whose child indices point outside
the tree or whose arrays are shorter than ``num_leaves`` says, loads without complaint and then
reads or writes outside its buffers when it predicts (garbage probabilities, a segfault, an
abort). So every LightGBM model assay loads goes through ``check_lightgbm_text`` first, and
only a file that has exactly the shape LightGBM itself writes reaches the C parser:

* the header: ``tree``, then known ``key=value`` lines, each once — ``num_class``,
  ``num_tree_per_iteration`` (equal to it), ``max_feature_idx``, as many ``feature_names`` and
  ``feature_infos`` as features, an objective assay serves (binary or multiclass) and
  ``tree_sizes``;
* the trees: ``tree_sizes`` gives every block's exact byte size, each block is ``Tree=<i>`` and
  the known keys with arrays as long as ``num_leaves`` requires, numbers that parse and are
  finite, every ``split_feature`` a real column, children that form one tree (each leaf and
  each internal node reached exactly once from the root, leaves written as ``~index``),
  categorical splits consistent with ``cat_boundaries``/``cat_threshold``, linear leaves with
  their coefficients;
* the trailer: feature importances, the ``parameters`` block (lines LightGBM turns into JSON,
  so no quotes or backslashes) and ``pandas_categorical:null``.

Anything else is refused with an ``ArtifactError`` naming the line or tree at fault.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from itertools import pairwise

from assay.errors import ArtifactError

LIGHTGBM_FILE = "model.lgb.txt"

# LightGBM's own ceiling on num_leaves (config.h: "check = <=131072").
MAX_LEAVES = 131_072
# TreeSHAP allocates O(depth^2) path elements per tree; a chain-shaped tree thousands of nodes
# deep is no model anyone trains, only a way to exhaust memory at the first explanation.
MAX_DEPTH = 1024
MAX_FEATURES = 1_000_000
MAX_CLASSES = 10_000

_HEADER_KEYS = frozenset(
    {
        "average_output",
        "version",
        "num_class",
        "num_tree_per_iteration",
        "label_index",
        "max_feature_idx",
        "objective",
        "feature_names",
        "monotone_constraints",
        "feature_infos",
        "tree_sizes",
    }
)
_HEADER_REQUIRED = _HEADER_KEYS - {"average_output", "monotone_constraints"}
# Every key LightGBM writes for a tree (Tree::ToString); the categorical and linear ones only
# when the tree has categorical splits or linear leaves.
_TREE_KEYS = frozenset(
    {
        "num_leaves",
        "num_cat",
        "split_feature",
        "split_gain",
        "threshold",
        "decision_type",
        "left_child",
        "right_child",
        "leaf_value",
        "leaf_weight",
        "leaf_count",
        "internal_value",
        "internal_weight",
        "internal_count",
        "is_linear",
        "shrinkage",
    }
)
_CATEGORICAL_KEYS = frozenset({"cat_boundaries", "cat_threshold"})
_LINEAR_KEYS = frozenset({"leaf_const", "num_features", "leaf_features", "leaf_coeff"})
# Arrays with one entry per internal node / per leaf, and whether they hold integers.
_NODE_ARRAYS = {
    "split_feature": True,
    "split_gain": False,
    "threshold": False,
    "decision_type": True,
    "left_child": True,
    "right_child": True,
    "internal_value": False,
    "internal_weight": False,
    "internal_count": True,
}
_LEAF_ARRAYS = {"leaf_value": False, "leaf_weight": False, "leaf_count": True}

_INT = re.compile(r"-?[0-9]{1,10}")
_FLOAT = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]{1,3})?")
_INT_LIST = re.compile(rf"(?:{_INT.pattern}(?: {_INT.pattern})*)?")
_FLOAT_LIST = re.compile(rf"(?:{_FLOAT.pattern}(?: {_FLOAT.pattern})*)?")
_FEATURE_INFO = re.compile(r"none|\[(?P<lo>[^:\]\s]+):(?P<hi>[^:\]\s]+)\]|-?[0-9]{1,10}(?::-?[0-9]{1,10})*")
_IMPORTANCE_LINE = re.compile(r"[^\s=]+=[0-9]{1,20}")
# LightGBM rebuilds loaded parameters into JSON by pasting values between quotes, and indexes
# the part after ':' unchecked: a parameter line is "[name: value]" with a plain value.
_PARAMETER_LINE = re.compile(r"\[[a-z0-9_]{1,64}: [A-Za-z0-9_.,:/+\-\[\] ]{0,4096}\]")
_CATEGORICAL_BIT = 1
_MISSING_TYPES = 3  # None, Zero, NaN: (decision_type >> 2) & 3 must be one of 0, 1, 2


@dataclass(frozen=True)
class LightGBMShape:
    """What a checked text model is: its classes, trees per round and feature count."""

    objective: str  # "binary" | "multiclass" | "multiclassova"
    num_class: int
    trees_per_iteration: int
    n_features: int
    n_trees: int


# Texts this process has checked, by sha256, and their shape: a forget reads a version's shards
# (checked) and writes most of them again unchanged into its replacement (checked again), and a
# version is loaded again after it is written. The check depends on the bytes alone.
_CHECKED: OrderedDict[bytes, LightGBMShape] = OrderedDict()
_CHECKED_KEPT = 256
_CHECKED_LOCK = threading.Lock()


def check_lightgbm_text(data: bytes) -> LightGBMShape:
    """Refuse ``data`` unless it is a LightGBM text model of exactly the shape LightGBM writes.

    Raises ``ArtifactError`` naming the problem; returns the model's shape otherwise (from
    memory when the same bytes passed before: only texts that pass are remembered).
    """
    digest = hashlib.sha256(data).digest()
    with _CHECKED_LOCK:
        shape = _CHECKED.get(digest)
        if shape is not None:
            _CHECKED.move_to_end(digest)
            return shape
    shape = _check(data)
    with _CHECKED_LOCK:
        _CHECKED[digest] = shape
        while len(_CHECKED) > _CHECKED_KEPT:
            _CHECKED.popitem(last=False)
    return shape


def _check(data: bytes) -> LightGBMShape:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _refuse(f"not UTF-8 text ({exc})") from None
    if "\r" in text or "\x00" in text:
        raise _refuse("carriage returns or NUL bytes (LightGBM writes neither)")
    tree_start = text.find("\nTree=") + 1
    if tree_start == 0:
        raise _refuse("no Tree= block")
    header = _read_header(text[:tree_start])
    # tree_sizes counts bytes, as LightGBM's parser does.
    region = text[tree_start:].encode("utf-8")
    _check_trailer(region[_check_trees(region, header) :].decode("utf-8"))
    return LightGBMShape(
        objective=header.objective,
        num_class=header.num_class,
        trees_per_iteration=header.num_class,
        n_features=header.n_features,
        n_trees=len(header.tree_sizes),
    )


def _refuse(problem: str) -> ArtifactError:
    return ArtifactError(f"{LIGHTGBM_FILE} is not a LightGBM text model assay can load safely: {problem}")


# --------------------------------------------------------------------------- header


@dataclass(frozen=True)
class _Header:
    objective: str
    num_class: int
    n_features: int
    tree_sizes: list[int]


def _read_header(block: str) -> _Header:
    lines = block.split("\n")
    if lines[0] != "tree":
        raise _refuse(f"the first line is {lines[0][:40]!r}, not 'tree'")
    values: dict[str, str] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        key, sep, value = line.partition("=")
        where = f"line {number}"
        # average_output (random-forest boosting) is the one bare flag; everything else is key=value.
        if bool(sep) == (key == "average_output"):
            raise _refuse(f"{where}: {line[:40]!r} is not a key=value line")
        if key not in _HEADER_KEYS:
            raise _refuse(f"{where}: unknown header key {key[:40]!r}")
        if key in values:
            raise _refuse(f"{where}: {key} appears twice")
        if "=" in value and key != "feature_names":
            raise _refuse(f"{where}: {key} holds '=' in its value")
        values[key] = value
    missing = sorted(_HEADER_REQUIRED - values.keys())
    if missing:
        raise _refuse(f"the header lacks {', '.join(missing)}")
    if values["version"] != "v4":
        raise _refuse(f"format version {values['version'][:20]!r} (this assay reads v4)")
    num_class = _int(values["num_class"], "num_class", 1, MAX_CLASSES)
    per_iteration = _int(values["num_tree_per_iteration"], "num_tree_per_iteration", 1, MAX_CLASSES)
    if per_iteration != num_class:
        raise _refuse(f"num_tree_per_iteration={per_iteration} for num_class={num_class}")
    _int(values["label_index"], "label_index", 0, 0)
    n_features = _int(values["max_feature_idx"], "max_feature_idx", 0, MAX_FEATURES - 1) + 1
    objective = _check_objective(values["objective"], num_class)
    names = values["feature_names"].split(" ")
    if len(names) != n_features or not all(names):
        raise _refuse(f"{len(names)} feature_names (or empty ones) for max_feature_idx={n_features - 1}")
    infos = values["feature_infos"].split(" ")
    if len(infos) != n_features:
        raise _refuse(f"{len(infos)} feature_infos for {n_features} features")
    for info in infos:
        match = _FEATURE_INFO.fullmatch(info)
        if match is None or (
            match["lo"] is not None and not (_is_float(match["lo"]) and _is_float(match["hi"]))
        ):
            raise _refuse(f"a malformed feature_infos entry {info[:40]!r}")
    if "monotone_constraints" in values:
        constraints = values["monotone_constraints"].split(" ")
        if len(constraints) != n_features or not set(constraints) <= {"-1", "0", "1"}:
            raise _refuse("monotone_constraints are not one of -1, 0, 1 per feature")
    sizes = _array(values["tree_sizes"], "tree_sizes", integer=True)
    if not sizes or len(sizes) % num_class or min(sizes) < 1:
        raise _refuse(
            f"tree_sizes lists {len(sizes)} trees (each at least 1 byte), not a positive multiple of "
            f"{num_class} per round"
        )
    return _Header(objective, num_class, n_features, [int(s) for s in sizes])


def _check_objective(value: str, num_class: int) -> str:
    """The objective's name, once its parameters are the ones LightGBM writes for it."""
    name, *tokens = value.split(" ")
    params: dict[str, str] = {}
    for token in tokens:
        key, sep, number = token.partition(":")
        if not sep or key in params:
            raise _refuse(f"a malformed objective {value[:60]!r}")
        params[key] = number
    expected = {"binary": {"sigmoid"}, "multiclass": {"num_class"}, "multiclassova": {"num_class", "sigmoid"}}
    if name not in expected:
        raise _refuse(f"objective {name[:40]!r} (assay serves binary, multiclass and multiclassova)")
    if set(params) != expected[name]:
        raise _refuse(f"objective {name} must carry exactly {', '.join(sorted(expected[name]))}")
    if name == "binary" and num_class != 1:
        raise _refuse(f"a binary objective with num_class={num_class}")
    if "num_class" in params and (
        _int(params["num_class"], "objective num_class", 2, MAX_CLASSES) != num_class
    ):
        raise _refuse(f"the objective says num_class:{params['num_class']}, the header {num_class}")
    if "sigmoid" in params and not _float(params["sigmoid"], "objective sigmoid") > 0:
        raise _refuse("objective sigmoid must be greater than zero")
    return name


# --------------------------------------------------------------------------- trees


def _check_trees(region: bytes, header: _Header) -> int:
    """Check every tree block ``tree_sizes`` delimits; return where the trailer starts."""
    position = 0
    for index, size in enumerate(header.tree_sizes):
        block = region[position : position + size]
        if len(block) != size:
            raise _refuse(f"tree_sizes says tree {index} has {size} bytes; the file ends before that")
        try:
            text = block.decode("ascii")
        except UnicodeDecodeError:
            raise _refuse(
                f"tree {index} holds non-ASCII bytes (or tree_sizes disagrees with the trees)"
            ) from None
        _check_tree(text, index, header.n_features)
        position += size
    if not region.startswith(b"end of trees\n", position):
        raise _refuse("tree_sizes disagrees with the trees ('end of trees' does not follow the last one)")
    return position


def _check_tree(block: str, index: int, n_features: int) -> None:
    where = f"tree {index}"
    head = f"Tree={index}\n"
    if not block.startswith(head) or not block.endswith("\n\n\n") or "\n\n" in block[:-3]:
        raise _refuse(f"{where}: not a 'Tree={index}' block of key=value lines (tree_sizes disagrees?)")
    values: dict[str, str] = {}
    for line in block[len(head) : -3].split("\n"):
        key, sep, value = line.partition("=")
        if not sep or "=" in value:
            raise _refuse(f"{where}: {line[:40]!r} is not a key=value line")
        if key not in _TREE_KEYS | _CATEGORICAL_KEYS | _LINEAR_KEYS:
            raise _refuse(f"{where}: unknown key {key[:40]!r}")
        if key in values:
            raise _refuse(f"{where}: {key} appears twice")
        values[key] = value
    leaves = _int(values.get("num_leaves", ""), f"{where} num_leaves", 1, MAX_LEAVES)
    linear = _int(values.get("is_linear", ""), f"{where} is_linear", 0, 1) == 1
    num_cat = _int(values.get("num_cat", ""), f"{where} num_cat", 0, leaves - 1)
    expected = set(_TREE_KEYS)
    if num_cat:
        expected |= _CATEGORICAL_KEYS
    if linear:
        expected |= _LINEAR_KEYS
    if values.keys() != expected:
        wrong = sorted(expected - values.keys()) + sorted(values.keys() - expected)
        raise _refuse(f"{where}: keys missing or out of place: {', '.join(wrong)}")
    _float(values["shrinkage"], f"{where} shrinkage")

    nodes = leaves - 1
    arrays: dict[str, list[float]] = {}
    for key, integer in (*_NODE_ARRAYS.items(), *_LEAF_ARRAYS.items()):
        arrays[key] = _array(values[key], f"{where} {key}", integer=integer)
        length = nodes if key in _NODE_ARRAYS else leaves
        # A one-leaf tree is written with an empty leaf_weight, which LightGBM never reads.
        if len(arrays[key]) != length and not (key == "leaf_weight" and leaves == 1 and not arrays[key]):
            raise _refuse(f"{where}: {key} has {len(arrays[key])} values, num_leaves={leaves} needs {length}")
    if any(f < 0 or f >= n_features for f in arrays["split_feature"]):
        bad = next(int(f) for f in arrays["split_feature"] if f < 0 or f >= n_features)
        raise _refuse(f"{where}: split_feature {bad} is not one of the model's {n_features} features")
    if any(c < 0 for key in ("leaf_count", "internal_count") for c in arrays[key]):
        raise _refuse(f"{where}: counts must not be negative")
    categorical = _check_decisions(arrays["decision_type"], where)
    _check_children(arrays["left_child"], arrays["right_child"], leaves, where)
    if len(categorical) != num_cat:
        raise _refuse(f"{where}: num_cat={num_cat} but {len(categorical)} splits are categorical")
    if num_cat:
        _check_categories(values, arrays["threshold"], categorical, num_cat, where)
    if linear:
        _check_linear(values, leaves, n_features, where)


def _check_decisions(decisions: list[float], where: str) -> list[int]:
    """The indices of categorical splits, once every decision_type is a valid bit set."""
    categorical = []
    for node, value in enumerate(decisions):
        decision = int(value)
        if not 0 <= decision < 16 or (decision >> 2) & 3 >= _MISSING_TYPES:
            raise _refuse(f"{where}: decision_type {decision} is not a valid split type")
        if decision & _CATEGORICAL_BIT:
            categorical.append(node)
    return categorical


def _check_children(left: list[float], right: list[float], leaves: int, where: str) -> None:
    """Children must make one tree: internal nodes 1..n-1 and leaves (~0..~leaves-1) each reached once."""
    nodes = leaves - 1
    parents = [0] * nodes
    leaf_parents = [0] * leaves
    for child in (*left, *right):
        c = int(child)
        if not -leaves <= c <= nodes - 1:
            raise _refuse(f"{where}: child index {c} is out of range for num_leaves={leaves}")
        if c >= 0:
            parents[c] += 1
        else:
            leaf_parents[~c] += 1
    if nodes and (parents[0] or any(p != 1 for p in parents[1:]) or any(p != 1 for p in leaf_parents)):
        raise _refuse(
            f"{where}: left_child/right_child do not form a tree (a node is reached twice or never)"
        )
    # With one parent per node the structure is a tree exactly when all of it hangs from the
    # root (no detached cycle); walk it, measuring the depth TreeSHAP will have to handle.
    stack = [(0, 1)] if nodes else []
    seen = 0
    while stack:
        node, depth = stack.pop()
        seen += 1
        if depth > MAX_DEPTH:
            raise _refuse(f"{where}: deeper than {MAX_DEPTH} splits")
        stack.extend((int(c), depth + 1) for c in (left[node], right[node]) if c >= 0)
    if seen != nodes:
        raise _refuse(f"{where}: left_child/right_child do not form a tree (detached nodes)")


def _check_categories(
    values: dict[str, str], thresholds: list[float], categorical: list[int], num_cat: int, where: str
) -> None:
    boundaries = _array(values["cat_boundaries"], f"{where} cat_boundaries", integer=True)
    if len(boundaries) != num_cat + 1 or boundaries[0] != 0:
        raise _refuse(f"{where}: cat_boundaries must be {num_cat + 1} offsets starting at 0")
    if any(b <= a for a, b in pairwise(boundaries)):
        raise _refuse(f"{where}: cat_boundaries must increase")
    words = _array(values["cat_threshold"], f"{where} cat_threshold", integer=True)
    if len(words) != boundaries[-1] or any(not 0 <= w < 2**32 for w in words):
        raise _refuse(f"{where}: cat_threshold must be {int(boundaries[-1])} 32-bit words")
    for node in categorical:
        threshold = thresholds[node]
        if threshold != int(threshold) or not 0 <= threshold < num_cat:
            raise _refuse(f"{where}: categorical split {node} names category set {threshold!r} of {num_cat}")


def _check_linear(values: dict[str, str], leaves: int, n_features: int, where: str) -> None:
    if len(_array(values["leaf_const"], f"{where} leaf_const", integer=False)) != leaves:
        raise _refuse(f"{where}: leaf_const must have num_leaves={leaves} values")
    counts = _array(values["num_features"], f"{where} num_features", integer=True)
    if len(counts) != leaves or any(not 0 <= c <= n_features for c in counts):
        raise _refuse(f"{where}: num_features must be {leaves} counts of at most {n_features}")
    total = int(sum(counts))
    # LightGBM separates each leaf's list with an extra space: whitespace-split, then count.
    features = _array(values["leaf_features"], f"{where} leaf_features", integer=True, loose=True)
    coefficients = _array(values["leaf_coeff"], f"{where} leaf_coeff", integer=False, loose=True)
    if len(features) != total or len(coefficients) != total:
        raise _refuse(f"{where}: leaf_features and leaf_coeff must hold {total} values (sum of num_features)")
    if any(not 0 <= f < n_features for f in features):
        raise _refuse(f"{where}: a linear leaf uses a feature the model does not have")


# --------------------------------------------------------------------------- trailer


def _check_trailer(trailer: str) -> None:
    lines = trailer.split("\n")
    # "end of trees", "", "feature_importances:", name=count..., "", "parameters:", [k: v]...,
    # "", "end of parameters", "", "pandas_categorical:null", "" (after the final newline).
    if lines[:3] != ["end of trees", "", "feature_importances:"] or lines[-3:] != [
        "",
        "pandas_categorical:null",
        "",
    ]:
        raise _refuse("it does not end with feature importances, parameters and pandas_categorical:null")
    body = lines[3:-3]
    split = body.index("") if "" in body else len(body)
    if not all(_IMPORTANCE_LINE.fullmatch(line) for line in body[:split]):
        raise _refuse("a malformed feature_importances line")
    parameters = body[split:]
    if parameters:
        if parameters[:2] != ["", "parameters:"] or parameters[-2:] != ["", "end of parameters"]:
            raise _refuse("something other than a parameters block after the feature importances")
        if not all(_PARAMETER_LINE.fullmatch(line) for line in parameters[2:-2]):
            raise _refuse("a parameters line that is not '[name: plain value]'")


# --------------------------------------------------------------------------- numbers


def _int(token: str, what: str, lo: int, hi: int) -> int:
    if not _INT.fullmatch(token) or not lo <= int(token) <= hi:
        raise _refuse(f"{what} must be an integer from {lo} to {hi}, got {token[:40]!r}")
    return int(token)


def _is_float(token: str) -> bool:
    return _FLOAT.fullmatch(token) is not None and math.isfinite(float(token))


def _float(token: str, what: str) -> float:
    if not _is_float(token):
        raise _refuse(f"{what} must be a finite number, got {token[:40]!r}")
    return float(token)


def _array(value: str, what: str, *, integer: bool, loose: bool = False) -> list[float]:
    """Space-separated numbers (empty for an empty array); integers are kept exact in a float."""
    tokens = value.split() if loose else (value.split(" ") if value else [])
    # One pattern over the whole line, then the conversions: a tree of 64 leaves has a dozen
    # arrays, and a model thousands of trees, so per-token matching would dominate a load.
    pattern = _INT_LIST if integer else _FLOAT_LIST
    if not pattern.fullmatch(" ".join(tokens)):
        raise _refuse(f"{what} holds something other than {'integers' if integer else 'numbers'}")
    out = [float(token) for token in tokens]
    if not all(map(math.isfinite, out)):
        raise _refuse(f"{what} holds a number too large to be finite")
    return out
