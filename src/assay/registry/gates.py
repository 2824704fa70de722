"""Promotion gates: the checks a version must pass before an alias may point at it.

Gates come from the version's own spec: absolute minimums (``roc_auc >= 0.8``),
the largest allowed regression against the version that holds the alias now,
and fairness limits. Each check reports what it compared, so a refusal (and a
forced promotion) records exactly why.
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


def check_gates(record: Gated, holder: Gated | None) -> list[dict[str, Any]]:
    """Every gate of ``record``'s spec, evaluated; ``holder`` is the version the alias points at now."""
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
    for stat, allowed in gates.get("max_regression", {}).items():
        if holder is None or holder.version == record.version:
            continue
        value, before = summary.get(stat), holder.summary.get(stat)
        if before is None:
            continue
        drop = None if value is None else (value - before if stat in _LOWER_IS_BETTER else before - value)
        passed = drop is not None and drop <= allowed
        results.append(
            _result(
                "max_regression",
                stat,
                value,
                allowed,
                passed,
                f"{stat} {_fmt(value)} vs {_fmt(before)} in {holder.ref}: a regression of {_fmt(drop)} "
                f"(at most {allowed:g} allowed)",
                baseline=before,
            )
        )
    fairness = summary.get("fairness", {})
    for stat, limit in gates.get("fairness", {}).items():
        value = fairness.get(stat)
        passed = value is not None and value <= limit
        results.append(
            _result("fairness", stat, value, limit, passed, f"{stat} {_fmt(value)} must be <= {limit:g}")
        )
    return results


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
