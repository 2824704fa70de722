"""The model registry: immutable versions, aliases that point at them, and gated promotion.

A version is a row in ``versions`` plus a folder of files under the artifact
root whose hashes the row records; neither changes after it is written. An
alias (``production``, ``candidate`` or any name) points at one version, and
every move of an alias is recorded with who, when and why.

Every record a version holds is checked against its contract (``records``)
whenever it is read, and a version's files are written in a locked work folder
(``artifacts.WorkDir``) that becomes the version in one rename, so a process
killed half-way leaves nothing that looks published. Loaded versions are kept
here, one copy per version however many callers hold it, the least recently
used few strongly (``LOAD_CACHE_SIZE``).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from assay.errors import ArtifactError, Conflict, GateFailed, InvalidInput, NotFound
from assay.registry.artifacts import Predictor, check_model, load_model
from assay.registry.bundles import export_bundle, import_bundle
from assay.registry.contracts import CardRecord, EvaluationRecord, LineageRecord
from assay.registry.ensemble import is_sharded, load_sharded
from assay.registry.files import BUNDLE_JSON, WorkDir, check_manifest, remove_stale_workdirs, sha256_file
from assay.registry.gates import check_gates, summarize
from assay.registry.probe import probe_model
from assay.registry.records import (
    check_card,
    check_evaluation,
    check_gate_limits,
    check_lineage,
    check_summary,
)
from assay.registry.schema import FeatureSchema
from assay.store import db, notices
from assay.store.artifact_store import ArtifactStore, LocalArtifactStore

DEFAULT_ALIAS = "production"
# Loaded versions kept in memory after their last use, beyond those a caller still holds.
LOAD_CACHE_SIZE = 4
STAGING_PREFIX = ".staging-"
IMPORT_DIR = ".import"
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
    summary: dict[str, Any]  # a SummaryRecord (gates read it by statistic names they compute)
    lineage: LineageRecord
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
    evaluation: EvaluationRecord
    card: CardRecord
    # operating point name -> {"query": str, "class": str, "threshold": float | None}
    operating_points: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def positive_index(self) -> int | None:
        return None if self.positive is None else self.classes.index(self.positive)

    def decision_threshold(self) -> float:
        return float(self.card["decision_threshold"])


@dataclass(frozen=True)
class Imported:
    """What an import did: the version that holds the bundle, and whether this import added it."""

    record: VersionRecord
    added: bool  # False: the same bundle (or the same files) was already here; nothing was written
    origin: str  # the ref the bundle was exported as, e.g. reverted@2


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
    """Reads and writes versions and aliases in the store; loads artifacts.

    The registry is the one owner of loaded versions in a process: ``load`` hands out the
    copy any caller still holds (weakly tracked, so a version is never in memory twice) and
    keeps the ``cache_size`` most recently loaded ones alive after their callers let go.
    """

    def __init__(
        self,
        engine: Engine,
        artifacts_path: Path,
        *,
        cache_size: int = LOAD_CACHE_SIZE,
        store: ArtifactStore | None = None,
    ) -> None:
        self.engine = engine
        self.artifacts_path = artifacts_path
        # Where versions' files live for every host; artifacts_path caches them (a bucket), or is it.
        self.store = store or LocalArtifactStore()
        self.cache_size = cache_size
        self._recent: OrderedDict[tuple[str, int], LoadedModel] = OrderedDict()
        self._alive: weakref.WeakValueDictionary[tuple[str, int], LoadedModel] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()
        self._staging: dict[Path, WorkDir] = {}  # staging folders this registry holds the locks of
        self._staging_lock = threading.Lock()

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

    def get(self, name: str, version: int, *, retired_ok: bool = False) -> VersionRecord:
        """A version's record; a version retired by a deletion request is not found unless
        ``retired_ok`` (so nothing can alias, load or score it)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(db.versions).where(db.versions.c.model == name, db.versions.c.version == version)
            ).first()
            retired = (
                not retired_ok
                and conn.execute(
                    sa.select(db.retired_versions.c.version).where(
                        db.retired_versions.c.model == name, db.retired_versions.c.version == version
                    )
                ).first()
            )
        if row is None:
            self.model(name)  # unknown model is its own error
            raise NotFound(f"model {name!r} has no version {version}", field="model", code="unknown_version")
        if retired:
            raise NotFound(
                f"{name}@{version} is retired: it held data that was forgotten",
                field="model",
                code="retired_version",
            )
        return self._record(row)

    def retired(self, name: str) -> set[int]:
        """The versions of ``name`` retired by deletion requests."""
        table = db.retired_versions
        with self.engine.connect() as conn:
            return set(conn.execute(sa.select(table.c.version).where(table.c.model == name)).scalars())

    def retire(self, conn: Connection, name: str, version: int, *, request_id: int) -> dict[str, int]:
        """Retire a version in the caller's transaction: it is marked so, and every alias that
        pointed at it is removed (returned, alias -> version, for a replacement to take over)."""
        held = dict(
            conn.execute(
                sa.select(db.aliases.c.alias, db.aliases.c.version).where(
                    db.aliases.c.model == name, db.aliases.c.version == version
                )
            ).all()
        )
        conn.execute(sa.delete(db.aliases).where(db.aliases.c.model == name, db.aliases.c.version == version))
        exists = conn.execute(
            sa.select(db.retired_versions.c.version).where(
                db.retired_versions.c.model == name, db.retired_versions.c.version == version
            )
        ).first()
        if exists is None:
            conn.execute(
                sa.insert(db.retired_versions).values(
                    model=name,
                    version=version,
                    request_id=request_id,
                    retired_at=db.now(),
                    artifacts_deleted=False,
                )
            )
        return held

    def delete_artifacts(self, name: str, version: int) -> None:
        """Delete a retired version's files (its row and record stay, for the audit)."""
        shutil.rmtree(self.artifacts_path / check_name(name) / str(int(version)), ignore_errors=True)
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(db.retired_versions)
                .where(db.retired_versions.c.model == name, db.retired_versions.c.version == version)
                .values(artifacts_deleted=True)
            )

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
        """A store row as a VersionRecord, once its records pass their contracts (a row written
        past the registry is refused here, by name, rather than wherever it is first read)."""
        ref = f"{row.model}@{row.version}"
        try:
            if not isinstance(row.spec, dict):
                raise ArtifactError("spec must be an object")
            check_gate_limits(row.spec.get("gates", {}), "spec: gates")
            check_summary(row.summary)
            lineage = check_lineage(row.lineage)
            check_manifest(row.manifest)
        except ArtifactError as exc:
            raise ArtifactError(f"{ref}: {exc.message}", field=exc.field) from exc
        return VersionRecord(
            model=row.model,
            version=row.version,
            created_at=row.created_at,
            candidate=row.candidate,
            spec=row.spec,
            spec_hash=row.spec_hash,
            data_fingerprint=row.data_fingerprint,
            summary=row.summary,
            lineage=lineage,
            manifest=row.manifest,
            directory=self.artifacts_path / row.model / str(row.version),
        )

    # --- loading --------------------------------------------------------------

    def fetch(self, record: VersionRecord) -> Path:
        """The folder holding the version's files, fetched from the artifact store if need be."""
        try:
            self.store.fetch(record.directory, record.model, record.version, record.manifest)
        except ArtifactError as exc:
            raise ArtifactError(f"{record.ref}: {exc.message}", field=exc.field) from exc
        return record.directory

    def read_json(self, record: VersionRecord, name: str) -> Any:
        """A JSON file of a version, checked against the recorded hash."""
        path = record.directory / name
        expected = record.manifest.get(name)
        if expected is None:
            raise ArtifactError(f"{record.ref}: {name} is not part of this version")
        self.fetch(record)
        if not path.is_file():
            raise ArtifactError(f"{record.ref}: {path} is missing")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != expected:
            raise ArtifactError(f"{record.ref}: {path} is truncated or modified (hash mismatch)")
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:  # the manifest vouches for the bytes, not that they are JSON
            raise ArtifactError(f"{record.ref}: {name} is not valid JSON: {exc}") from exc

    def card(self, record: VersionRecord) -> CardRecord:
        """A version's card.json, hash-checked and held to its contract."""
        return _checked(record, check_card, self.read_json(record, "card.json"))

    def evaluation(self, record: VersionRecord) -> EvaluationRecord:
        """A version's evaluation.json, hash-checked and held to its contract."""
        return _checked(record, check_evaluation, self.read_json(record, "evaluation.json"))

    def load(self, record: VersionRecord) -> LoadedModel:
        """The version ready to score: one copy per process while anyone holds it (versions never
        change), the few most recently used kept after that."""
        key = (record.model, record.version)
        with self._lock:
            loaded = self._alive.get(key)
            if loaded is None:
                loaded = self._assemble(record)
                self._alive[key] = loaded
            self._recent[key] = loaded
            self._recent.move_to_end(key)
            while len(self._recent) > self.cache_size:
                self._recent.popitem(last=False)
        return loaded

    def loaded_versions(self) -> list[tuple[str, int]]:
        """The versions in memory now: (name, version) of every loaded model someone still holds."""
        with self._lock:
            return sorted(self._alive.keys())

    def _assemble(self, record: VersionRecord) -> LoadedModel:
        """Read a version's files (hash-checked; the model without running its code), hold each
        record to its contract and check that they agree with each other: the card's and
        evaluation's classes and statistics, the model's width and classes, the schema and the
        card's features. ``import_`` runs this on a bundle's files before it registers them."""
        card = self.card(record)
        evaluation = self.evaluation(record)
        schema_record = self.read_json(record, "schema.json")
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

    # --- writing --------------------------------------------------------------

    def next_version(self, name: str) -> int:
        with self.engine.connect() as conn:
            current = conn.execute(
                sa.select(sa.func.max(db.versions.c.version)).where(db.versions.c.model == name)
            ).scalar()
        return int(current or 0) + 1

    def staging_dir(self, name: str) -> Path:
        """A fresh folder to write a version's files into before ``add`` publishes it.

        The folder is locked for as long as this registry holds it (until ``add`` publishes it or
        ``discard_staging`` removes it), so that opening the workspace elsewhere meanwhile leaves it
        alone, while one left by a killed process is removed then.
        """
        work = WorkDir(self.artifacts_path / check_name(name), STAGING_PREFIX)
        with self._staging_lock:
            self._staging[work.path] = work
        return work.path

    def discard_staging(self, staging: Path) -> None:
        """Remove an unpublished staging folder."""
        with self._staging_lock:
            work = self._staging.pop(staging, None)
        if work is not None:
            work.discard()
        else:
            shutil.rmtree(staging, ignore_errors=True)

    @contextmanager
    def staging(self, name: str) -> Iterator[Path]:
        """``staging_dir`` for a block: the folder is removed unless ``add`` published it."""
        staging = self.staging_dir(name)
        try:
            yield staging
        finally:
            self.discard_staging(staging)

    def remove_stale_work(self) -> list[Path]:
        """Remove the staging and import folders that processes killed before they finished
        left behind (their locks are free); folders other processes are still writing stay."""
        removed = remove_stale_workdirs(self.artifacts_path / IMPORT_DIR)
        if self.artifacts_path.is_dir():
            for model_dir in sorted(self.artifacts_path.iterdir()):
                if model_dir.is_dir() and not model_dir.name.startswith("."):
                    removed += remove_stale_workdirs(model_dir, STAGING_PREFIX)
        return removed

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
        render: Callable[[int, Path], None] | None = None,
        preferred: int | None = None,
    ) -> VersionRecord:
        """Publish the files in ``staging`` as the model's next version (one transaction, one rename).

        ``preferred`` is a number to take instead when no version of the model holds it (an
        import keeps the number it was exported with, which its card names).

        ``render(version, staging)`` writes the files that name the version (the model card).
        It runs once the version's row has claimed its number in the store, inside that
        transaction, so the number it is given is the one published, however many processes
        add versions of the model at once.
        """
        check_name(name)
        check_summary(summary)
        check_lineage(lineage)
        for attempt in range(5):
            free = preferred is not None and attempt == 0 and version_of(self, name, preferred) is None
            version = preferred if free and preferred is not None else self.next_version(name)
            target = self.artifacts_path / name / str(version)
            try:
                with self.engine.begin() as conn:
                    exists = conn.execute(sa.select(db.models.c.name).where(db.models.c.name == name)).first()
                    if exists is None:
                        conn.execute(sa.insert(db.models).values(name=name, task=task, created_at=db.now()))
                    # The row claims the number (the store keeps (model, version) unique); its
                    # manifest is filled in once the files that name the number exist.
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
                            manifest={},
                        )
                    )
                    if render is not None:
                        render(version, staging)
                    manifest = {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file()}
                    self.store.publish(staging, name, version, manifest)  # before the commit
                    conn.execute(
                        sa.update(db.versions)
                        .where(db.versions.c.model == name, db.versions.c.version == version)
                        .values(manifest=manifest)
                    )
                    target.parent.mkdir(parents=True, exist_ok=True)
                    if target.exists():  # left by a crash between rename and commit: it was never published
                        shutil.rmtree(target)
                    staging.rename(target)
                    notices.publish(conn, notices.REGISTRY, {"model": name, "version": version})
            except sa.exc.IntegrityError:
                continue  # another process took this version number: try the next
            with self._staging_lock:
                work = self._staging.pop(staging, None)
            if work is not None:
                work.release()
            return self.get(name, version)
        raise Conflict(f"could not allocate a version number for {name!r}")

    def set_alias(
        self, name: str, alias: str, version: int, *, actor: str, reason: str, forced: bool, gates: list[dict]
    ) -> None:
        check_name(alias, "alias")
        self.get(name, version)
        try:
            self._move_alias(name, alias, version, actor=actor, reason=reason, forced=forced, gates=gates)
        except sa.exc.IntegrityError:
            # Another process created the alias between our look-up and our insert: it exists now,
            # so the second attempt moves it (and records the move from the version it set).
            self._move_alias(name, alias, version, actor=actor, reason=reason, forced=forced, gates=gates)

    def _move_alias(
        self, name: str, alias: str, version: int, *, actor: str, reason: str, forced: bool, gates: list[dict]
    ) -> None:
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
            notices.publish(conn, notices.REGISTRY, {"model": name, "alias": alias, "version": version})

    def promote(
        self,
        name: str,
        version: int,
        *,
        alias: str = DEFAULT_ALIAS,
        actor: str,
        reason: str = "",
        force: bool = False,
        compared: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Move ``alias`` to ``version`` if the spec's gates pass; returns the gate results.

        ``compared`` is the paired comparison of the alias's holder and ``version`` on the same
        rows (``modelling.promotion`` makes it); regression gates need it. ``force`` moves the
        alias anyway but needs a reason, which is recorded with the gate results.
        """
        record = self.get(name, version)
        holder_version = self.aliases(name).get(alias)
        holder = self.get(name, holder_version) if holder_version is not None else None
        if compared is not None and (compared["a"], compared["b"]) != (holder and holder.ref, record.ref):
            raise Conflict(
                f"the comparison is of {compared['a']} and {compared['b']}, but {alias!r} points at "
                f"{holder and holder.ref}: compare again"
            )
        results = check_gates(record, holder, compared)
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
        export_bundle(self.fetch(record), record.manifest, record.to_dict(), out)
        return record

    def import_(self, path: Path, *, expected_sha256: str | None = None) -> Imported:
        """Add a bundle's version to this workspace, under its own number when that is free.

        A bundle is untrusted, and promotion gates read the summary, so before anything is added:
        the record must have a version's shape and every record inside it must pass its contract,
        the model must load and score its reference row in a throwaway process (a model file that
        crashes the loader kills that process, not this one), the version's files must load here
        and agree, and the summary stored is the one its evaluation gives; a header that claims
        other numbers is refused. Only ``expected_sha256`` (the hash the exporter published) catches
        a forger who rewrote the evaluation and its manifest hash together.

        A bundle already here (imported before, or the very version it was exported from) adds
        nothing: the version that holds it is returned with ``added`` false. Importing never
        moves an alias; the lineage names the origin (model, version, bundle hash).
        """
        path = Path(path)
        bundle_sha256 = sha256_file(path)
        work = WorkDir(self.artifacts_path / IMPORT_DIR, "")
        dest = work.path / "version"
        try:
            try:
                record, manifest = import_bundle(path, dest, expected_sha256=expected_sha256)
                staged = _staged_record(record, manifest, dest)
                # The checks that name what is wrong first, then the probe, then the load here.
                self.card(staged)
                self.evaluation(staged)
                model_files = {k: v for k, v in manifest.items() if k.startswith("model.")}
                if not is_sharded(model_files):  # a sharded model's texts are all checked by its loader
                    check_model(dest, model_files)
                    probe_model(dest, model_files)
                loaded = self._assemble(staged)
                summary = _bundle_summary(record["summary"], loaded.evaluation)
            except ArtifactError as exc:
                raise ArtifactError(f"bundle {path.name}: {exc.message}", field=exc.field) from exc
            origin = f"{record['model']}@{record['version']}"
            existing = self._holder_of(record["model"], bundle_sha256, manifest)
            if existing is not None:
                return Imported(existing, added=False, origin=origin)
            lineage = dict(record["lineage"])
            lineage["imported_from"] = {
                "model": record["model"],
                "version": record["version"],
                "created_at": record["created_at"],
                "bundle_sha256": bundle_sha256,
            }
            added = self.add(
                name=record["model"],
                task="multiclass" if loaded.positive is None else "binary",
                staging=dest,
                candidate=record["candidate"],
                spec=record["spec"],
                spec_hash=record["spec_hash"],
                data_fingerprint=record["data_fingerprint"],
                summary=summary,
                lineage=lineage,
                preferred=record["version"],
            )
            return Imported(added, added=True, origin=origin)
        finally:
            work.discard()

    def _holder_of(self, name: str, bundle_sha256: str, manifest: dict[str, str]) -> VersionRecord | None:
        """The version of ``name`` this bundle already is: imported from the same file, or the same files."""
        columns = (db.versions.c.version, db.versions.c.lineage, db.versions.c.manifest)
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(*columns).where(db.versions.c.model == name).order_by(db.versions.c.version)
            ).all()
        for row in rows:
            origin = (row.lineage or {}).get("imported_from") or {}
            if origin.get("bundle_sha256") == bundle_sha256 or row.manifest == manifest:
                return self.get(name, row.version)
        return None


def version_of(registry: Registry, name: str, version: int) -> VersionRecord | None:
    """The version, or None when the model has no such version (or no such model)."""
    try:
        return registry.get(name, version)
    except NotFound:
        return None


def _checked(record: VersionRecord, check: Callable[[Any, str], Any], value: Any) -> Any:
    """``check(value)``, with the version named in its error."""
    try:
        return check(value, check.__name__.removeprefix("check_") + ".json")
    except ArtifactError as exc:
        raise ArtifactError(f"{record.ref}: {exc.message}", field=exc.field) from exc


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


def _staged_record(record: dict[str, Any], manifest: dict[str, str], directory: Path) -> VersionRecord:
    """A bundle's record as a VersionRecord over its unpacked files, once its shape and its
    records (summary, lineage, the spec's gates) pass their contracts."""
    where = f"{BUNDLE_JSON} record"
    for key, (kind, json_name) in _RECORD_FIELDS.items():
        if key not in record:
            raise ArtifactError(f"{where} has no {key!r}")
        value = record[key]
        # bool is an int to Python, not to a version number.
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ArtifactError(f"{where}: {key} must be {json_name}, got {json.dumps(value)[:60]}")
    check_name(record["model"])
    if record["version"] < 1:
        raise ArtifactError(f"{where}: version must be at least 1, got {record['version']}")
    try:
        created_at = datetime.fromisoformat(record["created_at"])
    except ValueError:
        raise ArtifactError(f"{where}: created_at {record['created_at']!r} is not an ISO timestamp") from None
    # Promotion reads the spec's gates: under each kind, stat names to numbers.
    check_gate_limits(record["spec"].get("gates", {}), f"{where}: spec.gates")
    check_summary(record["summary"], f"{where}: summary")
    return VersionRecord(
        model=record["model"],
        version=record["version"],
        created_at=created_at,
        candidate=record["candidate"],
        spec=record["spec"],
        spec_hash=record["spec_hash"],
        data_fingerprint=record["data_fingerprint"],
        summary=record["summary"],
        lineage=check_lineage(record["lineage"], f"{where}: lineage"),
        manifest=manifest,
        directory=directory,
    )


def _bundle_summary(claimed: dict[str, Any], evaluation: EvaluationRecord) -> dict[str, Any]:
    """The summary ``evaluation`` gives, after refusing a header that claims other numbers."""
    summary = summarize(dict(evaluation), evaluation["positive"])
    check_summary(summary)
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
