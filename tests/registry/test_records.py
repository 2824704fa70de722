"""The records a version holds, held to their contracts: what training writes passes, and each
crafted value is refused naming its field — by the check itself, at import (one line, nothing
written), by `assay show`, and at load, where the scorer skips the version and keeps following
every other alias."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from assay.cli import main
from assay.errors import ArtifactError
from assay.registry.files import sha256_file
from assay.registry.gates import summarize
from assay.registry.records import check_card, check_evaluation, check_lineage, check_schema, check_summary
from assay.registry.schema import FeatureSchema
from assay.store import tables
from assay.workspace import Workspace
from tests.registry.test_versions import _forge

Change = Callable[[dict[str, Any]], None]


def run(home: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--home", str(home), *args], catch_exceptions=False)
    return result.exit_code, result.output


def tamper(ws: Workspace, name: str, version: int, file: str, change: Change) -> None:
    """Change a stored version's JSON file and record its new hash in the store, as someone
    writing past the registry (or a tool that edits the store) would."""
    record = ws.registry.get(name, version)
    path = record.directory / file
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    manifest = {**record.manifest, file: sha256_file(path)}
    with ws.engine.begin() as conn:
        conn.execute(
            sa.update(tables.versions)
            .where(tables.versions.c.model == name, tables.versions.c.version == version)
            .values(manifest=manifest)
        )


def _set(*path: Any, value: Any) -> Change:
    def change(record: dict[str, Any]) -> None:
        target = record
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def _first_feature(key: str, value: Any) -> Change:
    def change(record: dict[str, Any]) -> None:
        record["features"][0][key] = value

    return change


def _duplicate_feature(record: dict[str, Any]) -> None:
    record["features"][1]["name"] = record["features"][0]["name"]


# Crafted values of card.json: (change, field named in the error).
CARD_CRAFTS: dict[str, tuple[Change, str]] = {
    "decision_threshold 'abc'": (_set("decision_threshold", value="abc"), "decision_threshold"),
    "decision_threshold NaN": (_set("decision_threshold", value=math.nan), "decision_threshold"),
    "decision_threshold above 1": (_set("decision_threshold", value=1.5), "decision_threshold"),
    "decision_threshold true": (_set("decision_threshold", value=True), "decision_threshold"),
    "operating point threshold 'zzz'": (
        _set("operating_points", "likelybad", "answer", "threshold", value="zzz"),
        "operating_points.likelybad.answer.threshold",
    ),
    "operating point threshold inf": (
        _set("operating_points", "likelybad", "answer", "threshold", value=math.inf),
        "operating_points.likelybad.answer.threshold",
    ),
    "operating point answer a list": (
        _set("operating_points", "likelybad", "answer", value=[0.4, 0.5]),
        "operating_points.likelybad.answer",
    ),
    "operating point of an unknown class": (
        _set("operating_points", "likelybad", "class", value="Maybe"),
        "operating_points.likelybad.class",
    ),
    "feature kind 'weird'": (_first_feature("kind", "weird"), "features[0].kind"),
    "duplicate feature name": (_duplicate_feature, "features[1].name"),
    "no classes": (_set("classes", value=[]), "classes"),
    "positive not a class": (_set("positive", value="Maybe"), "positive"),
    "unknown task": (_set("task", value="regression"), "task"),
    "version as text": (_set("version", value="1"), "version"),
    "unknown key": (_set("extra", value=1), ""),
    "rate above 1 in the evaluation": (
        _set("evaluation", "per_class", "True", "recall", value=1.5),
        "recall",
    ),
    "count as a float": (_set("evaluation", "n", value=500.0), "n"),
    "gate limit as text": (_set("gates", "minimum", "roc_auc", value="high"), "minimum.roc_auc"),
    "lineage seed as text": (_set("lineage", "seed", value="0"), "seed"),
}

SCHEMA_CRAFTS: dict[str, tuple[Change, str]] = {
    "feature kind 'weird'": (_first_feature("kind", "weird"), "features[0].kind"),
    "duplicate feature name": (_duplicate_feature, "features[1].name"),
    "nullable as text": (_first_feature("nullable", "yes"), "features[0].nullable"),
    "categories on a numeric feature": (_first_feature("categories", ["a"]), "features[0]"),
    "no features": (_set("features", value=[]), "features"),
}


def _records(ws: Workspace, ref: str) -> tuple[dict, dict, dict]:
    record = ws.registry.resolve(ref)
    return tuple(ws.registry.read_json(record, f) for f in ("card.json", "evaluation.json", "schema.json"))  # type: ignore[return-value]


@pytest.mark.parametrize("ref", ["damaging", "quality"])
def test_what_training_writes_passes_every_contract(trained_workspace: Workspace, ref: str) -> None:
    card, evaluation, schema = _records(trained_workspace, ref)
    assert check_card(card) is card and check_evaluation(evaluation) is evaluation
    assert check_schema(schema) is schema
    record = trained_workspace.registry.resolve(ref)
    check_lineage(record.lineage)
    check_summary(summarize(evaluation, evaluation["positive"]))
    assert FeatureSchema.from_dict(schema).to_dict() == schema


@pytest.mark.parametrize("name", sorted(CARD_CRAFTS))
def test_a_crafted_card_is_refused_naming_the_field(trained_workspace: Workspace, name: str) -> None:
    change, field = CARD_CRAFTS[name]
    card = copy.deepcopy(_records(trained_workspace, "damaging")[0])
    change(card)
    with pytest.raises(ArtifactError, match=r"^card\.json: ") as info:
        check_card(card)
    assert field in info.value.message and "\n" not in info.value.message


@pytest.mark.parametrize("name", sorted(SCHEMA_CRAFTS))
def test_a_crafted_schema_is_refused_naming_the_field(trained_workspace: Workspace, name: str) -> None:
    change, field = SCHEMA_CRAFTS[name]
    schema = copy.deepcopy(_records(trained_workspace, "damaging")[2])
    change(schema)
    with pytest.raises(ArtifactError, match=r"^schema\.json: ") as info:
        FeatureSchema.from_dict(schema)
    assert info.value.field == field


def test_evaluation_tables_and_counts_must_agree(trained_workspace: Workspace) -> None:
    evaluation = _records(trained_workspace, "damaging")[1]
    short = copy.deepcopy(evaluation)
    short["thresholds"]["True"]["precision"].pop()
    with pytest.raises(ArtifactError, match=r"thresholds\.True\.precision has \d+ values, the other columns"):
        check_evaluation(short)
    miscounted = copy.deepcopy(evaluation)
    miscounted["counts"]["True"] += 1
    with pytest.raises(ArtifactError, match="counts must add up to n=500"):
        check_evaluation(miscounted)
    no_table = copy.deepcopy(evaluation)
    del no_table["thresholds"]["True"]["npv"]
    with pytest.raises(ArtifactError, match=r"thresholds\.True lacks 'npv'"):
        check_evaluation(no_table)


@pytest.mark.parametrize(
    "name", ["decision_threshold 'abc'", "operating point threshold 'zzz'", "operating point answer a list"]
)
def test_import_refuses_a_crafted_card_in_one_line(
    trained_workspace: Workspace, tmp_path: Path, name: str
) -> None:
    change, field = CARD_CRAFTS[name]
    _import_refused(trained_workspace, tmp_path, "card.json", change, field)


@pytest.mark.parametrize("name", ["feature kind 'weird'", "duplicate feature name"])
def test_import_refuses_a_crafted_schema_in_one_line(
    trained_workspace: Workspace, tmp_path: Path, name: str
) -> None:
    change, field = SCHEMA_CRAFTS[name]
    _import_refused(trained_workspace, tmp_path, "schema.json", change, field)


def _import_refused(ws: Workspace, tmp_path: Path, file: str, change: Change, field: str) -> None:
    bundle = tmp_path / "damaging.assay"
    ws.registry.export("damaging", bundle)

    def craft(record: dict, files: dict[str, bytes]) -> None:
        data = json.loads(files[file])
        change(data)
        files[file] = json.dumps(data).encode()

    forged = _forge(bundle, tmp_path / "forged.assay", craft)
    other = tmp_path / "other"
    code, out = run(other, "import", str(forged))
    assert code == 1 and "Traceback" not in out, out
    assert out.count("\n") == 1 and out.startswith("error") and f"{file}: {field}" in out, out
    code, out = run(other, "models")
    assert code == 0 and out.strip() == "no models yet"
    assert [p for p in (other / "artifacts").rglob("*") if not p.is_dir()] == []


def test_show_names_a_bad_card_in_one_line(trained_workspace: Workspace, trained_home: Path) -> None:
    tamper(trained_workspace, "damaging", 1, "card.json", CARD_CRAFTS["operating point answer a list"][0])
    code, out = run(trained_home, "show", "damaging")
    assert code == 1 and "Traceback" not in out and out.count("\n") == 1
    assert "damaging@1: card.json: operating_points.likelybad.answer must be an object" in out


def test_a_row_written_past_the_registry_is_refused_by_name(trained_workspace: Workspace) -> None:
    with trained_workspace.engine.begin() as conn:
        conn.execute(
            sa.update(tables.versions)
            .where(tables.versions.c.model == "damaging")
            .values(summary={"roc_auc": "high"})
        )
    with pytest.raises(ArtifactError, match=r"^damaging@1: summary: lacks"):
        trained_workspace.registry.get("damaging", 1)
