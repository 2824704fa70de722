"""The registry: versions, aliases, gated promotion with history, export/import, integrity."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from assay.errors import ArtifactError, GateFailed, InvalidInput, NotFound
from assay.modelling.promotion import promote
from assay.modelling.spec_file import load_spec
from assay.modelling.training import train
from assay.registry.importer import import_version
from assay.settings import Settings
from assay.workspace import Workspace
from tests.conftest import write_binary_spec


def test_resolve_references(trained_workspace: Workspace) -> None:
    reg = trained_workspace.registry
    assert reg.resolve("damaging").ref == "damaging@1"  # production by default
    assert reg.resolve("damaging@1").version == 1
    assert reg.resolve("damaging@candidate").version == 1
    with pytest.raises(NotFound) as info:
        reg.resolve("nosuch")
    assert info.value.code == "unknown_model"
    with pytest.raises(NotFound) as info:
        reg.resolve("damaging@7")
    assert info.value.code == "unknown_version"
    with pytest.raises(NotFound) as info:
        reg.resolve("damaging@staging")
    assert info.value.code == "unknown_alias"
    # Digits that are not ASCII, or too many of them, are alias names that do not exist, not a crash.
    for odd in ("damaging@\u00b2", "damaging@" + "9" * 40):
        with pytest.raises(NotFound) as info:
            reg.resolve(odd)
        assert info.value.code == "unknown_alias"
    with pytest.raises(InvalidInput):
        reg.resolve("../x")


def _retrain(ws: Workspace, home: Path, **gates: dict) -> int:
    spec = load_spec(home.parent / "data" / "damaging.toml")
    spec.gates.minimum.update(gates.get("minimum", {}))
    spec.gates.max_regression.update(gates.get("max_regression", {}))
    return train(spec, ws.registry).record.version


def test_promotion_respects_gates_and_records_history(
    trained_workspace: Workspace, trained_home: Path
) -> None:
    reg = trained_workspace.registry
    v2 = _retrain(trained_workspace, trained_home, minimum={"roc_auc": 0.999})
    assert reg.aliases("damaging") == {
        "production": 1,
        "candidate": v2,
    }  # a new version never moves production
    with pytest.raises(GateFailed, match=r"minimum gate: roc_auc 0\.\d{4} must be >= 0\.999"):
        reg.promote("damaging", v2, actor="alice", reason="try")
    assert reg.aliases("damaging")["production"] == 1
    with pytest.raises(InvalidInput, match="needs a reason"):
        reg.promote("damaging", v2, actor="alice", force=True)
    results = reg.promote("damaging", v2, actor="alice", reason="launch review", force=True)
    assert any(not r["passed"] for r in results)
    assert reg.aliases("damaging")["production"] == v2
    last = reg.history("damaging")[-1]
    assert (last["alias"], last["from_version"], last["to_version"]) == ("production", 1, v2)
    assert last["actor"] == "alice" and last["forced"] and last["reason"] == "launch review"
    assert last["gates"] == results


def test_regression_gate_compares_with_the_holder(trained_workspace: Workspace, trained_home: Path) -> None:
    reg = trained_workspace.registry
    v1 = reg.get("damaging", 1)
    v2 = _retrain(trained_workspace, trained_home, max_regression={"roc_auc": -0.5})  # must improve by 0.5
    with pytest.raises(GateFailed, match="regression"):
        reg.promote("damaging", v2, actor="bob")
    assert reg.aliases("damaging")["production"] == v1.version
    # A fresh alias has no holder, so only absolute gates apply.
    results = reg.promote("damaging", v2, alias="shadow", actor="bob")
    assert all(r["gate"] != "max_regression" for r in results)


def test_versions_are_immutable_and_checked_at_load(trained_workspace: Workspace) -> None:
    reg = trained_workspace.registry
    record = reg.resolve("damaging")
    model_file = next(
        p for p in record.directory.iterdir() if p.name.startswith("model.") and p.suffix != ".json"
    )
    model_file.write_bytes(model_file.read_bytes()[:-10])
    fresh = Workspace.open(trained_workspace.settings)
    try:
        with pytest.raises(ArtifactError, match=model_file.name):
            fresh.registry.load(record)
    finally:
        fresh.close()


def test_tampered_statistics_are_refused(trained_workspace: Workspace) -> None:
    record = trained_workspace.registry.resolve("damaging")
    path = record.directory / "evaluation.json"
    path.write_bytes(path.read_bytes().replace(b'"n":', b'"n": 1, "x":', 1))
    with pytest.raises(ArtifactError, match="hash mismatch"):
        trained_workspace.registry.read_json(record, "evaluation.json")


def test_export_import_into_another_workspace(trained_workspace: Workspace, tmp_path: Path) -> None:
    bundle = tmp_path / "damaging.assay"
    trained_workspace.registry.export("damaging", bundle)
    other = Workspace.open(Settings.load(home=tmp_path / "other", environ={}))
    try:
        imported = import_version(other.registry, bundle)
        record = imported.record
        assert imported.added and imported.origin == "damaging@1"
        assert record.ref == "damaging@1"
        assert record.lineage["imported_from"]["version"] == 1
        source = trained_workspace.registry.load(trained_workspace.registry.resolve("damaging"))
        copy = other.registry.load(record)
        import numpy as np

        X = np.array([[1, 20, 8, 0.5, 0, 0.1, 1, 0, 0]], dtype=float)
        assert np.allclose(copy.predictor.predict_proba(X), source.predictor.predict_proba(X))
        assert copy.evaluation == source.evaluation
        assert record.summary == trained_workspace.registry.resolve("damaging").summary
        assert other.registry.aliases("damaging") == {}  # importing never moves aliases
    finally:
        other.close()


def test_import_refuses_a_modified_bundle(trained_workspace: Workspace, tmp_path: Path) -> None:
    import zipfile

    bundle = tmp_path / "b.assay"
    trained_workspace.registry.export("damaging", bundle)
    evil = tmp_path / "evil.assay"
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(evil, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "card.html":
                data = data.replace(b"<body", b"<body onload='alert(1)'", 1)
            dst.writestr(info, data)
    with pytest.raises(ArtifactError):
        import_version(trained_workspace.registry, evil)
    assert trained_workspace.registry.model("damaging").versions == [1]


def _forge(bundle: Path, out: Path, change: Callable[[dict, dict[str, bytes]], None]) -> Path:
    """A copy of ``bundle`` as a forger would make it: record and files changed, manifest rehashed."""
    with zipfile.ZipFile(bundle) as zf:
        header = json.loads(zf.read("assay-bundle.json"))
        files = {name: zf.read(name) for name in header["manifest"]}
    change(header["record"], files)
    header["manifest"] = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("assay-bundle.json", json.dumps(header))
        for name, data in files.items():
            zf.writestr(name, data)
    return out


def _drop_lineage(record: dict, files: dict[str, bytes]) -> None:
    del record["lineage"]


def _version_as_text(record: dict, files: dict[str, bytes]) -> None:
    record["version"] = "1"


def _gate_as_text(record: dict, files: dict[str, bytes]) -> None:
    record["spec"]["gates"]["minimum"] = {"roc_auc": "high"}


def _better_roc_auc(record: dict, files: dict[str, bytes]) -> None:
    record["summary"]["roc_auc"] = 0.999


def _garbage_model(record: dict, files: dict[str, bytes]) -> None:
    name = next(n for n in files if n in ("model.lgb.txt", "model.skops"))
    files[name] = b"not a model\n"


def _evaluation_not_json(record: dict, files: dict[str, bytes]) -> None:
    files["evaluation.json"] = b"{roc_auc: 0.999"


def _narrower_schema(record: dict, files: dict[str, bytes]) -> None:
    schema = json.loads(files["schema.json"])
    schema["features"].pop()
    files["schema.json"] = json.dumps(schema).encode()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(_drop_lineage, r"record has no 'lineage'", id="missing key"),
        pytest.param(_version_as_text, r"record: version must be an integer, got \"1\"", id="wrong type"),
        pytest.param(
            _gate_as_text, r"spec\.gates: minimum\.roc_auc must be a finite number, got 'high'", id="bad gate"
        ),
        pytest.param(
            _better_roc_auc, r"summary\.roc_auc is 0\.999, evaluation\.json gives 0\.\d+", id="forged summary"
        ),
        pytest.param(
            _garbage_model, r"model\.(lgb\.txt|skops) (is not|cannot be read)", id="model does not load"
        ),
        pytest.param(_evaluation_not_json, r"evaluation\.json is not valid JSON", id="evaluation not JSON"),
        pytest.param(_narrower_schema, r"takes 9 features, schema\.json describes 8", id="schema disagrees"),
    ],
)
def test_import_refuses_a_forged_bundle_and_writes_nothing(
    trained_workspace: Workspace,
    workspace: Workspace,
    tmp_path: Path,
    change: Callable[[dict, dict[str, bytes]], None],
    message: str,
) -> None:
    bundle = tmp_path / "damaging.assay"
    trained_workspace.registry.export("damaging", bundle)
    forged = _forge(bundle, tmp_path / "forged.assay", change)
    with pytest.raises(ArtifactError, match=r"^bundle forged\.assay: .*" + message):
        import_version(workspace.registry, forged)
    assert workspace.registry.models() == []
    assert [p for p in workspace.registry.artifacts_path.rglob("*") if not p.is_dir()] == []


def test_import_refuses_a_summary_that_leaves_numbers_out(
    trained_workspace: Workspace, workspace: Workspace, tmp_path: Path
) -> None:
    """A bundle's record is held to the same contract as a trained one: a summary is complete."""
    bundle = tmp_path / "damaging.assay"
    trained_workspace.registry.export("damaging", bundle)

    def claim_only_accuracy(record: dict, files: dict[str, bytes]) -> None:
        record["summary"] = {"accuracy": record["summary"]["accuracy"]}

    with pytest.raises(ArtifactError, match=r"record: summary: lacks 'brier'.*'roc_auc'"):
        import_version(workspace.registry, _forge(bundle, tmp_path / "short.assay", claim_only_accuracy))
    assert workspace.registry.models() == []


