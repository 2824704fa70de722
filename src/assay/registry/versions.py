"""The model registry: immutable versions, aliases that point at them, and gated promotion.

A version is a row in ``versions`` plus a folder of files under the artifact
root whose hashes the row records; neither changes after it is written. An
alias (``production``, ``candidate`` or any name) points at one version, and
every move of an alias is recorded with who, when and why.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from assay.errors import ArtifactError, Conflict, GateFailed, InvalidInput, NotFound
from assay.registry.artifacts import BUNDLE_JSON, Predictor, load_model, sha256_file
from assay.registry.bundles import export_bundle, import_bundle
from assay.registry.gates import check_gates, summarize
from assay.registry.schema import FeatureSchema
from assay.store import db

DEFAULT_ALIAS = "production"
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def check_name(name: str, what: str = "model name") -> str:
    """Model and alias names end up in paths and URLs: keep them to a safe alphabet."""
    if not name or not set(name) <= _NAME_CHARS or name.startswith(".") or len(name) > 100:
        raise InvalidInput(f"{what} {name!r} must be 1-100 of letters, digits, '_', '-', '.'", field=what)
    return name


@dataclass(frozen=True)
class VersionRecord:
    """One registry version as stored (no artifact loaded)."""

    model: str
    version: int
    created_at: datetime
    candidate: str
    spec: dict[str, Any]
    spec_hash: str
    data_fingerprint: str
    summary: dict[str, Any]
    lineage: dict[str, Any]
    manifest: dict[str, str]
    directory: Path

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "created_at": self.created_at.isoformat(),
            "candidate": self.candidate,
            "spec": self.spec,
            "spec_hash": self.spec_hash,
            "data_fingerprint": self.data_fingerprint,
            "summary": self.summary,
            "lineage": self.lineage,
        }


@dataclass
class LoadedModel:
    """A version ready to score: its predictor, schema, classes and evaluation."""

    record: VersionRecord
    predictor: Predictor
    schema: FeatureSchema
    classes: list[str]
    positive: str | None
    evaluation: dict[str, Any]
    card: dict[str, Any]
    # operating point name -> {"query": str, "class": str, "threshold": float | None}
    operating_points: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def positive_index(self) -> int | None:
        return None if self.positive is None else self.classes.index(self.positive)

    def decision_threshold(self) -> float:
        return float(self.card.get("decision_threshold", 0.5))


@dataclass(frozen=True)
class ModelInfo:
    name: str
    task: str
    versions: list[int]
    aliases: dict[str, int]


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``name``, ``name@3`` or ``name@alias`` -> (name, version-or-alias or None)."""
    name, _, which = ref.partition("@")
    return check_name(name), (which or None)


def version_number(which: str) -> int | None:
    """The version a reference's suffix names, or None when it names an alias.

    Only plain ASCII digits count (``str.isdigit`` also accepts "²"), and a number too long to be a
    version is an alias that will not be found rather than an overflow in the store.
    """
    if which.isascii() and which.isdigit() and len(which) <= 9:
        return int(which)
    return None


