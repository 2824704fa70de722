"""The model registry: immutable versions, what they hold, and who may read and write them.

A version is a row in ``versions`` plus a folder of files under the artifact
root whose hashes the row records; neither changes after it is written. Aliases that point at
versions live in ``registry.aliases``, importing a bundle in ``registry.importer``, reading a
version's files into a scoring-ready model in ``registry.loaded``.

Every record a version holds is checked against its contract (``records``)
whenever it is read, and a version's files are written in a locked work folder
(``files.WorkDir``) that becomes the version in one rename, so a process
killed half-way leaves nothing that looks published. Loaded versions are kept
here, one copy per version however many callers hold it, the least recently
used few strongly (``LOAD_CACHE_SIZE``).
"""

from __future__ import annotations

import functools
import shutil
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from assay.errors import ArtifactError, Conflict, NotFound
from assay.registry import aliases, loaded
from assay.registry.bundles import export_bundle
from assay.registry.contracts import CardRecord, EvaluationRecord, VersionRecord
from assay.registry.files import WorkDir, check_manifest, remove_stale_workdirs, sha256_file
from assay.registry.loaded import LoadedModel
from assay.registry.records import check_gate_limits, check_lineage, check_summary
from assay.registry.refs import DEFAULT_ALIAS, check_name, parse_ref, version_number
from assay.store import db, notices, tables
from assay.store.artifact_store import ArtifactStore, LocalArtifactStore

