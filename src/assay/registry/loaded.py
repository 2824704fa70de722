"""Loaded versions: a version's files read, hash-checked, held to their contracts and assembled
into a ``LoadedModel`` ready to score.

Nothing here runs a model's code to read it: the model files are data (``registry.artifacts``),
and every JSON record passes its check in ``registry.records`` with the version named in the
error. The registry keeps one loaded copy per version (``versions.Registry.load``); import
assembles a bundle's files here before it registers them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from assay.errors import ArtifactError
from assay.registry.artifacts import Predictor, load_model
from assay.registry.contracts import CardRecord, EvaluationRecord, VersionRecord
from assay.registry.ensemble import is_sharded, load_sharded
from assay.registry.records import check_card, check_evaluation
from assay.registry.schema import FeatureSchema
from assay.store.artifact_store import ArtifactStore


@dataclass
class LoadedModel:
    """A version ready to score: its predictor, schema, classes and evaluation."""

    record: VersionRecord
    predictor: Predictor
    schema: FeatureSchema
    classes: list[str]
    positive: str | None
    evaluation: EvaluationRecord
    card: CardRecord
    # operating point name -> {"query": str, "class": str, "threshold": float | None}
    operating_points: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def positive_index(self) -> int | None:
        return None if self.positive is None else self.classes.index(self.positive)

    def decision_threshold(self) -> float:
        return float(self.card["decision_threshold"])


def fetch(store: ArtifactStore, record: VersionRecord) -> Path:
    """The folder holding the version's files, fetched from the artifact store if need be."""
    try:
        store.fetch(record.directory, record.model, record.version, record.manifest)
    except ArtifactError as exc:
        raise ArtifactError(f"{record.ref}: {exc.message}", field=exc.field) from exc
    return record.directory


def read_bytes(store: ArtifactStore, record: VersionRecord, name: str) -> bytes:
    """A file of a version, checked against the recorded hash."""
    path = record.directory / name
    expected = record.manifest.get(name)
    if expected is None:
        raise ArtifactError(f"{record.ref}: {name} is not part of this version")
    fetch(store, record)
    if not path.is_file():
        raise ArtifactError(f"{record.ref}: {path} is missing")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != expected:
        raise ArtifactError(f"{record.ref}: {path} is truncated or modified (hash mismatch)")
    return data


def read_json(store: ArtifactStore, record: VersionRecord, name: str) -> Any:
    """A JSON file of a version, checked against the recorded hash."""
    data = read_bytes(store, record, name)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:  # the manifest vouches for the bytes, not that they are JSON
        raise ArtifactError(f"{record.ref}: {name} is not valid JSON: {exc}") from exc


def read_card(store: ArtifactStore, record: VersionRecord) -> CardRecord:
    """A version's card.json, hash-checked and held to its contract."""
    return _checked(record, check_card, read_json(store, record, "card.json"))


def read_evaluation(store: ArtifactStore, record: VersionRecord) -> EvaluationRecord:
    """A version's evaluation.json, hash-checked and held to its contract."""
    return _checked(record, check_evaluation, read_json(store, record, "evaluation.json"))


def assemble(store: ArtifactStore, record: VersionRecord) -> LoadedModel:
    """Read a version's files (hash-checked; the model without running its code), hold each
    record to its contract and check that they agree with each other: the card's and
    evaluation's classes and statistics, the model's width and classes, the schema and the
    card's features. Import runs this on a bundle's files before it registers them."""
    card = read_card(store, record)
    evaluation = read_evaluation(store, record)
    schema_record = read_json(store, record, "schema.json")
    try:
        schema = FeatureSchema.from_dict(schema_record)
        model_files = {k: v for k, v in record.manifest.items() if k.startswith("model.")}
        load = load_sharded if is_sharded(model_files) else load_model
        predictor: Predictor = load(record.directory, model_files)
    except ArtifactError as exc:
        raise ArtifactError(f"{record.ref}: {exc.message}", field=exc.field) from exc
    classes, positive = card["classes"], card["positive"]
    if card["model"] != record.model:
        raise ArtifactError(f"{record.ref}: card.json is the card of model {card['model']!r}")
    if card["evaluation"] != evaluation:
        raise ArtifactError(f"{record.ref}: card.json and evaluation.json give different statistics")
    if predictor.n_classes != len(classes):
        raise ArtifactError(
            f"{record.ref}: the model predicts {predictor.n_classes} classes, card.json names {len(classes)}"
        )
    if predictor.n_features != len(schema.features):
        raise ArtifactError(
            f"{record.ref}: the model takes {predictor.n_features} features, "
            f"schema.json describes {len(schema.features)}"
        )
    if [(f["name"], f["kind"]) for f in card["features"]] != [(f.name, f.kind) for f in schema.features]:
        raise ArtifactError(f"{record.ref}: card.json and schema.json describe different features")
    return LoadedModel(
        record=record,
        predictor=predictor,
        schema=schema,
        classes=list(classes),
        positive=positive,
        evaluation=evaluation,
        card=card,
        operating_points={
            name: {
                "query": op["query"],
                "class": op["class"],
                "threshold": None if op["answer"] is None else op["answer"]["threshold"],
            }
            for name, op in card["operating_points"].items()
        },
    )


def _checked(record: VersionRecord, check: Callable[[Any, str], Any], value: Any) -> Any:
    """``check(value)``, with the version named in its error."""
    try:
        return check(value, check.__name__.removeprefix("check_") + ".json")
    except ArtifactError as exc:
        raise ArtifactError(f"{record.ref}: {exc.message}", field=exc.field) from exc
