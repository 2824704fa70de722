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

import hashlib
import warnings
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from assay.errors import ArtifactError, InvalidInput
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
    from sklearn.pipeline import Pipeline

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

# Occlusion turns probabilities into log-odds; clipping keeps hard 0/1 votes of a random
# forest finite (logit(1e-6) ~ -13.8) instead of producing inf - inf = nan.
_PROBA_CLIP = 1e-6
# Occlusion scores n * (d + 1) rows; chunk the rows so one call holds at most this many cells.
_OCCLUSION_MAX_CELLS = 4_000_000


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
    in raw-score space (log-odds for binary, per-class softmax input for multiclass)."""

    kind = "lightgbm"
    explanation_method = "exact"

    def __init__(self, booster: lightgbm.Booster, n_classes: int, n_features: int) -> None:
        self.booster = booster
        self.n_classes = n_classes
        self.n_features = n_features

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = as_matrix(X, self.n_features)
        # One thread: this runs per request, and OpenMP fan-out on a single row costs
        # more than it saves and fights with the server's own workers.
        proba = np.asarray(self.booster.predict(X, num_threads=1))
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
            return _linear_contributions(self.estimator, self.sources, X, self.n_classes)
        if self.reference is None:
            raise ArtifactError("this model was saved without a reference row; it cannot be explained")
        return occlusion_contributions(self.estimator.predict_proba, self.n_classes, X, self.reference)


# --------------------------------------------------------------------------- save / load


def save_model(estimator: Any, directory: Path, reference: np.ndarray | None = None) -> dict[str, str]:
    """Write a fitted estimator into ``directory``; return {file name: sha256} of every file written.

    ``reference`` is one row of feature values (median for numeric, mode for categorical,
    NaN allowed) that occlusion explanations compare against. It is required for
    HistGradientBoosting and RandomForest models and stored, when given, for the others.
    """
    import skops.io
    from sklearn.pipeline import Pipeline

    directory = Path(directory)
    kind, n_classes, n_features = _describe(estimator)
    if kind == "lightgbm":
        model_file = LIGHTGBM_FILE
        model_bytes = estimator.booster_.model_to_string().encode("utf-8")
        # Refuse now what load_model would refuse later.
        _check_lightgbm_shape(check_lightgbm_text(model_bytes), n_classes, n_features)
    else:
        model_file = SKOPS_FILE
        model_bytes = skops.io.dumps(estimator)
        # Refuse now what load_model would refuse later.
        _skops_trusted(model_bytes)
    sources = _pipeline_sources(estimator) if isinstance(estimator, Pipeline) else None
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
    }
    manifest[MODEL_JSON] = write_json(directory / MODEL_JSON, meta)
    return manifest


def load_model(directory: Path, manifest: dict[str, str]) -> Predictor:
    """Check every manifest file against its sha256, then read the model without running its code."""
    meta, data, trusted = _checked_model(Path(directory), manifest)
    if meta["kind"] == "lightgbm":
        return _load_lightgbm(data, meta)
    return _load_sklearn(data, meta, trusted)


def check_model(directory: Path, manifest: dict[str, str]) -> None:
    """Everything ``load_model`` checks before a parser sees a byte of the model: hashes,
    model.json, and the model file's own format (the LightGBM text in full, a skops file's types)."""
    _checked_model(Path(directory), manifest)


def _checked_model(directory: Path, manifest: dict[str, str]) -> tuple[dict[str, Any], bytes, list[str]]:
    """(model.json's description, the model file's bytes, the skops types to trust) once all is checked."""
    check_manifest(manifest)
    if MODEL_JSON not in manifest:
        raise ArtifactError(f"manifest does not list {MODEL_JSON}")
    model_files = [name for name in (LIGHTGBM_FILE, SKOPS_FILE) if name in manifest]
    if len(model_files) != 1:
        raise ArtifactError(f"manifest must list exactly one model file, got {model_files or 'none'}")
    model_file = model_files[0]

    contents: dict[str, bytes] = {}
    for name, expected in manifest.items():
        path = directory / name
        check_regular(path, name)
        if name in (MODEL_JSON, model_file):
            # Parse exactly the bytes that were hashed (no check-then-reopen race).
            data = path.read_bytes()
            check_hash(name, hashlib.sha256(data).hexdigest(), expected)
            contents[name] = data
        else:
            check_hash(name, sha256_file(path), expected)

    meta = read_model_json(contents[MODEL_JSON])
    expected_file = LIGHTGBM_FILE if meta["kind"] == "lightgbm" else SKOPS_FILE
    if model_file != expected_file:
        raise ArtifactError(f"model.json says kind {meta['kind']!r} but the manifest lists {model_file}")
    _warn_on_version_mismatch(meta)
    if meta["kind"] == "lightgbm":
        # LightGBM's C parser trusts its input (a bad feature index reads out of bounds when it
        # predicts), so it only ever sees text the strict reader has accepted.
        _check_lightgbm_shape(
            check_lightgbm_text(contents[model_file]), meta["n_classes"], meta["n_features"]
        )
        return meta, contents[model_file], []
    return meta, contents[model_file], _skops_trusted(contents[model_file])


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


def _load_lightgbm(data: bytes, meta: dict[str, Any]) -> LightGBMPredictor:
    """A LightGBMPredictor over text ``_checked_model`` has accepted."""
    import lightgbm

    try:
        booster = lightgbm.Booster(model_str=data.decode("utf-8"))
    except lightgbm.basic.LightGBMError as exc:
        raise ArtifactError(f"{LIGHTGBM_FILE} is not a readable LightGBM text model: {exc}") from exc
    return LightGBMPredictor(booster, meta["n_classes"], meta["n_features"])


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
            sources = _pipeline_sources(estimator)
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


# --------------------------------------------------------------------------- explanations


def as_matrix(X: np.ndarray, n_features: int) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != n_features:
        raise InvalidInput(f"expected a 2-D array with {n_features} feature columns, got shape {X.shape}")
    return X


def _pipeline_sources(pipeline: Pipeline) -> np.ndarray:
    """Source feature index of every column the pipeline's preprocessing feeds to the
    LogisticRegression; raises ValueError for steps whose columns cannot be traced."""
    n_features = int(pipeline.n_features_in_)
    sources = np.arange(n_features)
    for _, step in pipeline.steps[:-1]:
        sources = _output_sources(step, sources)
    width = pipeline[-1].coef_.shape[1]
    if len(sources) != width:
        raise ValueError(f"traced {len(sources)} transformed columns, the model has {width}")
    return sources


def _output_sources(transformer: Any, inputs: np.ndarray) -> np.ndarray:
    """For a fitted transformer whose input columns come from source features ``inputs``,
    the source feature of each output column."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, OneHotEncoder, RobustScaler, StandardScaler

    if transformer is None or transformer == "passthrough":
        return inputs
    if isinstance(transformer, Pipeline):
        for _, step in transformer.steps:
            inputs = _output_sources(step, inputs)
        return inputs
    if isinstance(transformer, ColumnTransformer):
        width = max((s.stop for s in transformer.output_indices_.values()), default=0)
        out = np.full(width, -1)
        for name, part, columns in transformer.transformers_:
            piece = transformer.output_indices_[name]
            if part == "drop" or piece.stop == piece.start:
                continue
            try:
                selected = inputs[np.arange(len(inputs))[columns]]
            except (IndexError, TypeError) as exc:
                raise ValueError(f"column selection {columns!r} of {name!r} is not positional") from exc
            part_sources = _output_sources(part, selected)
            if len(part_sources) != piece.stop - piece.start:
                raise ValueError(f"cannot trace the columns of transformer {name!r}")
            out[piece] = part_sources
        return out
    if isinstance(transformer, OneHotEncoder):
        if transformer.min_frequency is not None or transformer.max_categories is not None:
            raise ValueError("OneHotEncoder with infrequent categories is not supported")
        dropped = transformer.drop_idx_
        counts = [
            len(cats) - (dropped is not None and dropped[i] is not None)
            for i, cats in enumerate(transformer.categories_)
        ]
        return np.repeat(inputs, counts)
    if isinstance(transformer, SimpleImputer):
        statistics = np.asarray(transformer.statistics_, dtype=np.float64)
        # Features with no observed value at fit are dropped unless keep_empty_features.
        kept = inputs if transformer.keep_empty_features else inputs[~np.isnan(statistics)]
        if transformer.add_indicator:
            kept = np.concatenate((kept, inputs[transformer.indicator_.features_]))
        return kept
    if isinstance(transformer, StandardScaler | MinMaxScaler | RobustScaler | MaxAbsScaler):
        return inputs
    raise ValueError(f"cannot trace columns through {type(transformer).__name__}")


