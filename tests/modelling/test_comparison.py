"""assay.modelling.comparison on trained versions: the same rows reproduce a version's own held-out
numbers, a weaker version is found significantly worse with tests that agree with brute force, and
rows or versions that cannot be compared are refused by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from assay.errors import DataError, InvalidInput
from assay.modelling.comparison import compare_versions, file_rows, held_out_rows, training_ids, version_proba
from assay.modelling.comparison_report import write_report
from assay.modelling.promotion import challenge
from assay.modelling.spec_file import load_spec
from assay.modelling.training import train
from assay.workspace import Workspace


def write_variant(home: Path, name: str, *, features: list[str] | None = None, gates: bool = False) -> Path:
    """The trained home's binary spec, without its gates unless asked, on fewer features if given."""
    spec = (home.parent / "data" / "damaging.toml").read_text()
    if not gates:
        spec = spec[: spec.index("[gates]")] + spec[spec.index("[operating_points]") :]
    if features is not None:
        start = spec.index("include = [")
        spec = spec[:start] + f"include = {features!r}".replace("'", '"') + spec[spec.index("\n", start) :]
    path = home.parent / "data" / f"{name}.toml"
    path.write_text(spec)
    return path


WEAK_FEATURES = ["non_stopword_prop_delta_sum", "words_removed"]


@pytest.fixture
def weak_version(trained_workspace: Workspace, trained_home: Path) -> int:
    spec = load_spec(write_variant(trained_home, "weak", features=WEAK_FEATURES))
    return train(spec, trained_workspace.registry).record.version


def test_a_version_against_itself_reproduces_its_held_out_numbers(trained_workspace: Workspace) -> None:
    reg = trained_workspace.registry
    v1 = reg.get("damaging", 1)
    c = compare_versions(reg, v1, v1, held_out_rows(v1), resamples=200)
    assert c.n == v1.lineage["test_rows"] and c.agreement == 1.0
    for stat in ("roc_auc", "pr_auc", "f1", "precision", "recall", "accuracy", "brier"):
        assert c.stats[stat]["a"] == pytest.approx(v1.summary[stat]) == c.stats[stat]["b"]
    assert c.stats["roc_auc"]["difference"] == 0 and not c.stats["roc_auc"]["significant"]
    assert all(op["mcnemar"]["p_value"] == 1.0 for op in c.operating_points)
    assert c.cross_validation["test"]["mean_difference"] == 0
    assert "not distinguishable" in c.verdict()


def test_a_weaker_version_is_significantly_worse_by_every_paired_test(
    trained_workspace: Workspace, weak_version: int
) -> None:
    reg = trained_workspace.registry
    v1, v2 = reg.get("damaging", 1), reg.get("damaging", weak_version)
    rows = held_out_rows(v2)
    c = compare_versions(reg, v1, v2, rows, resamples=500)
    assert c.stats["roc_auc"]["significant"] and c.stats["roc_auc"]["ci"][1] < 0
    assert c.stats["pr_auc"]["ci"][1] < 0 and c.stats["brier"]["ci"][0] > 0
    assert "significantly worse" in c.verdict()
    # McNemar's counts by brute force, at each version's own thresholds.
    la, lb = reg.load(v1), reg.load(v2)
    pa = version_proba(la, rows.frame, source="t")[:, la.positive_index]
    pb = version_proba(lb, rows.frame, source="t")[:, lb.positive_index]
    truth = rows.labels == "True"
    for op in c.operating_points:
        right_a = (pa >= op["threshold"]["a"]) == truth
        right_b = (pb >= op["threshold"]["b"]) == truth
        assert op["mcnemar"]["only_a_right"] == int(np.sum(right_a & ~right_b))
        assert op["mcnemar"]["only_b_right"] == int(np.sum(right_b & ~right_a))
    assert {op["name"] for op in c.operating_points} >= {"decision"}
    # Same files, seed and folds: the corrected t-test runs on the cards' own fold scores.
    cards = reg.card(v1), reg.card(v2)
    chosen = [next(e for e in card["comparison"] if e["candidate"] == card["candidate"]) for card in cards]
    assert (
        c.cross_validation["a"] == chosen[0]["fold_scores"]
        and c.cross_validation["b"] == chosen[1]["fold_scores"]
    )
    assert c.cross_validation["test"]["folds"] == 3 and c.cross_validation["test"]["mean_difference"] < 0


