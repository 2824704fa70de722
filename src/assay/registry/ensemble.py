"""Sharded models as artifacts: one LightGBM text model per shard and a JSON manifest.

A sharded (SISA) model is S LightGBM boosters, each trained on the rows whose id hash fell in
its shard; its probabilities are the average of theirs. Each shard is trained in R slices and
the text model after every slice is kept, so that forgetting a row can continue the shard
from the checkpoint before the slice the row joined in, instead of starting again.

Files, all in the version's folder and all listed with their sha256 in the registry manifest:

* ``model.ensemble.json`` — format, classes, width, reference row, shard plan, and every
  model file with its sha256 (so the JSON alone says which bytes belong to the model);
* ``model.shard-007.txt`` — shard 7's model (the text after its last slice);
* ``shard-007.slice-02.txt`` — shard 7's checkpoint after slice 2 (slices before the last);
* ``held-out.npy`` — every shard's probabilities on the version's held-out rows (a NumPy array
  file, read without pickle), listed in the JSON with the sha256 of those rows: a version that
  continues this one after forgetting predicts only the shards it retrained, when its held-out
  rows are these very rows (a shard's probabilities depend on its model and the rows alone).

Serving reads the ``model.*`` files only. Every text model is checked in full by
``assay.registry.lightgbm_text`` before LightGBM's parser sees it, as single models are.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from assay.errors import ArtifactError
from assay.registry.artifacts import LightGBMPredictor, library_versions, read_reference
from assay.registry.attributions import as_matrix, occlusion_contributions
from assay.registry.files import (
    check_hash,
    check_manifest,
    check_regular,
    parse_header,
    write_atomic,
    write_json,
)
from assay.registry.lightgbm_text import LightGBMShape, check_lightgbm_text

if TYPE_CHECKING:
    import lightgbm

# LightGBM is imported where a sharded model is built or loaded, so that reading the registry
# (``assay models``) does not load it.

ENSEMBLE_JSON = "model.ensemble.json"
ENSEMBLE_FORMAT = "assay-sharded-model"
ENSEMBLE_FORMAT_VERSION = 1


def shard_file(shard: int) -> str:
    return f"model.shard-{shard:03d}.txt"


def checkpoint_file(shard: int, slice_: int) -> str:
    return f"shard-{shard:03d}.slice-{slice_:02d}.txt"


HELD_OUT_FILE = "held-out.npy"


def rows_digest(X: np.ndarray) -> str:
    """sha256 of a matrix of rows as float64 (its shape included): which rows these are."""
    X = np.ascontiguousarray(X, dtype=np.float64)
    digest = hashlib.sha256(repr(X.shape).encode())
    digest.update(X.data)
    return digest.hexdigest()


@dataclass
class HeldOut:
    """Each shard's output (LightGBM's ``predict``) on the held-out rows whose ``rows_digest``
    is ``rows``; None for a shard not predicted yet."""

    rows: str
    shards: list[np.ndarray | None]


@dataclass
class ShardedModel:
    """A fitted sharded model: ``texts[s][r]`` is shard s's LightGBM text after slice r.

    It predicts like the served form (the mean of the shards' probabilities), so training
    evaluates it with the same code as any estimator. On ``held_out``'s rows it predicts each
    shard once, and not at all a shard whose output there it was given.
    """

    texts: list[list[str]]
    n_classes: int
    n_features: int
    plan: dict[str, Any]  # shards, slices, seed, trees per slice: what forgetting must repeat
    held_out: HeldOut | None = None
    _boosters: dict[int, lightgbm.Booster] = field(default_factory=dict, repr=False)

    @property
    def classes_(self) -> np.ndarray:
        return np.arange(self.n_classes)

    def _booster(self, s: int) -> lightgbm.Booster:
        import lightgbm

        if s not in self._boosters:
            self._boosters[s] = lightgbm.Booster(model_str=self.texts[s][-1])
        return self._boosters[s]

    def predictor(self) -> ShardedPredictor:
        shards = [
            LightGBMPredictor(self._booster(s), self.n_classes, self.n_features)
            for s in range(len(self.texts))
        ]
        return ShardedPredictor(shards, reference=None)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """The mean of the shards' probabilities, each booster on every core (training evaluates
        whole held-out sets; the served predictor uses one thread per request)."""
        X = as_matrix(X, self.n_features)
        held = self.held_out if self.held_out is not None and self.held_out.rows == rows_digest(X) else None
        total: np.ndarray | None = None
        for s in range(len(self.texts)):  # the served predictor's arithmetic, so the same bits
            p = held.shards[s] if held is not None else None
            if p is None:
                p = np.asarray(self._booster(s).predict(X))
                p.setflags(write=False)
                if held is not None:
                    held.shards[s] = p
            part = np.column_stack((1.0 - p, p)) if self.n_classes == 2 else p
            total = part if total is None else total + part
        assert total is not None
        return total / len(self.texts)


class ShardedPredictor:
    """The served form: the mean of the shards' probabilities. Explained by occlusion against
    the training reference row (the mean of TreeSHAP values would explain the mean raw score,
    which is not what is served)."""

    kind = "sharded"
    explanation_method = "occlusion"

    def __init__(self, shards: list[LightGBMPredictor], reference: np.ndarray | None) -> None:
        self.shards = shards
        self.n_classes = shards[0].n_classes
        self.n_features = shards[0].n_features
        self.reference = reference

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = as_matrix(X, self.n_features)
        total = self.shards[0].predict_proba(X)
        for shard in self.shards[1:]:
            total += shard.predict_proba(X)
        return total / len(self.shards)

    def contributions(self, X: np.ndarray) -> np.ndarray:
        if self.reference is None:
            raise ArtifactError("this sharded model has no reference row; it cannot be explained")
        return occlusion_contributions(
            self.predict_proba, self.n_classes, as_matrix(X, self.n_features), self.reference
        )


def save_sharded(model: ShardedModel, directory: Path, reference: np.ndarray) -> dict[str, str]:
    """Write every shard's model and checkpoints and the JSON that lists them; {file: sha256}."""
    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    shards, checkpoints = [], []
    for s, texts in enumerate(model.texts):
        data = [t.encode("utf-8") for t in texts]
        # The served model is refused now if loading would refuse it later; checkpoints are
        # checked when forgetting reads one to continue from (each check parses the whole text).
        shape = check_lightgbm_text(data[-1])
        if shape.n_features != model.n_features:
            raise ValueError(f"shard {s} takes {shape.n_features} features, not {model.n_features}")
        name = shard_file(s)
        written[name] = write_atomic(directory / name, data[-1])
        shards.append({"file": name, "sha256": written[name]})
        row = []
        for r, text in enumerate(data[:-1]):
            name = checkpoint_file(s, r)
            written[name] = write_atomic(directory / name, text)
            row.append({"file": name, "sha256": written[name]})
        checkpoints.append(row)
    meta = {
        "format": ENSEMBLE_FORMAT,
        "format_version": ENSEMBLE_FORMAT_VERSION,
        "kind": "sharded",
        "n_classes": model.n_classes,
        "n_features": model.n_features,
        "plan": model.plan,
        "reference": [None if np.isnan(v) else float(v) for v in np.asarray(reference, dtype=np.float64)],
        "shards": shards,
        "checkpoints": checkpoints,
        "versions": library_versions(),
    }
    known = [p for p in model.held_out.shards if p is not None] if model.held_out is not None else []
    if model.held_out is not None and len(known) == len(model.texts):  # assessed: every shard known
        out = io.BytesIO()
        np.save(out, np.stack(known).astype("<f8"), allow_pickle=False)
        written[HELD_OUT_FILE] = write_atomic(directory / HELD_OUT_FILE, out.getvalue())
        meta["held_out"] = {
            "file": HELD_OUT_FILE,
            "sha256": written[HELD_OUT_FILE],
            "rows_sha256": model.held_out.rows,
        }
    written[ENSEMBLE_JSON] = write_json(directory / ENSEMBLE_JSON, meta)
    return written


