"""assay.modelling.reports: the model card renders from real evaluate() output and escapes what it shows."""

from __future__ import annotations

import re
from collections import Counter
from html.parser import HTMLParser
from typing import Any

import numpy as np
import pytest

from assay.modelling.evaluation import evaluate
from assay.modelling.formatting import fmt
from assay.modelling.queries import answer_threshold_query
from assay.modelling.reports import model_card
from assay.workspace import Workspace


class _Structure(HTMLParser):
    """Collects tags and the kind of each figure, and checks every opened element is closed."""

    VOID = {"meta", "br", "hr", "img", "input", "link", "path", "use", "rect", "circle", "line", "stop"}

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.stack: list[str] = []
        # (data-plot, whether an svg is inside) for each <figure>, in page order.
        self.figures: list[tuple[str | None, bool]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "figure":
            self.figures.append((dict(attrs).get("data-plot"), False))
        elif tag == "svg" and "figure" in self.stack:
            self.figures[-1] = (self.figures[-1][0], True)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()


def parse(html: str) -> _Structure:
    parser = _Structure()
    parser.feed(html)
    parser.close()
    assert parser.stack == []
    return parser


def plots(html: str) -> Counter[str]:
    """How many figures of each kind the card shows; every figure names its kind and holds a plot."""
    figures = parse(html).figures
    assert all(kind and has_svg for kind, has_svg in figures), figures
    return Counter(kind for kind, _ in figures)


EVERY_PLOT = ("roc", "pr", "calibration", "thresholds", "cv-scores", "fit-times", "importance")
# Each fairness block (an attribute and class, at the decision or at an operating point) draws these.
FAIRNESS_PLOTS = ("fairness", "disparities", "group-calibration")
MITCHELL_SECTIONS = (
    "details",
    "intended-use",
    "factors",
    "metrics",
    "evaluation-data",
    "training-data",
    "quantitative-analyses",
    "ethical-considerations",
    "caveats",
)


def fairness_plots(blocks: int) -> Counter[str]:
    return Counter({kind: blocks for kind in FAIRNESS_PLOTS})


def facts_for(task: str, **overrides: Any) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    n = 400
    if task == "binary":
        classes, positive = ["False", "True"], "True"
        y_bool = rng.random(n) < 0.3
        p = np.clip(0.35 * y_bool + 0.65 * rng.random(n), 0, 1)
        y, proba = np.where(y_bool, "True", "False"), np.c_[1 - p, p]
    else:
        classes, positive = ["Stub", "Start", "B"], None
        idx = rng.integers(0, 3, n)
        logits = rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[idx]
        y, proba = np.array(classes)[idx], np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    groups = rng.choice(["anon", "newcomer", "experienced", None], n)
    evaluation = evaluate(y, proba, classes, positive=positive, sensitive={"user_group": groups})
    focus = positive or classes[0]
    table = evaluation["thresholds"][focus]
    queries = {
        "likelybad": "maximum recall @ precision >= 0.6",
        "impossible": "maximum recall @ precision >= 1.5",
    }
    facts: dict[str, Any] = {
        "model": "damaging",
        "version": 3,
        "created_at": "2026-01-01T00:00:00Z",
        "description": "Predicts whether an edit is damaging.",
        "task": task,
        "classes": classes,
        "positive": positive,
        "candidate": "lightgbm",
        "params": {"n_estimators": 200, "learning_rate": 0.05},
        "metric": "average_precision",
        "evaluation": evaluation,
        "importance": [
            {"feature": "bytes_changed", "importance": 0.12, "std": 0.01},
            {"feature": "is_anon", "importance": 0.05, "std": 0.02},
            {"feature": "noise", "importance": -0.001, "std": 0.003},
        ],
        "comparison": [
            {
                "candidate": "lightgbm",
                "params": {},
                "fold_scores": [0.71, 0.74, 0.73],
                "fit_times": [1.2, 1.1, 1.3],
                "mean_score": 0.727,
                "mean_fit_time": 1.2,
            },
            {
                "candidate": "logistic",
                "params": {"C": 1.0},
                "fold_scores": [0.65, 0.66, 0.64],
                "fit_times": [0.1, 0.1, 0.2],
                "mean_score": 0.65,
                "mean_fit_time": 0.13,
            },
        ],
        "search": {"budget_s": 60, "trials": 12, "best_params": {"num_leaves": 31}},
        "operating_points": {
            name: {"query": q, "answer": answer_threshold_query(table, q), "class": focus}
            for name, q in queries.items()
        },
        "lineage": {
            "data_fingerprint": "abc123",
            "spec_hash": "def456",
            "seed": 0,
            "libraries": {"sklearn": "1.9.1"},
            "assay": "0.1.0",
            "train_rows": 1600,
            "test_rows": n,
            "sources": {"train": "edits.csv", "test": "holdout.csv"},
        },
        "features": [
            {"name": "bytes_changed", "kind": "numeric"},
            {"name": "user_group", "kind": "categorical"},
        ],
        "sensitive": ["user_group"],
    }
    facts.update(overrides)
    return facts


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_card_renders_every_section(task: str) -> None:
    html = model_card(facts_for(task))
    structure = parse(html)
    assert html.startswith("<!DOCTYPE html>")
    assert "script" not in structure.tags  # no JavaScript at all
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # no external assets
    # Fairness figures per class the task is about: the positive class, or every class.
    assert plots(html) == Counter(EVERY_PLOT) + fairness_plots(1 if task == "binary" else 3)
    for section in MITCHELL_SECTIONS:
        assert f'<section id="{section}">' in html
    for heading in (
        "Performance",
        "Operating points",
        "Fairness by group",
        "Feature importance",
        "Candidates compared",
        "Hyperparameters",
        "Lineage",
        "Confusion matrix",
    ):
        assert heading in html
    assert "maximum recall @ precision &gt;= 1.5" in html and "no threshold satisfies it" in html
    assert "abc123" in html and "num_leaves" in html and "bytes_changed" in html
    assert "<td>sources: test</td><td>holdout.csv</td>" in html
    assert "(missing)" in html  # the fairness group for missing values
    if task == "multiclass":
        for cls in ("Stub", "Start", "B"):
            assert f"{cls} (AUC" in html  # a ROC curve per class


def test_card_escapes_hostile_text() -> None:
    hostile = '<script>alert("x")</script>'
    facts = facts_for(
        "binary",
        description=hostile,
        model="<b>m</b>",
        importance=[
            {"feature": "<img src=x onerror=alert(1)>", "importance": 0.1, "std": 0.0},
            {"feature": r"cost $\bad{$ (mathtext if unescaped)", "importance": 0.05, "std": 0.0},
        ],
        params={"<i>": "</td><script>"},
    )
    html = model_card(facts)
    structure = parse(html)
    assert "script" not in structure.tags and "img" not in structure.tags and "b" not in structure.tags
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert "<img" not in html and "<script" not in html
    # The feature names also reach the SVG, where matplotlib escapes them.
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


@pytest.mark.parametrize(
    "missing",
    [
        {"evaluation": None},
        {"importance": None, "comparison": None, "search": None},
        {"operating_points": None, "lineage": None, "features": None, "sensitive": None, "params": None},
        {"comparison": [{"candidate": "only", "fold_scores": [], "fit_times": []}]},
        {"comparison": [{"candidate": "no times", "fold_scores": [0.5, None], "mean_score": 0.5}]},
    ],
    ids=["no evaluation", "no training extras", "no metadata", "empty comparison", "partial comparison"],
)
def test_card_tolerates_missing_sections(missing: dict[str, Any]) -> None:
    facts = facts_for("binary", **missing)
    html = model_card(facts)
    parse(html)
    assert "damaging" in html


def test_card_from_minimal_facts() -> None:
    html = model_card({"model": "tiny"})
    parse(html)
    assert "tiny" in html and "<svg" not in html


def test_card_tolerates_partial_evaluation() -> None:
    facts = facts_for("binary")
    evaluation = dict(facts["evaluation"])
    for key in ("roc_curve", "calibration", "fairness", "thresholds"):
        evaluation.pop(key)
    html = model_card({**facts, "evaluation": evaluation})
    assert plots(html) == Counter(["pr", "cv-scores", "fit-times", "importance"])


def test_card_shows_only_the_comparisons_it_has_numbers_for() -> None:
    comparison = [{"candidate": "no times", "fold_scores": [0.5, None], "mean_score": 0.5}]
    assert plots(model_card(facts_for("binary", comparison=comparison)))["fit-times"] == 0


def test_cards_from_training_show_every_plot(trained_workspace: Workspace) -> None:
    reg = trained_workspace.registry
    binary = (reg.resolve("damaging").directory / "card.html").read_text(encoding="utf-8")
    # One sensitive attribute, about the positive class: at the decision and at each answered point.
    card = reg.card(reg.resolve("damaging"))
    answered = sum(1 for p in card["operating_points"].values() if p["answer"] is not None)
    assert answered >= 1 and len(card["fairness_at_operating_points"]) == answered
    assert plots(binary) == Counter(EVERY_PLOT) + fairness_plots(1 + answered)
    # No sensitive attributes in the multiclass spec: no fairness figure, everything else.
    multiclass = (reg.resolve("quality").directory / "card.html").read_text(encoding="utf-8")
    assert plots(multiclass) == Counter(EVERY_PLOT)
    for cls in ("stub", "start", "good"):
        assert f"{cls} (AUC" in multiclass  # a ROC curve per class


def test_numbers_have_one_precision() -> None:
    assert [fmt(v) for v in (0.5, 0.48712, 1234.5, 0.0, 12, 10_000, None, float("nan"))] == [
        "0.500",
        "0.487",
        "1,234.500",
        "0.000",
        "12",
        "10,000",
        "—",
        "—",
    ]
    assert fmt(0.0001) == "< 0.001" and fmt(-0.0001) == "> -0.001"  # not zero, and not 0.000
    html = model_card(facts_for("binary"))
    # Every number sits in a cell of its own that the page keeps on one line.
    assert re.search(r'<td class="num">0\.\d{3}</td>', html)
    assert not re.search(r'<td class="num">\d+\.\d{1,2}</td>', html)


def test_card_shows_what_the_spec_says_of_the_model() -> None:
    details = {
        "owner": "Edit quality team",
        "licence": "CC0",
        "contact": "quality@example.org",
        "intended_use": "Rank edits for patrollers.",
        "out_of_scope": ["Blocking editors automatically", "Other wikis"],
        "factors": "Anonymous and registered editors.",
        "ethical_considerations": "Anonymous editors are flagged more often.",
        "caveats": "Trained on 2015 edits.",
    }
    facts = facts_for("binary", details=details, sensitive=["user_group", "age_band"])
    facts["gates"] = {"minimum": {"roc_auc": 0.99}, "max_regression": {"pr_auc": 0.02}}
    html = model_card(facts)
    for text in (*[v for v in details.values() if isinstance(v, str)], *details["out_of_scope"]):
        assert text in html
    assert "Not stated" in html  # evaluation_data and training_data were not given
    # A sensitive column the model does not use is still listed.
    assert "<td>age_band</td><td>—</td><td>no</td><td>yes</td>" in html
    assert '<section id="gates">' in html and "FAIL" in html and "checked at promotion" in html


def test_card_sets_a_mitigated_model_beside_the_unmitigated_one() -> None:
    side = {"accuracy": 0.8, "selection_rate": 0.3, "demographic_parity_difference": 0.2}
    after = {"accuracy": 0.78, "selection_rate": 0.31, "demographic_parity_difference": 0.03}
    mitigation = {
        "method": "thresholds",
        "attribute": "user_group",
        "constraint": "demographic_parity",
        "before": side,
        "after": after,
        "accuracy_lost": 0.02,
        "disparity_removed": 0.17,
        "thresholds": {"anon": 0.61, "newcomer": 0.48},
    }
    html = model_card(facts_for("binary", mitigation=mitigation))
    assert "Mitigation: thresholds (demographic_parity by user_group)" in html
    assert '<td class="num">0.200</td><td class="num">0.030</td>' in html
    assert '<td class="num">0.170</td>' in html and "<td>anon</td>" in html