class Registry:
    """Reads and writes versions and aliases in the store; loads artifacts (cached per version)."""

    def __init__(self, engine: Engine, artifacts_path: Path) -> None:
        self.engine = engine
        self.artifacts_path = artifacts_path
        self._loaded: dict[tuple[str, int], LoadedModel] = {}
        self._lock = threading.Lock()

    # --- reading --------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(db.models).order_by(db.models.c.name)).all()
            vers = conn.execute(sa.select(db.versions.c.model, db.versions.c.version)).all()
            als = conn.execute(sa.select(db.aliases)).all()
        out = []
        for row in rows:
            out.append(
                ModelInfo(
                    name=row.name,
                    task=row.task,
                    versions=sorted(v.version for v in vers if v.model == row.name),
                    aliases={a.alias: a.version for a in als if a.model == row.name},
                )
            )
        return out

    def model(self, name: str) -> ModelInfo:
        for info in self.models():
            if info.name == name:
                return info
        raise NotFound(f"unknown model {name!r}", field="model", code="unknown_model")

    def aliases(self, name: str) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(db.aliases).where(db.aliases.c.model == name)).all()
        return {r.alias: r.version for r in rows}

    def get(self, name: str, version: int) -> VersionRecord:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(db.versions).where(db.versions.c.model == name, db.versions.c.version == version)
            ).first()
        if row is None:
            self.model(name)  # unknown model is its own error
            raise NotFound(f"model {name!r} has no version {version}", field="model", code="unknown_version")
        return self._record(row)

    def resolve(self, ref: str, default_alias: str = DEFAULT_ALIAS) -> VersionRecord:
        """The version a reference means: ``name`` (its default alias), ``name@3`` or ``name@alias``."""
        name, which = parse_ref(ref)
        which = which or default_alias
        number = version_number(which)
        if number is not None:
            return self.get(name, number)
        version = self.aliases(name).get(which)
        if version is None:
            self.model(name)
            raise NotFound(f"model {name!r} has no alias {which!r}", field="model", code="unknown_alias")
        return self.get(name, version)

    def history(self, name: str) -> list[dict[str, Any]]:
        """Every alias move of a model, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(db.alias_events)
                .where(db.alias_events.c.model == name)
                .order_by(db.alias_events.c.id)
            ).all()
        return [
            {
                "alias": r.alias,
                "from_version": r.from_version,
                "to_version": r.to_version,
                "actor": r.actor,
                "reason": r.reason,
                "forced": r.forced,
                "gates": r.gates,
                "at": r.at.isoformat(),
            }
            for r in rows
        ]

    def _record(self, row: Any) -> VersionRecord:
        return VersionRecord(
            model=row.model,
            version=row.version,
            created_at=row.created_at,
            candidate=row.candidate,
            spec=row.spec,
            spec_hash=row.spec_hash,
            data_fingerprint=row.data_fingerprint,
            summary=row.summary,
            lineage=row.lineage,
            manifest=row.manifest,
            directory=self.artifacts_path / row.model / str(row.version),
        )

    # --- loading --------------------------------------------------------------

    def read_json(self, record: VersionRecord, name: str) -> Any:
        """A JSON file of a version, checked against the recorded hash."""
        path = record.directory / name
        expected = record.manifest.get(name)
        if expected is None:
            raise ArtifactError(f"{record.ref}: {name} is not part of this version")
        if not path.is_file():
            raise ArtifactError(f"{record.ref}: {path} is missing")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != expected:
            raise ArtifactError(f"{record.ref}: {path} is truncated or modified (hash mismatch)")
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:  # the manifest vouches for the bytes, not that they are JSON
            raise ArtifactError(f"{record.ref}: {name} is not valid JSON: {exc}") from exc

    def load(self, record: VersionRecord) -> LoadedModel:
        """The version ready to score; loaded once per process and kept (versions never change)."""
        key = (record.model, record.version)
        loaded = self._loaded.get(key)
        if loaded is not None:
            return loaded
        with self._lock:
            loaded = self._loaded.get(key)
            if loaded is None:
                loaded = self._assemble(record)
                self._loaded[key] = loaded
        return loaded

    def _assemble(self, record: VersionRecord) -> LoadedModel:
        """Read a version's files (hash-checked; the model without running its code) and check that
        they agree with each other: the card's and evaluation's classes, the model's width and the
        schema. ``import_`` runs this on a bundle's files before it registers them."""
        card = self.read_json(record, "card.json")
        evaluation = self.read_json(record, "evaluation.json")
        model_files = {k: v for k, v in record.manifest.items() if k.startswith("model.")}
        predictor = load_model(record.directory, model_files)
        try:
            schema = FeatureSchema.from_dict(self.read_json(record, "schema.json"))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ArtifactError(f"{record.ref}: schema.json is not a feature schema ({exc!r})") from exc
        if not isinstance(card, dict) or not isinstance(evaluation, dict):
            raise ArtifactError(f"{record.ref}: card.json and evaluation.json must be JSON objects")
        classes, positive = card.get("classes"), card.get("positive")
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise ArtifactError(f"{record.ref}: card.json classes must be a list of class names")
        if (evaluation.get("classes"), evaluation.get("positive")) != (classes, positive):
            raise ArtifactError(
                f"{record.ref}: evaluation.json is about classes {evaluation.get('classes')!r} "
                f"(positive {evaluation.get('positive')!r}), card.json about {classes!r} (positive {positive!r})"
            )
        if predictor.n_classes != len(classes):
            raise ArtifactError(
                f"{record.ref}: the model predicts {predictor.n_classes} classes, card.json names {len(classes)}"
            )
        if predictor.n_features != len(schema.features):
            raise ArtifactError(
                f"{record.ref}: the model takes {predictor.n_features} features, "
                f"schema.json describes {len(schema.features)}"
            )
        points = card.get("operating_points") or {}
        if not isinstance(points, dict) or not all(
            isinstance(op, dict) and isinstance(op.get("query"), str) for op in points.values()
        ):
            raise ArtifactError(f"{record.ref}: card.json operating_points must map names to {{query, ...}}")
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
                    "class": op.get("class"),
                    "threshold": (op.get("answer") or {}).get("threshold"),
                }
                for name, op in points.items()
            },
        )

    # --- writing --------------------------------------------------------------

    def next_version(self, name: str) -> int:
        with self.engine.connect() as conn:
            current = conn.execute(
                sa.select(sa.func.max(db.versions.c.version)).where(db.versions.c.model == name)
            ).scalar()
        return int(current or 0) + 1

    def staging_dir(self, name: str) -> Path:
        """A fresh folder to write a version's files into before ``add`` publishes it."""
        root = self.artifacts_path / check_name(name)
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".staging-", dir=root))

    def add(
        self,
        *,
        name: str,
        task: str,
        staging: Path,
        candidate: str,
        spec: dict[str, Any],
        spec_hash: str,
        data_fingerprint: str,
        summary: dict[str, Any],
        lineage: dict[str, Any],
    ) -> VersionRecord:
        """Publish the files in ``staging`` as the model's next version (one transaction, one rename)."""
        check_name(name)
        manifest = {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file()}
        for _attempt in range(5):
            version = self.next_version(name)
            target = self.artifacts_path / name / str(version)
            try:
                with self.engine.begin() as conn:
                    exists = conn.execute(sa.select(db.models.c.name).where(db.models.c.name == name)).first()
                    if exists is None:
                        conn.execute(sa.insert(db.models).values(name=name, task=task, created_at=db.now()))
                    conn.execute(
                        sa.insert(db.versions).values(
                            model=name,
                            version=version,
                            created_at=db.now(),
                            candidate=candidate,
                            spec=spec,
                            spec_hash=spec_hash,
                            data_fingerprint=data_fingerprint,
                            summary=summary,
                            lineage=lineage,
                            manifest=manifest,
                        )
                    )
                    target.parent.mkdir(parents=True, exist_ok=True)
                    if target.exists():  # left by a crash between rename and commit: it was never published
                        shutil.rmtree(target)
                    staging.rename(target)
            except sa.exc.IntegrityError:
                continue  # another process took this version number: try the next
            return self.get(name, version)
        raise Conflict(f"could not allocate a version number for {name!r}")

    def set_alias(
        self, name: str, alias: str, version: int, *, actor: str, reason: str, forced: bool, gates: list[dict]
    ) -> None:
        check_name(alias, "alias")
        self.get(name, version)
        with self.engine.begin() as conn:
            current = conn.execute(
                sa.select(db.aliases.c.version).where(db.aliases.c.model == name, db.aliases.c.alias == alias)
            ).scalar()
            if current is None:
                conn.execute(
                    sa.insert(db.aliases).values(
                        model=name, alias=alias, version=version, updated_at=db.now()
                    )
                )
            else:
                conn.execute(
                    sa.update(db.aliases)
                    .where(db.aliases.c.model == name, db.aliases.c.alias == alias)
                    .values(version=version, updated_at=db.now())
                )
            conn.execute(
                sa.insert(db.alias_events).values(
                    model=name,
                    alias=alias,
                    from_version=current,
                    to_version=version,
                    actor=actor,
                    reason=reason,
                    forced=forced,
                    gates=gates,
                    at=db.now(),
                )
            )

    def promote(
        self,
        name: str,
        version: int,
        *,
        alias: str = DEFAULT_ALIAS,
        actor: str,
        reason: str = "",
        force: bool = False,
    ) -> list[dict[str, Any]]:
        """Move ``alias`` to ``version`` if the spec's gates pass; returns the gate results.

        ``force`` moves it anyway but needs a reason, which is recorded with the gate results.
        """
        record = self.get(name, version)
        holder_version = self.aliases(name).get(alias)
        holder = self.get(name, holder_version) if holder_version is not None else None
        results = check_gates(record, holder)
        failed = [r for r in results if not r["passed"]]
        if failed and not force:
            raise GateFailed(
                f"{record.ref} does not pass its gates for {alias!r}: "
                + "; ".join(r["message"] for r in failed)
                + " (use --force with a reason to promote anyway)"
            )
        if force and not reason.strip():
            raise InvalidInput("a forced promotion needs a reason", field="reason")
        self.set_alias(name, alias, version, actor=actor, reason=reason, forced=force, gates=results)
        return results

    # --- sharing --------------------------------------------------------------

    def export(self, ref: str, out: Path) -> VersionRecord:
        record = self.resolve(ref)
        export_bundle(record.directory, record.manifest, record.to_dict(), out)
        return record

    def import_(self, path: Path, *, expected_sha256: str | None = None) -> VersionRecord:
        """Add a bundle's version as the next version of its model in this workspace.

        A bundle is untrusted, and promotion gates read the summary, so before anything is added:
        the record must have a version's shape, the version's files must load and agree (the model
        through the safe loader), and the summary stored is the one its evaluation gives; a header
        that claims other numbers is refused. Only ``expected_sha256`` (the hash the exporter
        published) catches a forger who rewrote the evaluation and its manifest hash together.
        """
        path = Path(path)
        staging_root = self.artifacts_path / ".import"
        staging_root.mkdir(parents=True, exist_ok=True)
        dest = Path(tempfile.mkdtemp(dir=staging_root))
        try:
            try:
                record, manifest = import_bundle(path, dest, expected_sha256=expected_sha256)
                staged = _staged_record(record, manifest, dest)
                loaded = self._assemble(staged)
                summary = _bundle_summary(record["summary"], loaded.evaluation)
            except ArtifactError as exc:
                raise ArtifactError(f"bundle {path.name}: {exc.message}") from exc
            lineage = dict(record["lineage"])
            lineage["imported_from"] = {
                "model": record["model"],
                "version": record["version"],
                "created_at": record["created_at"],
                "bundle_sha256": sha256_file(path),
            }
            # The imported version's own number is assigned here; the card keeps the original.
            return self.add(
                name=record["model"],
                task="multiclass" if loaded.positive is None else "binary",
                staging=dest,
                candidate=record["candidate"],
                spec=record["spec"],
                spec_hash=record["spec_hash"],
                data_fingerprint=record["data_fingerprint"],
                summary=summary,
                lineage=lineage,
            )
        finally:
            if dest.exists():
                shutil.rmtree(dest, ignore_errors=True)


