"""Model artifacts: saving fitted models in safe native formats and loading them back
behind hash checks (the files themselves are ``assay.registry.files``'s).

This module owns everything that turns a model into bytes on disk and back:

* ``save_model`` / ``load_model`` and the ``Predictor`` objects that serve a loaded model
  (probabilities and per-feature contributions to the raw score);
* ``library_versions``, the one record of which libraries wrote a model (model.json and a
  version's lineage both carry it);

The rule it exists to keep: loading never unpickles bytes or runs code from an artifact.
LightGBM models are stored as the booster's text model, which ``assay.registry.lightgbm_text``
checks in full before LightGBM's C parser sees a byte of it; scikit-learn models go through
skops, and only the types in ``SKOPS_TRUSTED_TYPES`` (on top of skops' own defaults) are
accepted. Every file is checked against the manifest's sha256 before it is parsed, and the
bytes that were hashed are the bytes that get parsed, so a file swapped between the check
and the read is never used.
"""

from __future__ import annotations

import functools
import hashlib
import re
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from assay.errors import ArtifactError
from assay.registry.attributions import (
    as_matrix,
    linear_contributions,
    occlusion_contributions,
    pipeline_sources,
)
from assay.registry.compiled import LinearPredictor, check_compiled_meta, read_linear
from assay.registry.files import (
    check_hash,
    check_manifest,
    check_regular,
    parse_header,
    sha256_file,
    write_atomic,
    write_json,
)
from assay.registry.lightgbm_text import LIGHTGBM_FILE, LightGBMShape, check_lightgbm_text

if TYPE_CHECKING:
    import lightgbm

    from assay.registry.lightgbm_lib import Booster

# LightGBM, scikit-learn and skops are imported where a model is saved or loaded, not here:
# commands that never touch a model (``assay --help``, ``assay show``) start without them.

MODEL_JSON = "model.json"
SKOPS_FILE = "model.skops"
MODEL_FORMAT = "assay-model"
MODEL_FORMAT_VERSION = 1

# Types skops does not trust by default but our four model kinds need. Anything else found
# in a .skops file is refused. Each entry is a data container or a pure function from
# scikit-learn itself; none can be pointed at arbitrary code, because skops lists the
# function inside a functools.partial as a type of its own, which must pass this check too.
SKOPS_TRUSTED_TYPES: frozenset[str] = frozenset(
    {
        "numpy.dtype",  # OneHotEncoder(dtype=np.float64)
        "sklearn.tree._tree.Tree",  # RandomForestClassifier's trees
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        # HistGradientBoostingClassifier(categorical_features=...) keeps a
        # FunctionTransformer(func=partial(check_array, ...)) in its _preprocessor.
        "functools.partial",
        "sklearn.utils.validation.check_array",
    }
)


class ArtifactVersionWarning(UserWarning):
    """A model is loaded with a different major.minor version of the library that reads it."""