def _linear_contributions(
    pipeline: Pipeline, sources: np.ndarray, X: np.ndarray, n_classes: int
) -> np.ndarray:
    """Exact contributions of a preprocessing + LogisticRegression pipeline, in decision_function
    space: coef x transformed value, summed over the columns that came from each source feature
    (one-hot columns and missing indicators included); bias = intercept.

    Binary: class 1 holds the log-odds terms and class 0 their negation, so both classes sum
    to their own log-odds, as for LightGBM.
    """
    import scipy.sparse

    Z = pipeline[:-1].transform(X)
    if scipy.sparse.issparse(Z):
        Z = Z.toarray()
    model = pipeline[-1]
    n_features = int(pipeline.n_features_in_)
    # (transformed column -> source feature) as a 0/1 matrix so that the regrouping is one matmul.
    to_source = np.zeros((len(sources), n_features))
    to_source[np.arange(len(sources)), sources] = 1.0
    terms = Z[:, None, :] * model.coef_[None, :, :]  # (n, rows of coef_, transformed columns)
    per_feature = terms @ to_source
    bias = np.broadcast_to(model.intercept_, (X.shape[0], model.coef_.shape[0]))[:, :, None]
    scores = np.concatenate((per_feature, bias), axis=2)
    if n_classes == 2:
        return np.concatenate((-scores, scores), axis=1)
    return scores