# What a bundle's record must hold (VersionRecord.to_dict): each field's type, and its JSON name.
_RECORD_FIELDS: dict[str, tuple[type, str]] = {
    "model": (str, "a string"),
    "version": (int, "an integer"),
    "created_at": (str, "a string"),
    "candidate": (str, "a string"),
    "spec": (dict, "an object"),
    "spec_hash": (str, "a string"),
    "data_fingerprint": (str, "a string"),
    "summary": (dict, "an object"),
    "lineage": (dict, "an object"),
}
_GATE_KINDS = ("minimum", "max_regression", "fairness")


def _staged_record(record: dict[str, Any], manifest: dict[str, str], directory: Path) -> VersionRecord:
    """A bundle's record as a VersionRecord over its unpacked files, once its shape is checked."""
    where = f"{BUNDLE_JSON} record"
    for key, (kind, json_name) in _RECORD_FIELDS.items():
        if key not in record:
            raise ArtifactError(f"{where} has no {key!r}")
        value = record[key]
        # bool is an int to Python, not to a version number.
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ArtifactError(f"{where}: {key} must be {json_name}, got {json.dumps(value)[:60]}")
    check_name(record["model"])
    try:
        created_at = datetime.fromisoformat(record["created_at"])
    except ValueError:
        raise ArtifactError(f"{where}: created_at {record['created_at']!r} is not an ISO timestamp") from None
    # Promotion reads the spec's gates: under each kind, stat names to numbers.
    gates = record["spec"].get("gates", {})
    for kind in _GATE_KINDS:
        limits = gates.get(kind, {}) if isinstance(gates, dict) else None
        if not isinstance(limits, dict) or not all(_is_number(v) for v in limits.values()):
            raise ArtifactError(f"{where}: spec.gates.{kind} must map stat names to numbers")
    return VersionRecord(
        model=record["model"],
        version=record["version"],
        created_at=created_at,
        candidate=record["candidate"],
        spec=record["spec"],
        spec_hash=record["spec_hash"],
        data_fingerprint=record["data_fingerprint"],
        summary=record["summary"],
        lineage=record["lineage"],
        manifest=manifest,
        directory=directory,
    )


