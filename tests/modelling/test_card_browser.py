"""The model card as a reader sees it, in real headless Chromium (Debian's, driven by Playwright):
every Model Cards section is there, nothing runs off the page, group labels do not overlap,
numbers are never wrapped mid-digit and small disparities are drawn large enough to see.
Screenshots go to ``test-output/screenshots/`` for a person to look at."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assay.modelling.evaluation import evaluate
from assay.modelling.fairness import FairnessOptions
from assay.modelling.reports import model_card
from tests.browser import shot
from tests.modelling.test_reports import MITCHELL_SECTIONS, facts_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def crowded_facts() -> dict[str, Any]:
    """Twelve groups with long names, small disparities and long numbers: what used to break the page."""
    rng = np.random.default_rng(4)
    n = 6000
    names = [f"region {i:02d} of a long administrative name" for i in range(12)]
    groups = rng.choice(names, n)
    y = rng.random(n) < 0.3
    p = np.clip(0.3 * y + 0.6 * rng.random(n) + 0.01 * (groups == names[0]), 0, 1)
    ev = evaluate(
        np.where(y, "True", "False"),
        np.c_[1 - p, p],
        ["False", "True"],
        positive="True",
        sensitive={"region": groups},
        fairness_options=FairnessOptions(min_group_size=30, bootstrap=200),
    )
    facts = facts_for("binary", evaluation=ev, sensitive=["region"])
    facts["lineage"]["train_rows"] = 123_456_789
    return facts


def test_the_card_reads_cleanly_in_chromium(browser: Any, tmp_path: Path) -> None:
    page_file = tmp_path / "card.html"
    page_file.write_text(model_card(crowded_facts()), encoding="utf-8")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(page_file.as_uri())
    shot(page, "model-card")
    for section in MITCHELL_SECTIONS:
        assert page.locator(f"section#{section}").is_visible(), section
    # Nothing wider than the window: no sideways scrolling.
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    # Every number is on one line (a Range over a wrapped cell has one rectangle per line).
    wrapped = page.evaluate(
        """[...document.querySelectorAll('td.num')].filter(td => {
               const r = document.createRange(); r.selectNodeContents(td); return r.getClientRects().length > 1;
           }).map(td => td.textContent)"""
    )
    assert page.locator("td.num").count() > 100 and wrapped == []
    # Group labels of the fairness plots do not overlap one another.
    boxes = page.evaluate(
        """[...document.querySelectorAll('figure[data-plot="fairness"]')].map(f =>
               [...f.querySelectorAll('[id^="group-label-"]')].map(e => {
                   const b = e.getBoundingClientRect(); return [b.top, b.bottom, b.left, b.right]; }))"""
    )
    assert boxes and all(len(figure) == 12 for figure in boxes)
    for figure in boxes:
        rows = sorted(figure)
        assert all(a[1] <= b[0] + 0.5 for a, b in pairwise(rows)), rows
    # A disparity of a few hundredths is a bar of visible width, not a sliver on a 0-1 axis.
    widths = page.evaluate(
        """[...document.querySelectorAll('[id^="disparity-bar-"]')].map(e => e.getBoundingClientRect().width)"""
    )
    assert widths and min(widths) >= 8, widths
    page.close()