def is_sharded(manifest: dict[str, str]) -> bool:
    return ENSEMBLE_JSON in manifest


def load_sharded(directory: Path, manifest: dict[str, str]) -> ShardedPredictor:
    """The served form of a sharded version, every file checked against both hashes first."""
    meta = _meta(directory, manifest)
    boosters = [_booster(directory, manifest, entry, meta) for entry in meta["shards"]]
    shards = [LightGBMPredictor(b, meta["n_classes"], meta["n_features"]) for b in boosters]
    return ShardedPredictor(shards, read_reference(meta["reference"], meta["n_features"], ENSEMBLE_JSON))


def read_sharded(
    directory: Path, manifest: dict[str, str], restart: Mapping[int, int] | None = None
) -> ShardedModel:
    """The sharded model, checkpoints included, as forgetting continues it: a shard ``restart``
    names is read only up to the slice it restarts at (what is after is trained again).

    Every file read is hash-checked; the shards' models are checked in full (they are parsed
    to evaluate the model), a checkpoint only when one is continued from (``check_text``)."""
    meta = _meta(directory, manifest, checkpoints_too=True)
    restart = restart or {}
    texts = []
    for s, entry in enumerate(meta["shards"]):
        first = restart.get(s, len(meta["checkpoints"][s]) + 1)
        row = [
            _checked_bytes(directory, c["file"], manifest[c["file"]]).decode("utf-8")
            for c in meta["checkpoints"][s][:first]
        ]
        texts.append(row if s in restart else [*row, _text(directory, manifest, entry, meta)])
    held = _held_out(directory, manifest, meta)
    return ShardedModel(texts, meta["n_classes"], meta["n_features"], meta["plan"], held)


def check_text(text: str, n_classes: int, n_features: int) -> str:
    """A shard's text model, refused unless the strict reader accepts it for this shape."""
    _check_shape(check_lightgbm_text(text.encode("utf-8")), n_classes, n_features, "a checkpoint")
    return text