class Predictor(Protocol):
    """A loaded model, ready to score float64 matrices whose columns are the model's features.

    Class indices are the encoded classes 0..k-1; the caller maps them to names.
    """

    kind: str  # "lightgbm" | "sklearn"
    n_classes: int
    n_features: int
    explanation_method: str  # "exact" | "occlusion"

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(n, n_classes) float64 probabilities."""
        ...

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """(n, n_classes, n_features + 1): per-feature contributions to each class's raw
        score, last column the bias (score at the reference / expected value)."""
        ...


class LightGBMPredictor:
    """A LightGBM booster read from its text model. Contributions are exact TreeSHAP values
    in raw-score space (log-odds for binary, per-class softmax input for multiclass).

    ``average``: the model is a compiled forest whose probabilities are its trees' raw scores
    averaged (LightGBM averages only before its objective's transform, which such a model must
    not get), so raw scores and contributions are divided by the number of rounds here.
    """

    kind = "lightgbm"
    explanation_method = "exact"

    def __init__(
        self, booster: Booster | lightgbm.Booster, n_classes: int, n_features: int, *, average: bool = False
    ) -> None:
        self.booster = booster
        self.n_classes = n_classes
        self.n_features = n_features
        self.average = average
        self.rounds = booster.current_iteration()

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = as_matrix(X, self.n_features)
        # One thread: this runs per request, and OpenMP fan-out on a single row costs
        # more than it saves and fights with the server's own workers.
        proba = np.asarray(self.booster.predict(X, num_threads=1, raw_score=self.average))
        if self.average:
            proba = proba / self.rounds
        if self.n_classes == 2:
            # Filling a preallocated array is ~3 µs cheaper per call than np.column_stack.
            out = np.empty((proba.shape[0], 2))
            out[:, 1] = proba
            np.subtract(1.0, proba, out=out[:, 0])
            return out
        return proba

    def contributions(self, X: np.ndarray) -> np.ndarray:
        X = as_matrix(X, self.n_features)
        contrib = np.asarray(self.booster.predict(X, pred_contrib=True, num_threads=1))
        if self.average:
            contrib = contrib / self.rounds
        if self.n_classes == 2:
            # The booster has one score, the log-odds of class 1; class 0's is its negation.
            return np.stack((-contrib, contrib), axis=1)
        # Multiclass layout is class-major: [class 0: d features + bias, class 1: ..., ...].
        return contrib.reshape(X.shape[0], self.n_classes, self.n_features + 1)


class SklearnPredictor:
    """A scikit-learn estimator read from skops.

    ``explanation_method`` is "exact" for the logistic-regression pipeline (coef x transformed
    value, summed back onto each source feature; sums to ``decision_function``) and
    "occlusion" for tree ensembles (see ``occlusion_contributions``; does not sum to the
    model's score exactly).
    """

    kind = "sklearn"

    def __init__(
        self,
        estimator: Any,
        n_classes: int,
        n_features: int,
        *,
        reference: np.ndarray | None = None,
        sources: np.ndarray | None = None,
    ) -> None:
        self.estimator = estimator
        self.n_classes = n_classes
        self.n_features = n_features
        self.reference = reference
        self.sources = sources  # LR pipeline: source feature of every transformed column
        self.explanation_method = "exact" if sources is not None else "occlusion"

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = as_matrix(X, self.n_features)
        return np.asarray(self.estimator.predict_proba(X), dtype=np.float64)

    def contributions(self, X: np.ndarray) -> np.ndarray:
        X = as_matrix(X, self.n_features)
        if self.sources is not None:
            return linear_contributions(self.estimator, self.sources, X, self.n_classes)
        if self.reference is None:
            raise ArtifactError("this model was saved without a reference row; it cannot be explained")
        return occlusion_contributions(self.estimator.predict_proba, self.n_classes, X, self.reference)


# --------------------------------------------------------------------------- save / load


def save_model(
    estimator: Any,
    directory: Path,
    reference: np.ndarray | None = None,
    compiled: tuple[dict[str, Any], bytes] | None = None,
) -> dict[str, str]:
    """Write a fitted estimator into ``directory``; return {file name: sha256} of every file written.

    ``reference`` is one row of feature values (median for numeric, mode for categorical,
    NaN allowed) that occlusion explanations compare against. It is required for
    HistGradientBoosting and RandomForest models and stored, when given, for the others.
    ``compiled`` is (model.json's ``compiled`` entry, the compiled file's bytes): the form
    the version is served by (``assay.modelling.compilation`` made and checked it).
    """
    import skops.io
    from sklearn.pipeline import Pipeline

    directory = Path(directory)
    kind, n_classes, n_features = _describe(estimator)
    if kind == "lightgbm":
        model_file = LIGHTGBM_FILE
        model_bytes = booster_text(estimator.booster_).encode("utf-8")
        # Refuse now what load_model would refuse later.
        _check_lightgbm_shape(check_lightgbm_text(model_bytes), n_classes, n_features)
    else:
        model_file = SKOPS_FILE
        model_bytes = skops.io.dumps(estimator)
        # Refuse now what load_model would refuse later.
        _skops_trusted(model_bytes)
    sources = pipeline_sources(estimator) if isinstance(estimator, Pipeline) else None
    method = "exact" if kind == "lightgbm" or sources is not None else "occlusion"
    if reference is not None:
        reference = np.asarray(reference, dtype=np.float64)
        if reference.shape != (n_features,) or np.isinf(reference).any():
            raise ValueError(
                f"reference must be {n_features} finite-or-NaN values, got shape {reference.shape}"
            )
    elif method == "occlusion":
        raise ValueError(f"{type(estimator).__name__} is explained by occlusion and needs a reference row")

    directory.mkdir(parents=True, exist_ok=True)
    manifest = {model_file: write_atomic(directory / model_file, model_bytes)}
    if compiled is not None:
        entry = check_compiled_meta(compiled[0])
        assert entry is not None
        manifest[entry["file"]] = write_atomic(directory / entry["file"], compiled[1])
    meta = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "kind": kind,
        "estimator": _qualified_name(type(estimator)),
        "n_classes": n_classes,
        "n_features": n_features,
        "explanation_method": method,
        "reference": None if reference is None else [None if np.isnan(v) else float(v) for v in reference],
        "versions": library_versions(),
        "compiled": None if compiled is None else compiled[0],
    }
    manifest[MODEL_JSON] = write_json(directory / MODEL_JSON, meta)
    return manifest


def load_model(directory: Path, manifest: dict[str, str]) -> Predictor:
    """Check every manifest file against its sha256, then read the model without running its code."""
    meta, data, trusted = _checked_model(Path(directory), manifest)
    compiled = meta["compiled"]
    if compiled is not None and compiled["format"] == "linear-json":
        return LinearPredictor(read_linear(data, meta["n_classes"], meta["n_features"]))
    if meta["kind"] == "lightgbm" or compiled is not None:
        return lightgbm_predictor(
            data,
            meta["n_classes"],
            meta["n_features"],
            average=bool(compiled and compiled["output"] == "average"),
        )
    return _load_sklearn(data, meta, trusted)


def check_model(directory: Path, manifest: dict[str, str]) -> None:
    """Everything ``load_model`` checks before a parser sees a byte of the model: hashes,
    model.json, and the model file's own format (the LightGBM text in full, a skops file's types).
    A compiled model's reference is held to its format too, though serving never parses it."""
    meta, _, _ = _checked_model(Path(directory), manifest)
    if meta["compiled"] is not None:
        _skops_trusted(_read_checked(Path(directory), SKOPS_FILE, manifest[SKOPS_FILE]))


