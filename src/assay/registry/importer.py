"""Import: a bundle exported elsewhere becomes a version of this workspace, once it is proven safe.

A bundle is untrusted. Before anything is registered its record must have a version's shape,
every record inside it must pass its contract, the model must load and score a reference row in
a throwaway process, the files must load here and agree, and the summary promotion gates read is
recomputed from its evaluation (a header claiming other numbers is refused).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from assay.errors import ArtifactError
from assay.registry.artifacts import check_model
from assay.registry.bundles import import_bundle
from assay.registry.contracts import EvaluationRecord, VersionRecord
from assay.registry.ensemble import is_sharded
from assay.registry.files import BUNDLE_JSON, WorkDir, sha256_file
from assay.registry.gates import summarize
from assay.registry.loaded import assemble, read_card, read_evaluation
from assay.registry.probe import probe_model
from assay.registry.records import check_gate_limits, check_lineage, check_summary
from assay.registry.refs import check_name
from assay.registry.versions import IMPORT_DIR, Registry
from assay.store import tables


@dataclass(frozen=True)
class Imported:
    """What an import did: the version that holds the bundle, and whether this import added it."""

    record: VersionRecord
    added: bool  # False: the same bundle (or the same files) was already here; nothing was written
    origin: str  # the ref the bundle was exported as, e.g. reverted@2


def import_version(registry: Registry, path: Path, *, expected_sha256: str | None = None) -> Imported:
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
    work = WorkDir(registry.artifacts_path / IMPORT_DIR, "")
    dest = work.path / "version"
    try:
        try:
            record, manifest = import_bundle(path, dest, expected_sha256=expected_sha256)
            staged = _staged_record(record, manifest, dest)
            # The checks that name what is wrong first, then the probe, then the load here.
            read_card(registry.store, staged)
            read_evaluation(registry.store, staged)
            model_files = {k: v for k, v in manifest.items() if k.startswith("model.")}
            if not is_sharded(model_files):  # a sharded model's texts are all checked by its loader
                check_model(dest, model_files)
                probe_model(dest, model_files)
            loaded = assemble(registry.store, staged)
            summary = _bundle_summary(record["summary"], loaded.evaluation)
        except ArtifactError as exc:
            raise ArtifactError(f"bundle {path.name}: {exc.message}", field=exc.field) from exc
        origin = f"{record['model']}@{record['version']}"
        existing = _holder_of(registry, record["model"], bundle_sha256, manifest)
        if existing is not None:
            return Imported(existing, added=False, origin=origin)
        lineage = dict(record["lineage"])
        lineage["imported_from"] = {
            "model": record["model"],
            "version": record["version"],
            "created_at": record["created_at"],
            "bundle_sha256": bundle_sha256,
        }
        added = registry.add(
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


def _holder_of(
    registry: Registry, name: str, bundle_sha256: str, manifest: dict[str, str]
) -> VersionRecord | None:
    """The version of ``name`` this bundle already is: imported from the same file, or the same files."""
    columns = (tables.versions.c.version, tables.versions.c.lineage, tables.versions.c.manifest)
    with registry.engine.connect() as conn:
        rows = conn.execute(
            sa.select(*columns).where(tables.versions.c.model == name).order_by(tables.versions.c.version)
        ).all()
    for row in rows:
        origin = (row.lineage or {}).get("imported_from") or {}
        if origin.get("bundle_sha256") == bundle_sha256 or row.manifest == manifest:
            return registry.get(name, row.version)
    return None


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
