"""The loop as it will be judged: a good model in production, then a degraded data set and a noisy
review campaign (the loop keeps the good model), then plenty of correct labels from production
traffic (the loop promotes the better challenger); every decision is what `assay compare` says."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from assay.modelling.spec_file import load_spec
from assay.modelling.training import train
from assay.retraining import runs
from assay.retraining.retrain import Outcome, retrain
from assay.review import labelling, worksets
from assay.workspace import Workspace
from tests.cli.test_cli import run
from tests.conftest import EDITQUALITY_COLUMNS, edits_frame, write_binary_spec
from tests.retraining.test_retrain import as_labels, label, serve
from tests.reviewing import campaign, users

TTL = 600


def explained(ws: Workspace, outcome: Outcome) -> None:
    """The decision's verdict is the one `assay compare` prints for the same two versions."""
    assert outcome.champion is not None and outcome.challenger is not None
    code, out = run(ws.settings.home, "compare", outcome.champion.ref, outcome.challenger.ref)
    assert code == 0, out
    verdict = next(line for line in out.splitlines() if line.startswith("verdict: ")).removeprefix(
        "verdict: "
    )
    assert verdict in outcome.message, (verdict, outcome.message)


def test_the_loop_keeps_the_good_model_and_promotes_a_better_one(
    workspace: Workspace, tmp_path: Path
) -> None:
    ws = workspace
    spec_path = write_binary_spec(tmp_path / "data", n_train=250, n_test=3000)
    train_file = spec_path.parent / "edits.train.tsv"
    clean = train_file.read_text()
    train(load_spec(spec_path), ws.registry)
    good = ws.registry.resolve("damaging")

    # A degraded data set: a third of the labels flipped and the strongest feature lost.
    rows = edits_frame(3250, seed=1).iloc[:250].copy()
    rng = np.random.default_rng(0)
    flip = rng.random(250) < 0.35
    rows["reverted"] = np.where(flip, ~rows["reverted"], rows["reverted"])
    rows["badwords_prop_delta_sum"] = 0.0
    rows.to_csv(train_file, sep="\t", header=False, index=False, columns=EDITQUALITY_COLUMNS)
    degraded = retrain(ws, "damaging", actor="t")
    assert degraded.status == "kept" and ws.registry.resolve("damaging").version == good.version, (
        degraded.message
    )
    explained(ws, degraded)

    # The files are right again, but a noisy review campaign relabels the training items at random.
    train_file.write_text(clean)
    items = spec_path.parent / "items.csv"
    edits_frame(3250, seed=1).iloc[:250].drop(columns=["reverted"]).to_csv(items, index=False)
    noisy = campaign(ws, items, name="noisy", selection="random", size=250)
    (careless,) = users(ws, "careless")
    while (
        held := worksets.take_workset(ws.engine, noisy, careless, size=50, ttl_s=TTL)
    ) is not None and held.items:
        for item in held.items:
            labelling.submit_label(
                ws.engine, noisy, careless, item.item_id, str(rng.random() < 0.5), ttl_s=TTL
            )
    kept = retrain(ws, "damaging", actor="t")
    assert kept.status == "kept" and ws.registry.resolve("damaging").version == good.version, kept.message
    assert kept.challenger is not None and kept.challenger.lineage["labels"]["campaigns"] == {"noisy": 250}
    explained(ws, kept)

    # Production traffic, then its true labels through the label API: a genuinely better challenger.
    traffic = edits_frame(4000, seed=5)
    traffic["rev_id"] += 1_000_000
    serve(ws, "damaging", traffic)
    label(ws, "damaging", traffic["rev_id"].astype(str).tolist(), as_labels(traffic["reverted"]))
    better = retrain(ws, "damaging", actor="t")
    assert better.status == "promoted", better.message
    assert (
        better.challenger is not None and ws.registry.resolve("damaging").version == better.challenger.version
    )
    assert "significantly better" in better.message
    explained(ws, better)
    snapshot = better.challenger.lineage["labels"]
    assert (snapshot["api"], snapshot["added"], snapshot["campaigns"]) == (4000, 4000, {"noisy": 250})
    assert [r.status for r in runs.list_runs(ws.engine, "damaging")] == ["promoted", "kept", "kept"]
    code, out = run(ws.settings.home, "history", "damaging")
    assert code == 0 and "retraining runs" in out and out.count("kept damaging@1") == 2
