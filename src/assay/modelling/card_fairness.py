"""The model card's fairness sections: each fairness block (at the decision and at every operating
point) as summary and per-group tables with its plots, and the mitigation record as its trade-off
tables (at the decision and at each operating point) and per-group thresholds."""

from __future__ import annotations

from typing import Any

from assay.modelling import plots
from assay.modelling.formatting import stat_name, table
from assay.modelling.plots import Figures
from assay.registry.contracts import CONSTRAINT_STAT

FAIRNESS_SUMMARIES = (
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
    "equalized_odds_ratio",
    "true_positive_rate_difference",
    "false_positive_rate_difference",
)
GROUP_COLUMNS = ("count", "selection_rate", "tpr", "fpr", "fnr", "precision", "brier")


def _fairness_block(
    title: str, block: dict[str, Any], attribute: str, cls: str, draw: Figures
) -> dict[str, Any]:
    intervals = block.get("intervals") or {}
    summary_rows = [
        [stat_name(k), block.get(k), *(intervals.get(k) or [None, None])]
        for k in FAIRNESS_SUMMARIES
        if k in block
    ]
    groups = block.get("groups") or {}
    group_rows = [
        [g + ("" if s.get("compared", True) else " (not compared)"), *(s.get(c) for c in GROUP_COLUMNS)]
        for g, s in groups.items()
    ]
    confidence = block.get("confidence")
    return {
        "title": title,
        "summary": table(["disparity", "value", "interval low", "interval high"], summary_rows),
        "groups": table(["group", *map(stat_name, GROUP_COLUMNS)], group_rows),
        "excluded": block.get("excluded_groups") or [],
        "min_group_size": block.get("min_group_size"),
        "note": f"{confidence:.0%} intervals from {block.get('bootstrap')} resamples"
        if intervals and confidence
        else "",
        "plot": draw(f"fairness:{title}", plots.fairness_plot, attribute, cls, block),
        "disparities": draw(f"disparities:{title}", plots.disparity_plot, block),
        "calibration": draw(f"group-calibration:{title}", plots.group_calibration_plot, block),
    }


def fairness_sections(facts: dict[str, Any], ev: dict[str, Any], draw: Figures) -> list[dict[str, Any]]:
    """Fairness at the decision, then at each operating point, for each attribute (and class)."""
    sections = []
    for attribute, by_class in (ev.get("fairness") or {}).items():
        for cls, block in (by_class or {}).items():
            sections.append(
                _fairness_block(f"{attribute} — {cls}, at the decision", block, attribute, cls, draw)
            )
    points = facts.get("operating_points") or {}
    for point, by_attribute in (facts.get("fairness_at_operating_points") or {}).items():
        cls = str((points.get(point) or {}).get("class", facts.get("positive")))
        for attribute, block in (by_attribute or {}).items():
            title = f"{attribute} — {cls}, at operating point {point}"
            sections.append(_fairness_block(title, block, attribute, cls, draw))
    return sections


def mitigation_section(facts: dict[str, Any]) -> dict[str, Any] | None:
    record = facts.get("mitigation")
    if not record:
        return None
    before, after = record.get("before") or {}, record.get("after") or {}
    keys = [k for k in before if k in after]
    rows = [[stat_name(k), before[k], after[k]] for k in keys]
    rows += [
        ["accuracy lost", None, record.get("accuracy_lost")],
        ["disparity removed", None, record.get("disparity_removed")],
    ]
    return {
        "method": record.get("method"),
        "attribute": record.get("attribute"),
        "constraint": record.get("constraint"),
        "tradeoff": table(["on the held-out rows", "without mitigation", "this version"], rows),
        "points": _mitigation_points(record),
        "thresholds": _group_thresholds(record),
    }


def _mitigation_points(record: dict[str, Any]) -> dict[str, Any] | None:
    """The trade-off at each named operating point: accuracy and the constrained disparity, both sides."""
    points = record.get("operating_points") or {}
    if not points:
        return None
    stat = CONSTRAINT_STAT.get(str(record.get("constraint")), "demographic_parity_difference")
    rows = [
        [
            name,
            at["threshold_before"],
            at.get("threshold_after", "per group"),
            at["before"]["accuracy"],
            at["after"]["accuracy"],
            at["before"][stat],
            at["after"][stat],
        ]
        for name, at in points.items()
    ]
    headers = ["operating point", "threshold without", "with", "accuracy without", "with"]
    return table([*headers, f"{stat_name(stat)} without", "with"], rows)


def _group_thresholds(record: dict[str, Any]) -> dict[str, Any] | None:
    """Each group's threshold for the decision and at each operating point, and the fallback."""
    thresholds = record.get("thresholds") or {}
    if not thresholds:
        return None
    points = record.get("operating_points") or {}
    rows = [[g, t, *[p["thresholds"].get(g) for p in points.values()]] for g, t in thresholds.items()]
    if "fallback_threshold" in record:
        rows.append(
            [
                "no known group",
                record["fallback_threshold"],
                *[p["fallback_threshold"] for p in points.values()],
            ]
        )
    return table(["group", "decision", *points], rows)
