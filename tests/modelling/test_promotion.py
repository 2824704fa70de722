"""assay.modelling.promotion: the safe default. A spec without gates may not replace its production
version with one significantly worse on the same rows (the 0.87 -> 0.69 promotion), unless forced
with a reason; a better one is promoted; the comparison is recorded with the move."""

from __future__ import annotations

from pathlib import Path

import pytest

from assay.errors import Conflict, GateFailed, InvalidInput
from assay.modelling.comparison import compare_versions, held_out_rows
from assay.modelling.promotion import promote
from assay.modelling.spec_file import load_spec
from assay.modelling.training import train
from assay.workspace import Workspace
from tests.modelling.test_comparison import WEAK_FEATURES, write_variant


def test_without_gates_a_much_worse_challenger_is_not_promoted(
    trained_workspace: Workspace, trained_home: Path
) -> None:
    reg = trained_workspace.registry
    good = train(load_spec(write_variant(trained_home, "good")), reg).record
    reg.promote("damaging", good.version, actor="t", reason="the good one, no gates", force=True)
    weak = train(load_spec(write_variant(trained_home, "weak", features=WEAK_FEATURES)), reg).record
    assert good.spec["gates"] == weak.spec["gates"] == {"minimum": {}, "max_regression": {}, "fairness": {}}
    assert good.summary["roc_auc"] - weak.summary["roc_auc"] > 0.15
    moves = len(reg.history("damaging"))
    with pytest.raises(
        GateFailed, match=r"blessing gate: roc_auc 0\.\d{4} vs 0\.\d{4} .* significantly worse"
    ):
        promote(reg, "damaging", weak.version, actor="t", resamples=300)
    assert reg.aliases("damaging")["production"] == good.version and len(reg.history("damaging")) == moves
    with pytest.raises(InvalidInput, match="needs a reason"):
        promote(reg, "damaging", weak.version, actor="t", force=True, resamples=300)
    forced = promote(reg, "damaging", weak.version, actor="t", force=True, reason="testing", resamples=300)
    assert reg.aliases("damaging")["production"] == weak.version
    last = reg.history("damaging")[-1]
    assert last["forced"] and last["gates"] == forced.results
    assert last["gates"][0]["comparison"]["ci"][1] < 0  # the interval that refused it is on record
    # The good one comes back: better on the same rows, it passes without force.
    back = promote(reg, "damaging", good.version, actor="t", resamples=300)
    assert all(r["passed"] for r in back.results) and "significantly better" in back.comparison.verdict()
    assert reg.aliases("damaging")["production"] == good.version


def test_a_comparison_of_other_versions_is_refused(trained_workspace: Workspace, trained_home: Path) -> None:
    reg = trained_workspace.registry
    v2 = train(load_spec(write_variant(trained_home, "good")), reg).record
    v1 = reg.get("damaging", 1)
    stale = compare_versions(reg, v2, v2, held_out_rows(v2), resamples=100).to_dict()
    with pytest.raises(Conflict, match="compare again"):
        reg.promote("damaging", v2.version, actor="t", compared=stale)
    assert reg.aliases("damaging")["production"] == v1.version
