"""Checking a card's fairness blocks and its mitigation record (the typed contracts are in
``registry.contracts``; ``registry.records`` checks the rest of the card with the same ``Validator``).

A fairness block holds per-group rates, the summaries (differences, ratios) and their intervals; the
mitigation record holds both sides of each trade-off and, for per-group thresholds, the thresholds the
scorer applies — checked here so that a served decision never reads a malformed threshold.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from assay.registry.contracts import (
    MITIGATION_CONSTRAINTS,
    MITIGATION_METHODS,
    MITIGATION_STATS,
    Fairness,
    GroupStats,
    Mitigation,
    MitigationSide,
)
from assay.registry.validation import Validator

# The keys marked NotRequired in registry.contracts (string annotations hide that from TypedDict at run time).
_FAIRNESS_OPTIONAL = {
    "true_positive_rate_difference",
    "false_positive_rate_difference",
    "excluded_groups",
    "min_group_size",
    "all_groups",
    "intervals",
    "confidence",
    "bootstrap",
}
_GROUP_OPTIONAL = {"fnr", "brier", "calibration", "compared"}
_MITIGATION_OPTIONAL = {"disparity_removed", "thresholds", "fallback_threshold", "operating_points"}


def check_fairness(v: Validator, value: Any, where: str) -> None:
    """One fairness block: per-group rates, the summaries and their intervals."""
    block = v.keys(value, where, set(Fairness.__annotations__) - _FAIRNESS_OPTIONAL, _FAIRNESS_OPTIONAL)
    for group, stats in v.mapping(block["groups"], f"{where}.groups").items():
        gwhere = f"{where}.groups.{group}"
        entry = v.keys(stats, gwhere, set(GroupStats.__annotations__) - _GROUP_OPTIONAL, _GROUP_OPTIONAL)
        v.integer(entry["count"], f"{gwhere}.count", 0)
        for stat in ("selection_rate", "tpr", "fpr", "precision", "fnr", "brier"):
            if stat in entry:
                v.number(entry[stat], f"{gwhere}.{stat}", 0.0, 1.0, null=True)
        if "calibration" in entry:
            curve = {"prob_pred": False, "prob_true": False, "count": True}
            v.columns(entry["calibration"], f"{gwhere}.calibration", curve)
        if "compared" in entry:
            v.boolean(entry["compared"], f"{gwhere}.compared")
    summaries = [k for k in Fairness.__annotations__ if k.endswith(("_difference", "_ratio"))]
    for stat in summaries:
        if stat in block:
            v.number(block[stat], f"{where}.{stat}", 0.0, 1.0, null=True)
    if "excluded_groups" in block:
        v.strings(block["excluded_groups"], f"{where}.excluded_groups", empty_ok=True)
    if "min_group_size" in block:
        v.integer(block["min_group_size"], f"{where}.min_group_size", 1)
    for stat, limit in v.mapping(block.get("all_groups", {}), f"{where}.all_groups").items():
        v.number(limit, f"{where}.all_groups.{stat}", 0.0, 1.0, null=True)
    for stat, interval in v.mapping(block.get("intervals", {}), f"{where}.intervals").items():
        if interval is not None:
            low, high = v.array(interval, f"{where}.intervals.{stat}", length=2)
            v.number(low, f"{where}.intervals.{stat}[0]", 0.0, 1.0)
            v.number(high, f"{where}.intervals.{stat}[1]", low, 1.0)
    if "confidence" in block:
        v.number(block["confidence"], f"{where}.confidence", 0.0, 1.0)
    if "bootstrap" in block:
        v.integer(block["bootstrap"], f"{where}.bootstrap", 0)


def check_mitigation(v: Validator, value: Any, card: Mapping[str, Any]) -> Mitigation:
    """The mitigation block: method, attribute among the sensitive columns, both sides of the
    trade-off, and per-group thresholds exactly when the method is thresholds (binary only)."""
    m = v.keys(
        value, "mitigation", set(Mitigation.__annotations__) - _MITIGATION_OPTIONAL, _MITIGATION_OPTIONAL
    )
    method = v.enum(m["method"], "mitigation.method", MITIGATION_METHODS)
    v.enum(m["attribute"], "mitigation.attribute", card["sensitive"])
    v.enum(m["constraint"], "mitigation.constraint", MITIGATION_CONSTRAINTS)
    _tradeoff(v, m, "mitigation")
    if method == "thresholds":
        if card["positive"] is None:
            raise v.fail("mitigation.method", "per-group thresholds need a binary model")
        _group_thresholds(v, m, "mitigation", required=False)
        if ("fallback_threshold" in m) != ("operating_points" in m):
            raise v.fail("mitigation", "fallback_threshold and operating_points come together")
    elif "thresholds" in m or "fallback_threshold" in m:
        raise v.fail("mitigation.thresholds", f"belongs to per-group thresholds, not {method}")
    for point, entry in v.mapping(m.get("operating_points", {}), "mitigation.operating_points").items():
        where = f"mitigation.operating_points.{point}"
        if point not in card["operating_points"]:
            raise v.fail(where, "is no operating point of the card")
        keys = {"threshold_before", "threshold_after"} if method == "reweighing" else {"threshold_before"}
        at = v.keys(
            entry, where, {*keys, "before", "after", "accuracy_lost"}, {"disparity_removed", *_GROUP_KEYS}
        )
        for key in keys:
            v.number(at[key], f"{where}.{key}", 0.0, _ABOVE_ALL)
        _tradeoff(v, at, where)
        if method == "thresholds":
            _group_thresholds(v, at, where, required=True)
        elif _GROUP_KEYS & at.keys():
            raise v.fail(f"{where}.thresholds", f"belongs to per-group thresholds, not {method}")
    return cast(Mitigation, value)


_ABOVE_ALL = 1.0 + 1e-6  # a group threshold may sit just above 1: that group is never flagged
_GROUP_KEYS = {"thresholds", "fallback_threshold"}


def _tradeoff(v: Validator, entry: Mapping[str, Any], where: str) -> None:
    for side in ("before", "after"):
        optional = {"selection_rate"}
        s = v.keys(entry[side], f"{where}.{side}", set(MitigationSide.__annotations__) - optional, optional)
        v.number(s["accuracy"], f"{where}.{side}.accuracy", 0.0, 1.0)
        if "selection_rate" in s:
            v.number(s["selection_rate"], f"{where}.{side}.selection_rate", 0.0, 1.0)
        for stat in MITIGATION_STATS:
            v.number(s[stat], f"{where}.{side}.{stat}", 0.0, 1.0, null=True)
    v.number(entry["accuracy_lost"], f"{where}.accuracy_lost", -1.0, 1.0)
    if "disparity_removed" in entry:
        v.number(entry["disparity_removed"], f"{where}.disparity_removed", -1.0, 1.0)


def _group_thresholds(v: Validator, entry: Mapping[str, Any], where: str, *, required: bool) -> None:
    if "thresholds" not in entry:
        raise v.fail(f"{where}.thresholds", "is required with per-group thresholds")
    if required and "fallback_threshold" not in entry:
        raise v.fail(f"{where}.fallback_threshold", "is required with per-group thresholds")
    for group, t in v.mapping(entry["thresholds"], f"{where}.thresholds").items():
        v.number(t, f"{where}.thresholds.{group}", 0.0, _ABOVE_ALL)
    if "fallback_threshold" in entry:
        v.number(entry["fallback_threshold"], f"{where}.fallback_threshold", 0.0, _ABOVE_ALL)
