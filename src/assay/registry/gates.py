"""Promotion gates: the checks a version must pass before an alias may point at it.

Gates come from the version's own spec: absolute minimums (``roc_auc >= 0.8``),
the largest allowed regression against the version that holds the alias now,
and fairness limits. Each check reports what it compared, so a refusal (and a
forced promotion) records exactly why.

A regression is only measured on the same rows: ``compared`` is a paired comparison of the
holder (``a``) and the challenger (``b``) on one data set (``modelling.comparison``), never two
summaries from different held-out sets. Without ``max_regression`` gates the default still
applies (TFX calls it blessing): a challenger significantly worse than the holder on ROC-AUC or
PR-AUC (its bootstrap interval of the difference below zero) is refused.
"""

from __future__ import annotations

from typing import Any, Protocol


class Gated(Protocol):
    """What the gates read of a version (``versions.VersionRecord`` is one)."""

    @property
    def ref(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def spec(self) -> dict[str, Any]: ...
    @property
    def summary(self) -> dict[str, Any]: ...


# Brier is a loss: lower is better, so its gates run the other way.
_LOWER_IS_BETTER = frozenset({"brier"})
# What the default gate watches when a spec declares no regression limits of its own.
BLESSING_STATS = ("roc_auc", "pr_auc")


def check_gates(
    record: Gated, holder: Gated | None, compared: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Every gate of ``record``'s spec, evaluated; ``holder`` is the version the alias points at now
    and ``compared`` the paired comparison of the two on the same rows (holder ``a``, record ``b``)."""
    gates = record.spec.get("gates", {})
    summary = record.summary
    results: list[dict[str, Any]] = []
    for stat, limit in gates.get("minimum", {}).items():
        value = summary.get(stat)
        lower = stat in _LOWER_IS_BETTER
        passed = value is not None and (value <= limit if lower else value >= limit)
        relation = "<=" if lower else ">="
        results.append(
            _result(
                "minimum", stat, value, limit, passed, f"{stat} {_fmt(value)} must be {relation} {limit:g}"
            )
        )
    if holder is not None and holder.version != record.version:
        results += _regressions(gates.get("max_regression", {}), holder, compared)
    fairness = summary.get("fairness", {})
    for stat, limit in gates.get("fairness", {}).items():
        value = fairness.get(stat)
        passed = value is not None and value <= limit
        results.append(
            _result("fairness", stat, value, limit, passed, f"{stat} {_fmt(value)} must be <= {limit:g}")
        )
    return results


def _regressions(
    limits: dict[str, float], holder: Gated, compared: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """``max_regression`` gates, or the default blessing gate when there are none, on ``compared``."""
    if compared is None:
        return [
            _result(
                "max_regression" if limits else "blessing",
                stat,
                None,
                limits.get(stat, 0.0),
                False,
                f"no comparison with {holder.ref} on the same rows, so a regression cannot be measured",
            )
            for stat in (limits or BLESSING_STATS)
        ]
    where = f"on {compared['n']} rows of {compared['source']}"
    results = []
    for stat, allowed in limits.items():
        row = compared["stats"].get(stat, {})
        value, before = row.get("b"), row.get("a")
        if before is None:
            continue
        drop = None if value is None else (value - before if stat in _LOWER_IS_BETTER else before - value)
        results.append(
            _result(
                "max_regression",
                stat,
                value,
                allowed,
                drop is not None and drop <= allowed,
                f"{stat} {_fmt(value)} vs {_fmt(before)} in {holder.ref} {where}{_interval(row)}: "
                f"a regression of {_fmt(drop)} (at most {allowed:g} allowed)",
                baseline=before,
                comparison=row,
            )
        )
    if limits:
        return results
    for stat in BLESSING_STATS:
        row = compared["stats"].get(stat, {})
        if row.get("a") is None or row.get("b") is None or row.get("ci") is None:
            continue
        worse = bool(row.get("significant")) and row["difference"] < 0
        results.append(
            _result(
                "blessing",
                stat,
                row["b"],
                0.0,
                not worse,
                f"{stat} {_fmt(row['b'])} vs {_fmt(row['a'])} in {holder.ref} {where}{_interval(row)}: "
                + ("significantly worse" if worse else "not significantly worse"),
                baseline=row["a"],
                comparison=row,
            )
        )
    return results


def _interval(row: dict[str, Any]) -> str:
    ci = row.get("ci")
    if not ci or ci[0] is None or ci[0] != ci[0]:
        return ""
    return f" (difference {row['difference']:+.4f}, {row['confidence']:.0%} interval {ci[0]:+.4f} to {ci[1]:+.4f})"


def _result(
    gate: str, stat: str, value: Any, limit: float, passed: bool, message: str, **extra: Any
) -> dict[str, Any]:
    return {
        "gate": gate,
        "stat": stat,
        "value": value,
        "limit": limit,
        "passed": passed,
        # Named by kind as well as stat: a stat can have a minimum and a regression gate at once.
        "message": f"{gate} gate: {message}",
        **extra,
    }


def _fmt(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.4f}"


def summarize(ev: dict[str, Any], positive: str | None) -> dict[str, Any]:
    """The headline numbers gates and listings use: positive class for binary, macro for multiclass."""
    stats = ev["per_class"][positive] if positive is not None else ev["macro"]
    out: dict[str, Any] = {k: stats.get(k) for k in ("roc_auc", "pr_auc", "f1", "precision", "recall")}
    out["accuracy"] = ev.get("accuracy")
    out["brier"] = ev["calibration"]["brier"]
    fairness: dict[str, float] = {}
    for attr in (ev.get("fairness") or {}).values():
        blocks = [attr] if "equalized_odds_difference" in attr else list(attr.values())
        for block in blocks:
            for key in ("demographic_parity_difference", "equalized_odds_difference"):
                if block.get(key) is not None:
                    fairness[key] = max(fairness.get(key, 0.0), float(block[key]))
    out["fairness"] = fairness
    return out