def test_rows_from_a_file_and_refusals(
    trained_workspace: Workspace, trained_home: Path, tmp_path: Path
) -> None:
    reg = trained_workspace.registry
    v1 = reg.get("damaging", 1)
    test_file = trained_home.parent / "data" / "edits.test.tsv"
    rows = file_rows(v1, test_file)
    assert len(rows.labels) == v1.lineage["test_rows"] and rows.source == str(test_file)
    odd = tmp_path / "odd.tsv"
    odd.write_text(test_file.read_text().replace("\tTrue\n", "\tMaybe\n", 1))
    with pytest.raises(DataError, match="label values the models do not predict: Maybe"):
        compare_versions(reg, v1, v1, file_rows(v1, odd), resamples=100)
    with pytest.raises(InvalidInput, match="two versions of one model"):
        compare_versions(reg, v1, reg.get("quality", 1), rows, resamples=100)


def test_multiclass_versions_compare_on_macro_statistics(trained_workspace: Workspace) -> None:
    reg = trained_workspace.registry
    q1 = reg.get("quality", 1)
    c = compare_versions(reg, q1, q1, held_out_rows(q1), resamples=100)
    assert c.stats["roc_auc"]["a"] == pytest.approx(q1.summary["roc_auc"])
    assert [op["name"] for op in c.operating_points] == ["decision"] and c.operating_points[0]["threshold"][
        "a"
    ] is None


def test_report_as_page_and_picture(trained_workspace: Workspace, weak_version: int, tmp_path: Path) -> None:
    reg = trained_workspace.registry
    v1, v2 = reg.get("damaging", 1), reg.get("damaging", weak_version)
    c = compare_versions(reg, v1, v2, held_out_rows(v2), resamples=100)
    page = write_report(c, tmp_path / "c.html").read_text()
    assert (
        "damaging@1 vs damaging@2" in page
        and "<svg" in page
        and "Nadeau" in page
        and "significantly worse" in page
    )
    assert write_report(c, tmp_path / "c.png").read_bytes().startswith(b"\x89PNG")
    with pytest.raises(InvalidInput, match=r"write \.html or \.png"):
        write_report(c, tmp_path / "c.txt")
    assert not list(tmp_path.glob("*.tmp"))


def test_items_the_older_version_trained_on_are_left_out(
    trained_workspace: Workspace, trained_home: Path
) -> None:
    """A split spec whose newer version read more rows: its held-out split holds items the older
    version learnt from, which would flatter the older one."""
    reg = trained_workspace.registry
    data = trained_home.parent / "data"
    articles = pd.read_csv(data / "articles.csv")
    more = articles.sample(300, random_state=1).assign(page_id=[f"n{i}" for i in range(300)])
    pd.concat([articles, more]).to_csv(data / "articles2.csv", index=False)
    spec = load_spec(data / "quality.toml")
    spec.data.train = [str(data / "articles2.csv")]
    q1, q2 = reg.get("quality", 1), train(spec, reg).record
    trained = training_ids(q1)
    assert trained is not None and len(trained) == q1.lineage["train_rows"]
    full = held_out_rows(q2)
    overlap = int(full.frame["page_id"].isin(trained).sum())
    assert overlap > 0
    c = challenge(reg, q1, q2, resamples=100)
    assert c.n == len(full.labels) - overlap and f"less {overlap} rows quality@1 trained on" in c.source
    # Its files changed since: which rows it learnt is unknown, and the comparison says so.
    pd.concat([articles, more]).to_csv(data / "articles.csv", index=False)
    spec.data.train = [str(data / "articles.csv")]
    q3 = train(spec, reg).record
    articles.to_csv(data / "articles2.csv", index=False)  # what quality@2 read is gone
    assert training_ids(q2) is None
    assert "which rows quality@2 trained on is unknown" in challenge(reg, q2, q3, resamples=100).source