def _checked_model(directory: Path, manifest: dict[str, str]) -> tuple[dict[str, Any], bytes, list[str]]:
    """(model.json's description, the bytes of the file the model is served from, the skops types
    to trust) once all is checked. A compiled model is served from its compiled file: the
    reference (``model.skops``) is then hash-checked but never parsed."""
    check_manifest(manifest)
    if MODEL_JSON not in manifest:
        raise ArtifactError(f"manifest does not list {MODEL_JSON}")
    model_files = [name for name in (LIGHTGBM_FILE, SKOPS_FILE) if name in manifest]
    if len(model_files) != 1:
        raise ArtifactError(f"manifest must list exactly one model file, got {model_files or 'none'}")
    model_file = model_files[0]
    meta = read_model_json(_read_checked(directory, MODEL_JSON, manifest[MODEL_JSON]))
    expected_file = LIGHTGBM_FILE if meta["kind"] == "lightgbm" else SKOPS_FILE
    if model_file != expected_file:
        raise ArtifactError(f"model.json says kind {meta['kind']!r} but the manifest lists {model_file}")
    compiled = meta["compiled"]
    if compiled is not None and (meta["kind"] != "sklearn" or compiled["file"] not in manifest):
        raise ArtifactError(
            f"model.json names a compiled form the manifest does not list: {compiled['file']}"
        )
    served_file = compiled["file"] if compiled is not None else model_file
    served = b""
    for name, expected in manifest.items():
        if name == served_file:
            # Parse exactly the bytes that were hashed (no check-then-reopen race).
            served = _read_checked(directory, name, expected)
        elif name != MODEL_JSON:
            check_regular(directory / name, name)
            check_hash(name, sha256_file(directory / name), expected)
    _warn_on_version_mismatch(meta)
    if compiled is not None and compiled["format"] == "linear-json":
        return meta, served, []
    if meta["kind"] == "lightgbm" or compiled is not None:
        # LightGBM's C parser trusts its input (a bad feature index reads out of bounds when it
        # predicts), so it only ever sees text the strict reader has accepted.
        _check_lightgbm_shape(check_lightgbm_text(served), meta["n_classes"], meta["n_features"])
        return meta, served, []
    return meta, served, _skops_trusted(served)


