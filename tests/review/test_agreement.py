"""Agreement between reviewers (alpha, kappa) and the model against the resolved labels."""

from __future__ import annotations

import krippendorff
import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from assay.review import agreement, resolution
from tests.reviewing import campaign, campaign_rows, label_all, users


def test_agreement_matches_the_reference_implementations(ws, source):
    c = campaign(ws, source, size=40, labels_per_item=3)
    people = users(ws, "ana", "ben", "cai")
    rng = np.random.default_rng(0)
    choices = ["False", "True", "unsure"]
    given = {
        u.username: label_all(ws, c, u, lambda item: choices[rng.choice(3, p=[0.5, 0.4, 0.1])])
        for u in people
    }
    items = sorted(given["ana"])
    assert sorted(given["ben"]) == items == sorted(given["cai"])

    def code(label):
        return np.nan if label == "unsure" else float(label == "True")

    matrix = np.array([[code(given[u.username][i]) for i in items] for u in people])
    expected_alpha = krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal")
    assert agreement.krippendorff_alpha(ws.engine, c) == pytest.approx(expected_alpha)

    kappas = {(k["a"], k["b"]): k for k in agreement.pairwise_kappa(ws.engine, c)}
    a, b = given["ana"], given["ben"]
    shared = [i for i in items if a[i] != "unsure" and b[i] != "unsure"]
    assert kappas[("ana", "ben")]["items"] == len(shared)
    assert kappas[("ana", "ben")]["kappa"] == pytest.approx(
        cohen_kappa_score([a[i] for i in shared], [b[i] for i in shared])
    )

    split = resolution.disputes(ws.engine, c, limit=5)
    expected_split = sum(len({given[u.username][i] for u in people}) > 1 for i in items)
    assert split["total"] == expected_split and len(split["items"]) == min(5, expected_split)
    assert all(len({x["label"] for x in d["labels"]}) > 1 for d in split["items"])
    assert all(d["reason"] for d in split["items"])


def test_agreement_is_undefined_until_it_can_be_computed(ws, source):
    c = campaign(ws, source, size=6, labels_per_item=2)
    ana, ben = users(ws, "ana", "ben")
    assert agreement.krippendorff_alpha(ws.engine, c) is None
    label_all(ws, c, ana, lambda item: "True")
    label_all(ws, c, ben, lambda item: "True")
    assert agreement.krippendorff_alpha(ws.engine, c) is None  # every label the same class
    assert agreement.pairwise_kappa(ws.engine, c)[0]["kappa"] is None
    assert agreement.summary(ws.engine, c)["mean_kappa"] is None


def test_model_vs_labels_counts_the_confusion(ws, source):
    c = campaign(ws, source, size=30)
    (ana,) = users(ws, "ana")
    flip = {}
    given = label_all(
        ws, c, ana, lambda item: flip.setdefault(item.item_id, "True" if len(flip) % 3 == 0 else "False")
    )
    loaded = ws.registry.load(ws.registry.resolve("damaging"))
    result = agreement.model_vs_labels(ws.engine, c, loaded.operating_points)
    assert result["resolved_items"] == 30 and result["note"] is None
    rows = {(r["name"], r["class"]): r for r in result["rows"]}
    items = {i.item_id: i for i in campaign_rows(ws, c)}
    threshold = loaded.operating_points["likelybad"]["threshold"]
    tp = sum(1 for i, lab in given.items() if lab == "True" and items[i].probabilities["True"] >= threshold)
    fp = sum(1 for i, lab in given.items() if lab == "False" and items[i].probabilities["True"] >= threshold)
    row = rows[("likelybad", "True")]
    assert (row["tp"], row["fp"]) == (tp, fp)
    assert row["tp"] + row["fp"] + row["fn"] + row["tn"] == 30
    decision = rows[("decision", "True")]
    assert decision["tp"] == sum(
        1 for i, lab in given.items() if lab == "True" and items[i].prediction == "True"
    )