# Loaded versions kept in memory after their last use, beyond those a caller still holds.
LOAD_CACHE_SIZE = 4
STAGING_PREFIX = ".staging-"
IMPORT_DIR = ".import"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    task: str
    versions: list[int]
    aliases: dict[str, int]


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
            rows = conn.execute(sa.select(tables.models).order_by(tables.models.c.name)).all()
            vers = conn.execute(sa.select(tables.versions.c.model, tables.versions.c.version)).all()
            als = conn.execute(sa.select(tables.aliases)).all()
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
        return aliases.aliases_of(self.engine, name)

    def get(self, name: str, version: int, *, retired_ok: bool = False) -> VersionRecord:
        """A version's record; a version retired by a deletion request is not found unless
        ``retired_ok`` (so nothing can alias, load or score it)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(tables.versions).where(
                    tables.versions.c.model == name, tables.versions.c.version == version
                )
            ).first()
            retired = (
                not retired_ok
                and conn.execute(
                    sa.select(tables.retired_versions.c.version).where(
                        tables.retired_versions.c.model == name, tables.retired_versions.c.version == version
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
        table = tables.retired_versions
        with self.engine.connect() as conn:
            return set(conn.execute(sa.select(table.c.version).where(table.c.model == name)).scalars())

    def retire(self, conn: Connection, name: str, version: int, *, request_id: int) -> dict[str, int]:
        """Retire a version in the caller's transaction: it is marked so, and every alias that
        pointed at it is removed (returned, alias -> version, for a replacement to take over)."""
        held = dict(
            conn.execute(
                sa.select(tables.aliases.c.alias, tables.aliases.c.version).where(
                    tables.aliases.c.model == name, tables.aliases.c.version == version
                )
            ).all()
        )
        conn.execute(
            sa.delete(tables.aliases).where(
                tables.aliases.c.model == name, tables.aliases.c.version == version
            )
        )
        exists = conn.execute(
            sa.select(tables.retired_versions.c.version).where(
                tables.retired_versions.c.model == name, tables.retired_versions.c.version == version
            )
        ).first()
        if exists is None:
            conn.execute(
                sa.insert(tables.retired_versions).values(
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
                sa.update(tables.retired_versions)
                .where(tables.retired_versions.c.model == name, tables.retired_versions.c.version == version)
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
        return aliases.alias_history(self.engine, name)

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
        return loaded.fetch(self.store, record)

    def read_bytes(self, record: VersionRecord, name: str) -> bytes:
        """A file of a version, checked against the recorded hash."""
        return loaded.read_bytes(self.store, record, name)

    def read_json(self, record: VersionRecord, name: str) -> Any:
        """A JSON file of a version, checked against the recorded hash."""
        return loaded.read_json(self.store, record, name)

    def card(self, record: VersionRecord) -> CardRecord:
        """A version's card.json, hash-checked and held to its contract."""
        return loaded.read_card(self.store, record)

    def evaluation(self, record: VersionRecord) -> EvaluationRecord:
        """A version's evaluation.json, hash-checked and held to its contract."""
        return loaded.read_evaluation(self.store, record)

    def load(self, record: VersionRecord) -> LoadedModel:
        """The version ready to score: one copy per process while anyone holds it (versions never
        change), the few most recently used kept after that."""
        key = (record.model, record.version)
        with self._lock:
            model = self._alive.get(key)
            if model is None:
                model = loaded.assemble(self.store, record)
                self._alive[key] = model
            self._recent[key] = model
            self._recent.move_to_end(key)
            while len(self._recent) > self.cache_size:
                self._recent.popitem(last=False)
        return model

    def loaded_versions(self) -> list[tuple[str, int]]:
        """The versions in memory now: (name, version) of every loaded model someone still holds."""
        with self._lock:
            return sorted(self._alive.keys())

    # --- writing --------------------------------------------------------------

    def next_version(self, name: str) -> int:
        with self.engine.connect() as conn:
            current = conn.execute(
                sa.select(sa.func.max(tables.versions.c.version)).where(tables.versions.c.model == name)
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
        row = {
            "candidate": candidate,
            "spec": spec,
            "spec_hash": spec_hash,
            "data_fingerprint": data_fingerprint,
            "summary": summary,
            "lineage": lineage,
        }
        for attempt in range(5):
            free = preferred is not None and attempt == 0 and version_of(self, name, preferred) is None
            version = preferred if free and preferred is not None else self.next_version(name)
            try:
                with self.engine.begin() as conn:
                    self._claim(conn, name, task, version, row)
                    if render is not None:
                        render(version, staging)
                    self._publish(conn, name, version, staging)
            except sa.exc.IntegrityError:
                continue  # another process took this version number: try the next
            with self._staging_lock:
                work = self._staging.pop(staging, None)
            if work is not None:
                work.release()
            return self.get(name, version)
        raise Conflict(f"could not allocate a version number for {name!r}")

    def _claim(self, conn: Connection, name: str, task: str, version: int, row: dict[str, Any]) -> None:
        """Insert the version's row (and the model's, for its first version) in ``add``'s transaction.

        The row claims the number (the store keeps (model, version) unique: a number another
        process took raises IntegrityError); its manifest is filled in by ``_publish`` once the
        files that name the number exist.
        """
        exists = conn.execute(sa.select(tables.models.c.name).where(tables.models.c.name == name)).first()
        if exists is None:
            conn.execute(sa.insert(tables.models).values(name=name, task=task, created_at=db.now()))
        conn.execute(
            sa.insert(tables.versions).values(
                model=name, version=version, created_at=db.now(), manifest={}, **row
            )
        )

    def _publish(self, conn: Connection, name: str, version: int, staging: Path) -> None:
        """Hash the staged files, hand them to the artifact store, record the manifest and move the
        folder into place, all before ``add``'s transaction commits (a crash leaves no version)."""
        manifest = {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file()}
        self.store.publish(staging, name, version, manifest)  # before the commit
        conn.execute(
            sa.update(tables.versions)
            .where(tables.versions.c.model == name, tables.versions.c.version == version)
            .values(manifest=manifest)
        )
        target = self.artifacts_path / name / str(version)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():  # left by a crash between rename and commit: it was never published
            shutil.rmtree(target)
        staging.rename(target)
        notices.publish(conn, notices.REGISTRY, {"model": name, "version": version})

    def set_alias(
        self, name: str, alias: str, version: int, *, actor: str, reason: str, forced: bool, gates: list[dict]
    ) -> None:
        check_name(alias, "alias")
        self.get(name, version)
        move = functools.partial(
            aliases.move_alias,
            self.engine,
            name,
            alias,
            version,
            actor=actor,
            reason=reason,
            forced=forced,
            gates=gates,
        )
        try:
            move()
        except sa.exc.IntegrityError:
            # Another process created the alias between our look-up and our insert: it exists now,
            # so the second attempt moves it (and records the move from the version it set).
            move()

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
        results = aliases.promotion_gates(
            record, holder, alias, reason=reason, force=force, compared=compared
        )
        self.set_alias(name, alias, version, actor=actor, reason=reason, forced=force, gates=results)
        return results

    # --- sharing --------------------------------------------------------------

    def export(self, ref: str, out: Path) -> VersionRecord:
        record = self.resolve(ref)
        export_bundle(self.fetch(record), record.manifest, record.to_dict(), out)
        return record


def version_of(registry: Registry, name: str, version: int) -> VersionRecord | None:
    """The version, or None when the model has no such version (or no such model)."""
    try:
        return registry.get(name, version)
    except NotFound:
        return None