def _read_checked(directory: Path, name: str, expected: str) -> bytes:
    check_regular(directory / name, name)
    data = (directory / name).read_bytes()
    check_hash(name, hashlib.sha256(data).hexdigest(), expected)
    return data


def _describe(estimator: Any) -> tuple[str, int, int]:
    """(kind, n_classes, n_features) of a fitted estimator of one of the supported kinds."""
    import lightgbm
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    if isinstance(estimator, lightgbm.LGBMClassifier):
        kind = "lightgbm"
        if callable(estimator.objective):
            raise ValueError("LightGBM models with a custom objective cannot be saved: no probabilities")
    elif isinstance(estimator, HistGradientBoostingClassifier | RandomForestClassifier) or (
        isinstance(estimator, Pipeline) and isinstance(estimator[-1], LogisticRegression)
    ):
        kind = "sklearn"
    else:
        raise ValueError(
            "save_model supports LGBMClassifier, HistGradientBoostingClassifier, RandomForestClassifier "
            f"and Pipeline(..., LogisticRegression); got {type(estimator).__name__}"
        )
    classes = getattr(estimator, "classes_", None)
    if classes is None:
        raise ValueError(f"{type(estimator).__name__} is not fitted")
    # The caller encodes class names; a model saved with other labels would silently
    # shift every probability column.
    if not np.array_equal(np.asarray(classes), np.arange(len(classes))):
        raise ValueError(f"classes_ must be the encoded indices 0..k-1, got {list(classes)}")
    return kind, len(classes), int(estimator.n_features_in_)


def lightgbm_predictor(
    data: bytes, n_classes: int, n_features: int, *, average: bool = False
) -> LightGBMPredictor:
    """A LightGBMPredictor over text ``check_lightgbm_text`` has accepted, read by LightGBM's library
    without the lightgbm package (``lightgbm_lib``)."""
    from assay.registry import lightgbm_lib

    try:
        booster = lightgbm_lib.Booster(data.decode("utf-8"))
    except lightgbm_lib.LightGBMError as exc:
        raise ArtifactError(f"{LIGHTGBM_FILE} is not a readable LightGBM text model: {exc}") from exc
    return LightGBMPredictor(booster, n_classes, n_features, average=average)


def _check_lightgbm_shape(shape: LightGBMShape, n_classes: int, n_features: int) -> None:
    """Refuse a text model whose features or classes are not the ones model.json describes."""
    binary = n_classes == 2
    if (
        shape.n_features != n_features
        or (shape.objective == "binary") != binary
        or (not binary and shape.num_class != n_classes)
    ):
        raise ArtifactError(
            f"{LIGHTGBM_FILE} does not match model.json: {shape.n_features} features and a "
            f"{shape.objective} objective over {shape.num_class} class score(s), "
            f"expected {n_features} features and {n_classes} classes"
        )


def booster_text(booster: Any) -> str:
    """A LightGBM booster's model text without its ``[num_threads: N]`` parameter line: the
    threads a fit was given (a training decides them by the machine's load) change nothing in
    the trees, and a stored model's bytes should not depend on them."""
    text = str(booster.model_to_string())
    return re.sub(r"^\[num_threads: [^\]]*\]\n", "", text, count=1, flags=re.M)


def _load_sklearn(data: bytes, meta: dict[str, Any], trusted: list[str]) -> SklearnPredictor:
    import skops.io
    from sklearn.pipeline import Pipeline

    try:
        estimator = skops.io.loads(data, trusted=trusted)
    except Exception as exc:  # skops raises many kinds; all mean the same thing here
        raise ArtifactError(f"{SKOPS_FILE} cannot be read: {exc}") from exc
    if _qualified_name(type(estimator)) != meta["estimator"]:
        raise ArtifactError(
            f"{SKOPS_FILE} holds a {_qualified_name(type(estimator))}, model.json says {meta['estimator']}"
        )
    try:
        kind, n_classes, n_features = _describe(estimator)
    except ValueError as exc:
        raise ArtifactError(f"{SKOPS_FILE}: {exc}") from exc
    if (kind, n_classes, n_features) != ("sklearn", meta["n_classes"], meta["n_features"]):
        raise ArtifactError(f"{SKOPS_FILE} does not match model.json's n_classes/n_features")
    sources = None
    if isinstance(estimator, Pipeline):
        try:
            sources = pipeline_sources(estimator)
        except ValueError as exc:
            raise ArtifactError(f"{SKOPS_FILE}: {exc}") from exc
    reference = meta["reference"]
    return SklearnPredictor(
        estimator,
        n_classes,
        n_features,
        reference=None if reference is None else np.array(reference, dtype=np.float64),
        sources=sources,
    )