def _meta(directory: Path, manifest: dict[str, str], *, checkpoints_too: bool = False) -> dict[str, Any]:
    """``model.ensemble.json`` checked: its hash, its fields, and that the manifest lists every
    model file it names with the same sha256 (checkpoints too when they are to be read)."""
    check_manifest(manifest)
    if ENSEMBLE_JSON not in manifest:
        raise ArtifactError(f"manifest does not list {ENSEMBLE_JSON}")
    meta = parse_header(_checked_bytes(directory, ENSEMBLE_JSON, manifest[ENSEMBLE_JSON]), ENSEMBLE_JSON,
                        ENSEMBLE_FORMAT, ENSEMBLE_FORMAT_VERSION)  # fmt: skip
    for key in ("n_classes", "n_features"):
        if type(meta.get(key)) is not int or meta[key] < (2 if key == "n_classes" else 1):
            raise ArtifactError(f"{ENSEMBLE_JSON} has an invalid {key}: {meta.get(key)!r}")
    shards, checkpoints = meta.get("shards"), meta.get("checkpoints")
    if not isinstance(shards, list) or not shards or not isinstance(checkpoints, list):
        raise ArtifactError(f"{ENSEMBLE_JSON} lists no shards")
    if len(checkpoints) != len(shards) or not isinstance(meta.get("plan"), dict):
        raise ArtifactError(f"{ENSEMBLE_JSON} has a checkpoint list or plan that does not match its shards")
    listed = list(shards)
    if checkpoints_too:
        slices = meta["plan"].get("slices")
        if not all(isinstance(row, list) and len(row) == (slices or 0) - 1 for row in checkpoints):
            raise ArtifactError(f"{ENSEMBLE_JSON} does not list a checkpoint for every slice but the last")
        listed += [c for row in checkpoints for c in row]
    for entry in listed:
        file = entry.get("file") if isinstance(entry, dict) else None
        if not isinstance(file, str) or manifest.get(file) != entry.get("sha256"):
            raise ArtifactError(f"{ENSEMBLE_JSON} lists a file the manifest does not: {entry!r}")
    return meta


def _held_out(directory: Path, manifest: dict[str, str], meta: dict[str, Any]) -> HeldOut | None:
    """The shards' held-out outputs ``save_sharded`` kept (None for a version without them),
    hash-checked, read without pickle, and refused unless float64 probabilities of every shard."""
    entry = meta.get("held_out")
    if entry is None:
        return None
    file, rows = (entry.get(k) if isinstance(entry, dict) else None for k in ("file", "rows_sha256"))
    if file != HELD_OUT_FILE or manifest.get(file) != entry.get("sha256") or not isinstance(rows, str):
        raise ArtifactError(f"{ENSEMBLE_JSON} lists held-out outputs the manifest does not: {entry!r}")
    try:
        data = io.BytesIO(_checked_bytes(directory, file, manifest[file]))
        array = np.lib.format.read_array(data, allow_pickle=False)  # the .npy format alone: no zip
    except (ValueError, EOFError) as exc:
        raise ArtifactError(f"{file} is not a NumPy array file: {exc}") from exc
    shape = (len(meta["shards"]), *array.shape[1:2], *([meta["n_classes"]] if meta["n_classes"] > 2 else []))
    if array.dtype != np.dtype("<f8") or array.shape != shape or not ((array >= 0) & (array <= 1)).all():
        raise ArtifactError(f"{file} does not hold each shard's probabilities as float64")
    array.setflags(write=False)
    return HeldOut(rows, list(array))


def _checked_bytes(directory: Path, name: str, expected: str) -> bytes:
    path = directory / name
    check_regular(path, name)
    data = path.read_bytes()  # the bytes hashed are the bytes parsed
    check_hash(name, hashlib.sha256(data).hexdigest(), expected)
    return data


def _text(directory: Path, manifest: dict[str, str], entry: dict[str, str], meta: dict[str, Any]) -> str:
    data = _checked_bytes(directory, entry["file"], manifest[entry["file"]])
    _check_shape(check_lightgbm_text(data), meta["n_classes"], meta["n_features"], entry["file"])
    return data.decode("utf-8")


def _check_shape(shape: LightGBMShape, n_classes: int, n_features: int, name: str) -> None:
    binary = n_classes == 2
    if (
        shape.n_features != n_features
        or (shape.objective == "binary") != binary
        or (not binary and shape.num_class != n_classes)
    ):
        raise ArtifactError(f"{name} does not match {ENSEMBLE_JSON}'s classes and features")


def _booster(directory: Path, manifest: dict[str, str], entry: dict[str, str], meta: dict[str, Any]) -> Any:
    from assay.registry import lightgbm_lib

    text = _text(directory, manifest, entry, meta)
    try:
        return lightgbm_lib.Booster(text)
    except lightgbm_lib.LightGBMError as exc:
        raise ArtifactError(f"{entry['file']} is not a readable LightGBM text model: {exc}") from exc