def _bundle_summary(claimed: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
    """The summary ``evaluation`` gives, after refusing a header that claims other numbers."""
    try:
        summary = summarize(evaluation, evaluation.get("positive"))
    except (KeyError, TypeError, AttributeError) as exc:
        raise ArtifactError(f"evaluation.json lacks what its summary is made of ({exc!r})") from exc
    differences = _differences(claimed, summary, "summary")
    if differences:
        raise ArtifactError(
            f"{BUNDLE_JSON} record disagrees with evaluation.json: " + "; ".join(differences[:5])
        )
    return summary


def _differences(claimed: Any, actual: Any, key: str) -> list[str]:
    """Where ``claimed`` says something ``actual`` does not, as readable lines (keys it omits are fine:
    the actual summary is what gets stored)."""
    if isinstance(claimed, dict) and isinstance(actual, dict):
        return [line for k, v in claimed.items() for line in _differences(v, actual.get(k), f"{key}.{k}")]
    # The summary has been through the store's JSON (PostgreSQL keeps numbers as decimals):
    # equal to rounding is equal.
    if claimed == actual or (
        _is_number(claimed)
        and _is_number(actual)
        and math.isclose(claimed, actual, rel_tol=1e-9, abs_tol=1e-12)
    ):
        return []
    return [f"{key} is {claimed!r}, evaluation.json gives {actual!r}"]


def _is_number(value: Any) -> bool:
    # bool is an int to Python, not to a statistic.
    return isinstance(value, int | float) and not isinstance(value, bool)