def _skops_trusted(data: bytes) -> list[str]:
    """The types to pass as ``trusted`` to skops; refuses a file with any type outside the allowlist.

    ``get_untrusted_types`` only reads the file's schema; nothing is imported or built.
    """
    import skops.io

    try:
        untrusted = skops.io.get_untrusted_types(data=data)
    except Exception as exc:  # a pickle or any non-skops file ends here (not a zip, no schema)
        raise ArtifactError(f"{SKOPS_FILE} is not a skops file: {exc}") from exc
    refused = sorted(set(untrusted) - SKOPS_TRUSTED_TYPES)
    if refused:
        raise ArtifactError(f"{SKOPS_FILE} contains untrusted types, refusing to load: {', '.join(refused)}")
    return untrusted


def read_model_json(data: bytes) -> dict[str, Any]:
    meta = parse_header(data, MODEL_JSON, MODEL_FORMAT, MODEL_FORMAT_VERSION)
    if meta.get("kind") not in ("lightgbm", "sklearn"):
        raise ArtifactError(f"{MODEL_JSON} has unknown kind {meta.get('kind')!r}")
    if not isinstance(meta.get("estimator"), str) or not isinstance(meta.get("versions"), dict):
        raise ArtifactError(f"{MODEL_JSON} lacks the estimator name or library versions")
    for key in ("n_classes", "n_features"):
        # type() rather than isinstance: JSON's true is no count.
        if type(meta.get(key)) is not int or meta[key] < (2 if key == "n_classes" else 1):
            raise ArtifactError(f"{MODEL_JSON} has an invalid {key}: {meta.get(key)!r}")
    reference = read_reference(meta.get("reference"), meta["n_features"], MODEL_JSON)
    if reference is not None:
        meta["reference"] = reference.tolist()
    # Models saved before compiled forms existed have no entry: they are served as they are.
    meta["compiled"] = check_compiled_meta(meta.get("compiled"))
    return meta


def read_reference(value: Any, n_features: int, name: str) -> np.ndarray | None:
    """A stored reference row (JSON null for NaN) as floats; refuses anything else."""
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) != n_features
        or not all(v is None or type(v) in (int, float) for v in value)
    ):
        raise ArtifactError(f"{name} has an invalid reference row")
    return np.array([np.nan if v is None else float(v) for v in value], dtype=np.float64)


def _warn_on_version_mismatch(meta: dict[str, Any]) -> None:
    # Only the library that reads the file matters: a LightGBM text model does not care
    # which scikit-learn wrote it.
    library = "lightgbm" if meta["kind"] == "lightgbm" else "scikit-learn"
    # Models saved before the version records were merged named scikit-learn by its import name.
    saved = str(meta["versions"].get(library, meta["versions"].get("sklearn", "unknown")))
    running = library_versions()[library]
    if saved.split(".")[:2] != running.split(".")[:2]:
        warnings.warn(
            f"model was saved with {library} {saved} and is loaded with {running}; "
            "predictions may differ, retrain or re-validate it",
            ArtifactVersionWarning,
            stacklevel=3,
        )


def library_versions() -> dict[str, str]:
    """The versions of the libraries that write and read models, by distribution name."""
    return dict(_installed_versions())


@functools.cache
def _installed_versions() -> tuple[tuple[str, str], ...]:
    # From the installed distributions' metadata: asking costs no import of the libraries, but a
    # search of every distribution folder (5 ms a time). Once a process: the libraries it has
    # loaded stay the ones it runs.
    return tuple((name, version(name)) for name in ("numpy", "pandas", "scikit-learn", "lightgbm", "skops"))


def _qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