def _logit(proba: np.ndarray) -> np.ndarray:
    p = np.clip(proba, _PROBA_CLIP, 1.0 - _PROBA_CLIP)
    return np.log(p) - np.log1p(-p)


def occlusion_contributions(
    predict_proba: Callable[[np.ndarray], np.ndarray], n_classes: int, X: np.ndarray, reference: np.ndarray
) -> np.ndarray:
    """Approximate contributions for models without exact attributions (scikit-learn's tree
    ensembles, averaged shard models).

    Per class k the score is the one-vs-rest log-odds logit(p_k) (the usual log-odds for
    binary, with class 0 = -class 1). Feature j's contribution is score(x) minus the score
    of x with feature j set to its reference value; bias = score of the reference row.
    Interactions make the sum differ from score(x) - bias; it is exact only for a row that
    equals the reference.
    """
    n, d = X.shape
    base = _logit(predict_proba(reference[None, :]))[0]
    out = np.empty((n, n_classes, d + 1))
    out[:, :, d] = base
    step = max(1, _OCCLUSION_MAX_CELLS // ((d + 1) * d))
    for start in range(0, n, step):
        rows = X[start : start + step]
        m = rows.shape[0]
        # Block 0 is the rows as given, block j+1 the rows with feature j replaced.
        stacked = np.repeat(rows[None, :, :], d + 1, axis=0)
        stacked[np.arange(1, d + 1), :, np.arange(d)] = reference[:, None]
        scores = _logit(predict_proba(stacked.reshape(-1, d))).reshape(d + 1, m, -1)
        out[start : start + m, :, :d] = (scores[0][None] - scores[1:]).transpose(1, 2, 0)
    return out


def library_versions() -> dict[str, str]:
    """The versions of the libraries that write and read models, by distribution name."""
    # From the installed distributions' metadata: asking costs no import of the libraries.
    return {name: version(name) for name in ("numpy", "pandas", "scikit-learn", "lightgbm", "skops")}


def _qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
