"""Feature tables: loading from files and posted rows, checked against the schema; lookup by id."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from assay.cli import main
from assay.errors import DataError, InvalidInput
from assay.modelling.datasets import read_table
from assay.registry.schema import Feature, FeatureSchema
from assay.serving.features import FeatureTable, item_id_of
from assay.settings import Settings
from assay.workspace import Workspace

SCHEMA = FeatureSchema(
    [
        Feature("words", "numeric"),
        Feature("anon", "boolean"),
        Feature("topic", "categorical", ["art", "sport"], nullable=True),
        Feature("ratio", "numeric", nullable=True),
    ]
)


def _csv(tmp_path: Path, text: str) -> pd.DataFrame:
    path = tmp_path / "rows.csv"
    path.write_text(text)
    return read_table(path)


def test_rows_from_a_file_are_stored_as_typed_json(
    workspace: Workspace, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    table = FeatureTable(workspace.engine)
    frame = _csv(
        tmp_path, "id,words,anon,topic,ratio,label\n007,3,True,art,0.5,x\n8,4.5,false,,,y\n9,1,1,chess,2,z\n"
    )
    assert table.load_frame("m", frame, SCHEMA, id_column="id") == ["007", "8", "9"]
    found = table.lookup("m", ["007", "8", "9", "404"])
    assert found == {
        "007": {"words": 3, "anon": True, "topic": "art", "ratio": 0.5},
        "8": {"words": 4.5, "anon": False, "topic": None, "ratio": None},
        # A category the model never saw is stored as missing (as the model scores it), and said so.
        "9": {"words": 1, "anon": True, "topic": None, "ratio": 2},
    }
    assert "1 value(s) of 'topic' are categories the model never saw" in caplog.text
    for features in found.values():  # what a client could have sent itself
        SCHEMA.encode_record(features)
    assert table.count("m") == 3 and table.count("other") == 0


def test_loading_again_replaces_rows(workspace: Workspace, tmp_path: Path) -> None:
    table = FeatureTable(workspace.engine)
    table.load_frame(
        "m", _csv(tmp_path, "id,words,anon,topic,ratio\n1,3,true,art,1\n"), SCHEMA, id_column="id"
    )
    table.load_frame(
        "m",
        _csv(tmp_path, "id,words,anon,topic,ratio\n1,5,true,art,1\n2,1,no,sport,1\n"),
        SCHEMA,
        id_column="id",
    )
    assert table.lookup("m", ["1"])["1"]["words"] == 5
    assert table.count("m") == 2
    assert table.delete("m", ["1", "404"]) == 1
    assert table.lookup("m", ["1", "2"]).keys() == {"2"}


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("id,words,anon,topic,ratio\n1,three,true,art,1\n", "words"),
        ("id,words,anon,topic,ratio\n1,3,maybe,art,1\n", "anon"),
        ("id,words,anon,topic,ratio\n1,,true,art,1\n", "words"),  # not nullable
        ("id,words,anon,topic\n1,3,true,art\n", "ratio"),
        ("words,anon,topic,ratio\n3,true,art,1\n", "id_column"),
        ("id,words,anon,topic,ratio\n1,3,true,art,1\n1,3,true,art,1\n", "id"),
    ],
)
def test_a_bad_file_is_refused_naming_the_column(
    workspace: Workspace, tmp_path: Path, text: str, field: str
) -> None:
    table = FeatureTable(workspace.engine)
    with pytest.raises(DataError) as exc:
        table.load_frame("m", _csv(tmp_path, text), SCHEMA, id_column="id")
    assert exc.value.field == field
    assert table.count("m") == 0


def test_posted_rows_are_all_checked_before_any_is_written(workspace: Workspace) -> None:
    table = FeatureTable(workspace.engine)
    good = {"id": 1, "features": {"words": 3, "anon": True, "topic": "art", "ratio": None}}
    assert table.load_records("m", [good], SCHEMA) == ["1"]
    bad_rows = [
        (
            [good, {"id": 2, "features": {"words": "3", "anon": True, "topic": "art", "ratio": 1}}],
            "rows[1].features.words",
        ),
        ([{"id": 2, "features": {"anon": True, "topic": "art", "ratio": 1}}], "rows[0].features.words"),
        ([good, good], "rows[1].id"),
        (["nope"], "rows[0]"),
        ([{"id": True, "features": {}}], "rows[0].id"),
        ([{"id": 3, "features": []}], "rows[0].features"),
        ([{"id": 3, "features": good["features"], "extra": 1}], "rows[0]"),
    ]
    for rows, field in bad_rows:
        with pytest.raises(InvalidInput) as exc:
            table.load_records("m", rows, SCHEMA)
        assert exc.value.field == field
    assert table.count("m") == 1


def test_lookups_of_many_ids_are_chunked(workspace: Workspace) -> None:
    table = FeatureTable(workspace.engine)
    rows = [
        {"id": i, "features": {"words": i, "anon": False, "topic": None, "ratio": None}} for i in range(2500)
    ]
    table.load_records("m", rows, SCHEMA)
    found = table.lookup("m", [str(i) for i in range(0, 3000)])
    assert len(found) == 2500 and found["2499"]["words"] == 2499


@pytest.mark.parametrize("value", [None, True, 1.5, "", "x" * 201, ["1"]])
def test_bad_item_ids(value: object) -> None:
    with pytest.raises(InvalidInput):
        item_id_of(value, "id")
    assert item_id_of(12, "id") == "12"


def test_features_load_command(trained_home: Path) -> None:
    data = trained_home.parent / "data" / "edits.test.tsv"  # no header: the spec names the columns
    runner = CliRunner()
    result = runner.invoke(
        main, ["--home", str(trained_home), "features", "load", "damaging", str(data), "--no-header"]
    )
    assert result.exit_code == 0, result.output
    assert "loaded 500 feature rows for 'damaging'" in result.stderr
    ws = Workspace.open(Settings.load(home=trained_home, environ={}))
    try:
        first = pd.read_csv(data, sep="\t", header=None).iloc[0]
        row = FeatureTable(ws.engine).lookup("damaging", [str(first[0])])[str(first[0])]
        assert row["words_added"] == first[2] and row["user_is_anon"] == bool(first[7])
        assert "reverted" not in row  # the label is not a feature
    finally:
        ws.close()
    missing = runner.invoke(main, ["--home", str(trained_home), "features", "load", "nope", str(data)])
    assert missing.exit_code == 1 and "unknown model" in missing.stderr
