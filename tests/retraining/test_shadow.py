"""assay.retraining.shadow on logged traffic: the challenger's agreement with what production served,
by brute force, and both versions on the labelled items once labels arrive."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from assay.errors import InvalidInput
from assay.modelling.comparison import version_proba
from assay.modelling.spec_file import load_spec
from assay.modelling.training import train
from assay.retraining.shadow import shadow
from assay.workspace import Workspace
from tests.conftest import edits_frame
from tests.modelling.test_comparison import WEAK_FEATURES
from tests.retraining.test_retrain import as_labels, label, serve


def test_the_challenger_in_the_shadow_of_production(served: tuple[Workspace, Path]) -> None:
    ws, spec_path = served
    weak = load_spec(spec_path)
    weak.features.include = WEAK_FEATURES
    challenger = train(weak, ws.registry).record
    ws.registry.set_alias(
        "damaging", "challenger", challenger.version, actor="t", reason="", forced=False, gates=[]
    )
    traffic = edits_frame(400, seed=12)
    traffic["rev_id"] += 70_000
    serve(ws, "damaging", traffic)
    result = shadow(ws.registry, ws.engine, ws.log, "damaging", resamples=200)
    assert (result.champion, result.challenger, result.rows) == ("damaging@1", challenger.ref, 400)
    production, other = ws.registry.load(ws.registry.get("damaging", 1)), ws.registry.load(challenger)
    flagged_a = version_proba(production, traffic, source="t")[:, 1] >= 0.5
    flagged_b = version_proba(other, traffic, source="t")[:, 1] >= 0.5
    assert result.agreement == pytest.approx(np.mean(flagged_a == flagged_b))
    assert result.labelled is None and "0 labelled items" in (result.why_not or "")

    labelled = traffic.iloc[:250]
    label(ws, "damaging", labelled["rev_id"].astype(str).tolist(), as_labels(labelled["reverted"]))
    result = shadow(ws.registry, ws.engine, ws.log, "damaging", resamples=200)
    assert result.labelled_rows == 250 and result.labelled is not None and result.labelled.n == 250
    truth = labelled["reverted"].to_numpy()
    expected = roc_auc_score(truth, version_proba(production, labelled, source="t")[:, 1])
    assert result.labelled.stats["roc_auc"]["a"] == pytest.approx(expected)
    assert result.labelled.stats["roc_auc"]["difference"] < 0  # the weak challenger is worse on them


def test_a_challenger_needing_features_the_log_lacks_is_refused(served: tuple[Workspace, Path]) -> None:
    ws, spec_path = served
    narrow = load_spec(spec_path)
    narrow.features.include = WEAK_FEATURES
    narrow.name = "damaging"
    first = train(narrow, ws.registry).record  # production keeps v1; v2 reads two features
    ws.registry.set_alias(
        "damaging", "production", first.version, actor="t", reason="", forced=False, gates=[]
    )
    ws.registry.set_alias("damaging", "challenger", 1, actor="t", reason="", forced=False, gates=[])
    serve(ws, "damaging", edits_frame(50, seed=13))
    with pytest.raises(InvalidInput, match="needs features damaging@2's log lacks: "):
        shadow(ws.registry, ws.engine, ws.log, "damaging")
