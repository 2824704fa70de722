"""How the model card writes numbers and names, in its tables and on its plots alike.

One format for every statistic: three decimals (a rate of 0.5 reads 0.500 beside
0.487), thousands separators for counts, "—" for what is undefined. Table cells
say whether they hold a number, so the page can keep numbers on one line
instead of wrapping them mid-digit.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

DECIMALS = 3
# How statistics are named for readers; anything else shows its key with spaces.
STAT_NAMES = {
    "f1": "F1",
    "fpr": "FPR",
    "tpr": "TPR",
    "fnr": "FNR",
    "tnr": "TNR",
    "npv": "NPV",
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC (avg. precision)",
}


def plain(value: Any) -> str | None:
    """The text of the values every page writes alike: '—' for undefined (None, NaN, infinities),
    yes/no, counts with separators; None for any other value (each page formats those its way)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float | np.floating) and not np.isfinite(value):
        return "—"
    return None


def fmt(value: Any) -> str:
    """A value's text: three decimals for every float, separators for counts, '—' for undefined."""
    text = plain(value)
    if text is not None:
        return text
    if isinstance(value, float):
        if 0 < abs(value) < 0.5 * 10**-DECIMALS:  # would print as 0.000 though it is not zero
            return f"< {10**-DECIMALS:.{DECIMALS}f}" if value > 0 else f"> -{10**-DECIMALS:.{DECIMALS}f}"
        return f"{value:,.{DECIMALS}f}"
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return ", ".join(fmt(v) for v in value)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def stat_name(key: str) -> str:
    return STAT_NAMES.get(key, key.replace("_", " "))


def table(headers: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    """A table for the page: each cell's text, and whether it is a number (kept on one line)."""
    return {
        "headers": headers,
        "rows": [[{"text": fmt(v), "num": is_number(v)} for v in row] for row in rows],
    }


def label(text: Any, limit: int = 0) -> str:
    """Text for a plot: "$" escaped (a pair would switch matplotlib to mathtext), cut to ``limit``."""
    shown = str(text)
    if limit and len(shown) > limit:
        shown = shown[: limit - 1] + "…"
    return shown.replace("$", r"\$")
