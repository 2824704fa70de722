"""The spec file: valid specs parse, every mistake names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from assay.errors import SpecError
from assay.modelling.spec import CANDIDATES, FeatureMonitorSpec
from assay.modelling.spec_file import load_spec, parse_spec

MINIMAL = {"name": "m", "data": {"train": "d.csv", "id": "id", "label": "y"}}


def test_minimal_spec_gets_defaults(tmp_path: Path) -> None:
    spec = parse_spec(MINIMAL, base=tmp_path)
    assert spec.data.train == [str(tmp_path / "d.csv")]
    assert spec.training.candidates == list(CANDIDATES)
    assert spec.training.metric == "average_precision"
    assert spec.training.search_budget_s == 0.0 and spec.training.search_trials == 20
    assert spec.data.header is True and spec.data.test == []


@pytest.mark.parametrize(
    ("raw", "key", "words"),
    [
        ({**MINIMAL, "nmae": "x"}, "nmae", "unknown key"),
        ({"data": MINIMAL["data"]}, "name", "missing"),
        ({**MINIMAL, "data": {"train": "d.csv", "label": "y"}}, "data.id", "missing"),
        ({**MINIMAL, "data": {**MINIMAL["data"], "header": "no"}}, "data.header", "must be bool"),
        ({**MINIMAL, "data": {**MINIMAL["data"], "header": False}}, "data.columns", "needs data.columns"),
        ({**MINIMAL, "data": {**MINIMAL["data"], "test_size": 1.5}}, "data.test_size", "between 0 and 1"),
        ({**MINIMAL, "training": {"candidates": ["xgboost"]}}, "training.candidates", "unknown candidate"),
        ({**MINIMAL, "training": {"metric": "auc"}}, "training.metric", "must be one of"),
        ({**MINIMAL, "training": {"folds": 1}}, "training.folds", "at least 2"),
        ({**MINIMAL, "training": {"search_trials": 0}}, "training.search_trials", "at least 1"),
        ({**MINIMAL, "training": {"search_trials": 2.5}}, "training.search_trials", "must be int"),
        ({**MINIMAL, "training": {"search_budget_s": -1}}, "training.search_budget_s", "negative"),
        ({**MINIMAL, "training": {"params": {"lightgbm": 5}}}, "training.params.lightgbm", "must be a table"),
        (
            {**MINIMAL, "training": {"params": {"xgboost": {}}}},
            "training.params.xgboost",
            "unknown candidate",
        ),
        ({**MINIMAL, "training": {"params": []}}, "training.params", "must be a table"),
        ({**MINIMAL, "features": {"kinds": {"a": "text"}}}, "features.kinds.a", "must be one of"),
        ({**MINIMAL, "gates": {"minimum": {"auc": 0.8}}}, "gates.minimum.auc", "unknown statistic"),
        ({**MINIMAL, "operating_points": {"x": "most recall @ precision >= 0.9"}}, "operating_points.x", ""),
        ({**MINIMAL, "name": "../evil"}, "name", ""),
    ],
)
def test_bad_specs_name_the_key(raw: dict, key: str, words: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(raw, source="s.toml")
    assert info.value.field == key or key in info.value.message
    assert info.value.message.startswith("s.toml")
    assert words in info.value.message


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(bad)


@pytest.mark.parametrize(
    ("section", "key", "words"),
    [
        (
            {"operating_points": {"x": {"query": "maximum recall @ precision >= 0.9", "clas": "a"}}},
            "clas",
            "unknown key",
        ),
        ({"operating_points": {"x": 3}}, "operating_points.x", "query string or a table"),
        ({"fairness": {"min_group_size": 0}}, "fairness.min_group_size", "at least 1"),
        ({"fairness": {"bootstrap": 100_000}}, "fairness.bootstrap", "from 0 to 10000"),
        ({"fairness": {"confidence": 1.0}}, "fairness.confidence", "below 1"),
        (
            {"fairness": {"intersections": [["sex", "age"]]}},
            "fairness.intersections[0]",
            "features.sensitive",
        ),
        ({"fairness": {"intersections": ["sex"]}}, "fairness.intersections", "lists of columns"),
        ({"fairness": {"mitigation": "magic"}}, "fairness.mitigation", "must be one of"),
        ({"fairness": {"constraint": "parity"}}, "fairness.constraint", "must be one of"),
        ({"fairness": {"attribute": "age"}}, "fairness.attribute", "features.sensitive"),
        ({"card": {"owner": 3}}, "card.owner", "must be str"),
        ({"card": {"licens": "MIT"}}, "card.licens", "unknown key"),
    ],
)
def test_bad_new_sections_name_the_key(section: dict, key: str, words: str) -> None:
    raw = {**MINIMAL, "features": {"sensitive": ["sex", "race"]}, **section}
    with pytest.raises(SpecError) as info:
        parse_spec(raw, source="s.toml")
    assert key in info.value.message and words in info.value.message


def test_mitigation_needs_a_sensitive_column() -> None:
    with pytest.raises(SpecError, match=r"needs a features\.sensitive column"):
        parse_spec({**MINIMAL, "fairness": {"mitigation": "thresholds"}})


@pytest.mark.parametrize(
    ("monitoring", "key", "words"),
    [
        ({"window": "soon"}, "monitoring.window", "not a duration"),
        ({"window": 0}, "monitoring.window", "at least 1 row"),
        ({"min_rows": 0}, "monitoring.min_rows", "at least 1"),
        ({"drift_share": 0.0}, "monitoring.drift_share", "in (0, 1]"),
        ({"alert_after": 0}, "monitoring.alert_after", "at least 1"),
        ({"performance_metric": "brier"}, "monitoring.performance_metric", "must be one of"),
        ({"performance_drop": -0.1}, "monitoring.performance_drop", "negative"),
        ({"features": {"a": "psi"}}, "monitoring.features.a", "must be a table"),
        ({"features": {"a": {"tset": "psi"}}}, "monitoring.features.a.tset", "unknown key"),
        ({"features": {"a": {"test": "t"}}}, "monitoring.features.a.test", "must be one of"),
        ({"features": {"a": {"threshold": 0.1}}}, "monitoring.features.a.threshold", "name the test"),
        (
            {"features": {"a": {"test": "ks", "threshold": 1.0}}},
            "monitoring.features.a.threshold",
            "out of range",
        ),
        (
            {"features": {"a": {"test": "psi", "threshold": 0}}},
            "monitoring.features.a.threshold",
            "out of range",
        ),
    ],
)
def test_bad_monitoring_names_the_key(monitoring: dict, key: str, words: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec({**MINIMAL, "monitoring": monitoring}, source="s.toml")
    assert info.value.field == key and words in info.value.message


def test_monitoring_reads_each_features_test_and_threshold() -> None:
    spec = parse_spec(
        {
            **MINIMAL,
            "monitoring": {"window": 500, "features": {"a": {"test": "psi", "threshold": 2}, "b": {}}},
        }
    )
    assert spec.monitoring.window == 500
    assert spec.monitoring.features == {
        "a": FeatureMonitorSpec("psi", 2.0),
        "b": FeatureMonitorSpec("auto", None),
    }
