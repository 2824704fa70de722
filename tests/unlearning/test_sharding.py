from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os

import lightgbm
import numpy as np
import pytest

from assay.errors import ArtifactError, DataError, SpecError
from assay.modelling.candidates import thread_limit
from assay.modelling.preparation import prepare
from assay.modelling.selection import CandidateResult
from assay.modelling.spec import UnlearningSpec
from assay.modelling.spec_file import load_spec
from assay.modelling.training import train
from assay.registry.ensemble import ShardedPredictor, read_sharded, rows_digest
from assay.unlearning.sharding import (
    assign,
    auto_shards,
    fit_shards,
    recorded_plan,
    shard_plan,
    sharded_refit,
    trees_per_slice,
)
from tests.unlearning.conftest import write_sharded_spec


def test_a_rows_shard_and_slice_depend_on_its_id_and_the_seed_alone():
    ids = np.array([str(i) for i in range(5000)])
    shard, slice_ = assign(ids, 8, 4, seed=3)
    again, again_slice = assign(ids[::-1], 8, 4, seed=3)
    assert (shard == again[::-1]).all() and (slice_ == again_slice[::-1]).all()
    assert set(np.bincount(shard)) and np.bincount(shard).min() > 500  # spread over every shard
    assert np.bincount(slice_, minlength=4).min() > 1000
    other, _ = assign(ids, 8, 4, seed=4)
    assert (other != shard).mean() > 0.8


def test_trees_are_spread_over_slices():
    assert trees_per_slice(60, 3) == [20, 20, 20]
    assert trees_per_slice(10, 4) == [3, 3, 2, 2]


def test_a_sharded_version_is_stored_as_text_models_and_served_as_their_mean(workspace, tmp_path):
    spec = load_spec(write_sharded_spec(tmp_path / "data", shards=3, slices=2, curve=True))
    result = train(spec, workspace.registry, refit=sharded_refit)
    record = result.record
    assert "model.ensemble.json" in record.manifest and "shard-002.slice-00.txt" in record.manifest
    assert not any(name.endswith(".skops") for name in record.manifest)
    loaded = workspace.registry.load(record)
    predictor = loaded.predictor
    assert isinstance(predictor, ShardedPredictor) and len(predictor.shards) == 3
    X = np.random.default_rng(0).normal(size=(7, predictor.n_features))
    X[:, :] = np.abs(X)
    shards = [
        lightgbm.Booster(model_str=(record.directory / f"model.shard-{s:03d}.txt").read_text()).predict(X)
        for s in range(3)
    ]
    assert np.array_equal(predictor.predict_proba(X)[:, 1], np.mean(shards, axis=0))
    assert predictor.contributions(X).shape == (7, 2, predictor.n_features + 1)
    card = workspace.registry.card(record)
    assert card["unlearning"]["fast"] is True
    assert [p["shards"] for p in card["unlearning"]["curve"]] == [1, 2, 3]
    assert set(card["unlearning"]["cost"]) == {"roc_auc", "average_precision", "log_loss"}
    assert record.lineage["unlearning"]["shards"] == 3
    html = (record.directory / "card.html").read_text()
    assert 'data-fast="true"' in html and 'data-plot="shard-curve"' in html


def test_continuing_a_shard_from_its_checkpoint_equals_training_it_from_scratch(workspace, tmp_path):
    spec = load_spec(write_sharded_spec(tmp_path / "data", shards=4, slices=3))
    record = train(spec, workspace.registry, refit=sharded_refit).record
    data = prepare(spec, None, lambda _m: None)
    old = read_sharded(record.directory, record.manifest)
    plan = recorded_plan(record.lineage)
    assert plan["shards"] == 4 and plan["slices"] == 3 and "learning_rate" in plan
    params = dict(record.lineage["params"])
    # Leave out three rows; continue their shards from the slice before the first of them.
    gone = np.array([5, 700, 1101])
    shard, slice_ = assign(data.ids[gone], 4, 3, spec.seed)
    start: dict[int, int] = {}
    for s, r in zip(shard.tolist(), slice_.tolist(), strict=True):
        start[s] = min(start.get(s, r), r)
    keep = np.ones(len(data.ids), dtype=bool)
    keep[gone] = False
    smaller = dataclasses.replace(data, X=data.X[keep], y=data.y[keep], ids=data.ids[keep])
    continued = fit_shards(smaller, params, plan, previous=old, start=start)
    scratch = fit_shards(smaller, params, plan)
    assert continued.texts == scratch.texts
    # Reading only what is continued from (a restarted shard up to its slice) gives the same.
    partial = read_sharded(record.directory, record.manifest, start)
    assert all(len(partial.texts[s]) == r for s, r in start.items())
    assert fit_shards(smaller, params, plan, previous=partial, start=start).texts == scratch.texts
    untouched = [s for s in range(4) if s not in start]
    assert all(continued.texts[s] == old.texts[s] for s in untouched)
    assert any(continued.texts[s] != old.texts[s] for s in start)
    X = data.X_test
    assert np.array_equal(continued.predict_proba(X), scratch.predict_proba(X))