def test_registry_on_postgresql(postgres_url: str, trained_home: Path, tmp_path: Path) -> None:
    """The same registry code against a real PostgreSQL server (migrations included)."""
    home = tmp_path / "pg"
    shutil.copytree(trained_home.parent / "data", tmp_path / "data")
    ws = Workspace.open(Settings.load(home=home, environ={}, database_url=postgres_url))
    try:
        spec = load_spec(tmp_path / "data" / "damaging.toml")
        spec.training.candidates = ["logistic_regression"]
        first = train(spec, ws.registry).record
        second = train(spec, ws.registry).record
        assert (first.version, second.version) == (1, 2)
        assert first.summary == second.summary
        # The spec's max_regression gate is judged on a comparison of both on the same rows.
        promote(ws.registry, "damaging", 2, actor="ci", reason="pg", resamples=200)
        assert ws.registry.resolve("damaging").version == 2
        assert [h["to_version"] for h in ws.registry.history("damaging")] == [1, 1, 2, 2]
    finally:
        ws.close()


def test_import_keeps_the_exported_number_and_adds_a_bundle_once(
    trained_workspace: Workspace, tmp_path: Path
) -> None:
    bundle = tmp_path / "damaging-1.assay"
    trained_workspace.registry.export("damaging@1", bundle)
    # The very version it was exported from: nothing to add.
    again = import_version(trained_workspace.registry, bundle)
    assert not again.added and again.record.ref == "damaging@1"
    # A workspace whose damaging@1 is another model: the import takes the next number.
    other = Workspace.open(Settings.load(home=tmp_path / "other", environ={}))
    third = Workspace.open(Settings.load(home=tmp_path / "third", environ={}))
    try:
        train(load_spec(write_binary_spec(tmp_path / "data", n_train=300, n_test=200)), other.registry)
        imported = import_version(other.registry, bundle)
        assert imported.added and imported.record.ref == "damaging@2" and imported.origin == "damaging@1"
        assert imported.record.lineage["imported_from"]["version"] == 1
        assert import_version(other.registry, bundle).record.ref == "damaging@2"  # the same file again: no-op
        assert other.registry.model("damaging").versions == [1, 2]
        # Exported again as damaging@2, it keeps that number where it is free.
        second = tmp_path / "damaging-2.assay"
        other.registry.export("damaging@2", second)
        kept = import_version(third.registry, second)
        assert kept.added and kept.record.ref == "damaging@2" and third.registry.aliases("damaging") == {}
        assert not import_version(third.registry, second).added
    finally:
        other.close()
        third.close()