def test_a_tampered_shard_model_is_refused_at_load(workspace, tmp_path):
    spec = load_spec(write_sharded_spec(tmp_path / "data", shards=2, slices=1))
    record = train(spec, workspace.registry, refit=sharded_refit).record
    path = record.directory / "model.shard-001.txt"
    path.write_text(path.read_text().replace("num_leaves=", "num_leaves=9", 1))
    workspace.registry._alive.clear()
    workspace.registry._recent.clear()
    with pytest.raises(ArtifactError, match="hash mismatch"):
        workspace.registry.load(record)


def test_sharding_is_checked_in_the_spec_and_at_training(workspace, tmp_path):
    path = write_sharded_spec(tmp_path / "data")
    text = path.read_text()
    path.write_text(text.replace('candidates = ["lightgbm"]', 'candidates = ["lightgbm", "random_forest"]'))
    with pytest.raises(SpecError, match=r"training\.unlearning"):
        load_spec(path)
    path.write_text(text.replace("shards = 4", "shards = 0"))
    with pytest.raises(SpecError, match="between 1 and 256"):
        load_spec(path)
    for bad in ("true", '"many"'):
        path.write_text(text.replace("shards = 4", f"shards = {bad}"))
        with pytest.raises(SpecError, match=r'"auto" or between 1 and 256'):
            load_spec(path)
    for method in ("reweighing", "thresholds"):
        mitigated = text.replace(
            "[training.unlearning]", f'[fairness]\nmitigation = "{method}"\n\n[training.unlearning]'
        )
        path.write_text(mitigated)
        with pytest.raises(SpecError, match=r"fairness\.mitigation.*\[training\.unlearning\]"):
            load_spec(path)
    path.write_text(text.replace("shards = 4\n", ""))
    assert load_spec(path).training.unlearning.shards == "auto"
    path.write_text(text)
    with pytest.raises(SpecError, match="sharded training"):
        train(load_spec(path), workspace.registry)  # without the sharded refit
    spec = load_spec(path)
    spec.training.unlearning = UnlearningSpec(shards=200, slices=1)
    with pytest.raises(DataError, match="no rows of class"):
        train(spec, workspace.registry, refit=sharded_refit)


def test_candidate_result_params_reach_every_shard(workspace, tmp_path):
    spec = load_spec(write_sharded_spec(tmp_path / "data", shards=2, slices=2))
    data = prepare(spec, None, lambda _m: None)
    winner = CandidateResult(
        "lightgbm", {"n_estimators": 10, "num_leaves": 4, "learning_rate": 0.1}, [0.5], [0.1]
    )
    model = sharded_refit(spec, data, winner, lambda _m: None).estimator
    assert model.plan["trees"] == [5, 5]
    for texts in model.texts:
        booster = lightgbm.Booster(model_str=texts[-1])
        assert booster.num_trees() == 10
        assert lightgbm.Booster(model_str=texts[0]).num_trees() == 5


def test_each_shard_gets_its_share_of_the_trees_at_a_higher_rate():
    params = {"n_estimators": 500, "learning_rate": 0.02}
    plan = shard_plan(UnlearningSpec(4, 2), params, rows=20_000, seed=7)
    assert plan == {
        "shards": 4,
        "slices": 2,
        "seed": 7,
        "trees": [63, 62],
        "learning_rate": 0.02 * 500 / 125,
        "threads": 1,
    }
    many = shard_plan(UnlearningSpec(64, 1), params, rows=20_000, seed=7)
    assert many["trees"] == [50] and many["learning_rate"] == pytest.approx(0.2)  # never below 50 trees
    assert shard_plan(UnlearningSpec(1, 1), params, rows=20_000, seed=7)["trees"] == [500]
    few = shard_plan(UnlearningSpec(8, 1), {"n_estimators": 30}, rows=20_000, seed=7)
    assert few["trees"] == [30] and few["learning_rate"] == pytest.approx(0.1)  # LightGBM's default rate


def test_auto_shards_are_sized_from_the_rows_read():
    assert [auto_shards(n) for n in (100, 9_999, 10_000, 14_979, 15_000, 1_000_000)] == [1, 1, 2, 2, 3, 16]
    params = {"n_estimators": 500, "learning_rate": 0.02}
    assert shard_plan(UnlearningSpec("auto", 1), params, rows=14_979, seed=0)["shards"] == 2


def test_shards_fitted_side_by_side_equal_shards_fitted_one_by_one(workspace, tmp_path):
    spec = load_spec(write_sharded_spec(tmp_path / "data", shards=4, slices=2))
    data = prepare(spec, None, lambda _m: None)
    params = {"n_estimators": 120, "num_leaves": 8}
    plan = shard_plan(spec.training.unlearning, params, data.read_rows, spec.seed)
    with thread_limit(1):  # one shard at a time
        alone = fit_shards(data, params, plan)
    with thread_limit(4):  # four at once
        together = fit_shards(data, params, plan)
    assert alone.texts == together.texts
    # A plan recorded before shards had one thread each fits them on every core, as it did then.
    old = {k: v for k, v in plan.items() if k != "threads"}
    assert (
        fit_shards(data, params, old).texts
        == fit_shards(data, params, {**plan, "threads": os.cpu_count()}).texts
    )


def test_a_version_keeps_its_shards_held_out_outputs_and_a_continuation_predicts_only_what_it_retrained(
    workspace, tmp_path
):
    spec = load_spec(write_sharded_spec(tmp_path / "data", shards=4, slices=2))
    record = train(spec, workspace.registry, refit=sharded_refit).record
    assert "held-out.npy" in record.manifest
    data = prepare(spec, None, lambda _m: None)
    old = read_sharded(record.directory, record.manifest)
    assert old.held_out is not None and old.held_out.rows == rows_digest(data.X_test)
    boosters = [lightgbm.Booster(model_str=t[-1]) for t in old.texts]
    assert all(
        np.array_equal(kept, b.predict(data.X_test))
        for kept, b in zip(old.held_out.shards, boosters, strict=True)
    )
    plan, params = recorded_plan(record.lineage), dict(record.lineage["params"])
    keep = np.ones(len(data.ids), dtype=bool)
    keep[7] = False
    [gone], [first] = (a.tolist() for a in assign(data.ids[~keep], 4, 2, spec.seed))
    smaller = dataclasses.replace(data, X=data.X[keep], y=data.y[keep], ids=data.ids[keep])
    continued = fit_shards(smaller, params, plan, previous=old, start={gone: first})
    proba = continued.predict_proba(data.X_test)
    assert continued.held_out is not None
    for s, (now, before) in enumerate(zip(continued.held_out.shards, old.held_out.shards, strict=True)):
        assert (now is before) == (s != gone)  # kept shards' outputs are not predicted again
    # ... and what they give is what predicting every shard gives, bit for bit.
    assert np.array_equal(proba, continued.predictor().predict_proba(data.X_test))
    assert np.array_equal(proba, fit_shards(smaller, params, plan).predict_proba(data.X_test))
    # Other held-out rows: every shard is predicted.
    fewer = dataclasses.replace(smaller, X_test=data.X_test[1:])
    other = fit_shards(fewer, params, plan, previous=old, start={gone: first})
    assert other.held_out is not None and all(p is None for p in other.held_out.shards)
    other.predict_proba(fewer.X_test)
    assert not any(
        now is before for now, before in zip(other.held_out.shards, old.held_out.shards, strict=True)
    )


def _rewrite_held_out(directory, manifest, data: bytes) -> dict[str, str]:
    """``held-out.npy`` replaced by ``data`` and listed as such: the manifest a store would hold."""
    (directory / "held-out.npy").write_bytes(data)
    meta_path = directory / "model.ensemble.json"
    meta = json.loads(meta_path.read_text())
    meta["held_out"]["sha256"] = hashlib.sha256(data).hexdigest()
    meta_path.write_text(json.dumps(meta))
    return {
        **manifest,
        "held-out.npy": meta["held_out"]["sha256"],
        "model.ensemble.json": hashlib.sha256(meta_path.read_bytes()).hexdigest(),
    }


def test_crafted_held_out_outputs_are_refused(workspace, tmp_path):
    spec = load_spec(write_sharded_spec(tmp_path / "data", shards=2, slices=1))
    record = train(spec, workspace.registry, refit=sharded_refit).record
    directory, manifest = record.directory, record.manifest
    good = (directory / "held-out.npy").read_bytes()
    (directory / "held-out.npy").write_bytes(good[:-8] + np.float64(0.5).tobytes())
    with pytest.raises(ArtifactError, match="hash mismatch"):
        read_sharded(directory, manifest)
    array = np.load(io.BytesIO(good))
    crafted = {
        "object": np.array([{"a": 1}, None], dtype=object),  # would need pickle to read
        "float32": array.astype(np.float32),
        "too few shards": array[:1],
        "not a probability": array * 3,
        "NaN": np.where(np.arange(array.shape[1]) == 3, np.nan, array),
        "not an array": b"PK\x03\x04 not numpy",
        "cut short": good[:-100],
    }
    for value in crafted.values():
        out = io.BytesIO()
        if isinstance(value, bytes):
            out.write(value)
        else:
            np.save(out, value, allow_pickle=True)
        with pytest.raises(ArtifactError, match=r"held-out\.npy (is not a NumPy|does not hold)"):
            read_sharded(directory, _rewrite_held_out(directory, manifest, out.getvalue()))
    unlisted = {k: v for k, v in _rewrite_held_out(directory, manifest, good).items() if k != "held-out.npy"}
    with pytest.raises(ArtifactError, match="held-out outputs the manifest does not"):
        read_sharded(directory, unlisted)
    assert read_sharded(directory, _rewrite_held_out(directory, manifest, good)).held_out is not None
