"""Forgetting with sharded (SISA) training against retraining, on editquality and a synthetic set.

For each data set, in one run (the same machine, the same load):

* the peer: ``assay train`` of the spec without ``[training.unlearning]`` (LightGBM, the spec's
  cross-validation and refit: what forgetting an item costs without shards), timed end to end,
  and its refit (one unsharded model on all rows) alone; run three times, before, between and
  after the forgets, each forget compared with the mean of the runs either side of it;
* ``assay train`` of the same spec with ``[training.unlearning] shards = S, slices = R`` (its card
  measures the held-out cost against the unsharded model and the curve against shard count);
* ``assay forget`` of 1 training id, then of 100 more (seeded picks), each timed end to end (find
  the ids, clean the stores, retrain the affected shards, assess and publish the replacement),
  with the replacement's refit (the shards retrained) alone;
* ``assay forget verify`` of the 1-id request: a from-scratch sharded training without the id,
  compared bit for bit on the held-out predictions.

Ratios are peer time / forget time: end to end (retraining with ``assay train`` vs forgetting)
and model fitting alone (one unsharded refit vs the shards retrained).

    python bench/bench_unlearning.py editquality [--data ../shared/data/editquality] [--shards auto] [--slices 1]
    python bench/bench_unlearning.py synthetic --rows 1000000 [--shards auto] [--slices 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from assay.modelling.datasets import read_labelled
from assay.modelling.spec_file import load_spec
from assay.modelling.training import train
from assay.settings import Settings
from assay.unlearning import forgetting
from assay.unlearning.sharding import training_options
from assay.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "editquality.toml"
SISA = "\n[training.unlearning]\n{shards}slices = {slices}\ncurve = {curve}\n"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def editquality_spec(folder: Path, data: Path) -> str:
    """The example spec, LightGBM only (what it chooses), data paths made absolute."""
    text = EXAMPLE.read_text().replace("../../shared/data/editquality", str(data.resolve()))
    return text.replace(
        'metric = "average_precision"', 'candidates = ["lightgbm"]\nmetric = "average_precision"'
    )


def synthetic_spec(folder: Path, rows: int, seed: int = 0) -> str:
    """``rows`` training rows and rows/50 (at least 2,000) held-out ones of a learnable binary
    task (10 features: numeric, boolean and a categorical one, interactions and noise), as CSV."""
    rng = np.random.default_rng(seed)
    n = rows + max(2000, rows // 50)
    X = rng.normal(size=(n, 8))
    flag = rng.random(n) < 0.3
    group = rng.choice(["a", "b", "c", "d", "e"], n)
    logit = (
        -2.0 + 1.2 * X[:, 0] - 0.8 * X[:, 1] + 0.6 * X[:, 2] * X[:, 3] + 0.5 * np.sin(2 * X[:, 4])
        + 0.9 * flag + np.select([group == "a", group == "b"], [0.7, -0.5], 0.0) + 0.3 * np.abs(X[:, 5])
    )  # fmt: skip
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(8)]).round(5)
    frame["flag"] = flag
    frame["group"] = group
    frame["id"] = np.arange(n) + 10_000_000
    frame["label"] = rng.random(n) < 1 / (1 + np.exp(-logit))
    frame.iloc[:rows].to_csv(folder / "train.csv", index=False)
    frame.iloc[rows:].to_csv(folder / "test.csv", index=False)
    return (
        'name = "synthetic"\nseed = 0\n[data]\n'
        f'train = "{folder / "train.csv"}"\ntest = "{folder / "test.csv"}"\nid = "id"\nlabel = "label"\n'
        'positive = "True"\n[features]\nkinds = { group = "categorical", flag = "boolean" }\n'
        # Two folds: the cross-validation is not what is compared, and fewer folds make the peer
        # (which runs them too) cheaper, so the ratios err on the peer's side.
        '[training]\ncandidates = ["lightgbm"]\nfolds = 2\n'
    )


def timed_train(home: Path, spec_path: Path, *, sharded: bool) -> tuple[float, Any]:
    ws = Workspace.open(Settings.load(home=home, environ={}))
    try:
        spec = load_spec(spec_path)
        started = time.perf_counter()
        options = training_options(ws.engine, spec)
        assert (options["refit"] is not None) == sharded
        result = train(spec, ws.registry, **options)
        return time.perf_counter() - started, result.record
    finally:
        ws.close()


def timed_forget(home: Path, model: str, ids: list[str], *, verify: bool) -> dict[str, Any]:
    ws = Workspace.open(Settings.load(home=home, environ={}))
    try:
        f = forgetting.Forgetting(engine=ws.engine, registry=ws.registry, log=ws.log)
        started = time.perf_counter()
        request = forgetting.forget(f, [model], ids, actor="bench")
        seconds = time.perf_counter() - started
        [entry] = [v for v in request.versions if v.get("replacement") is not None]
        new = ws.registry.get(model, entry["replacement"])
        out = {
            "seconds": seconds,
            "refit_s": new.lineage["refit_s"],
            "retrained_shards": len(entry["retrained_shards"]),
            "roc_auc": new.summary["roc_auc"],
        }
        if verify:
            out["verification"] = forgetting.verify(f, request.id)
        return out
    finally:
        ws.close()


def run(label: str, spec_text: str, folder: Path, shards: str, slices: int, curve: bool) -> dict[str, Any]:
    plain, sharded = folder / "plain.toml", folder / "sharded.toml"
    plain.write_text(spec_text)
    count = "" if shards == "auto" else f"shards = {shards}\n"  # absent: the default, "auto"
    sharded.write_text(spec_text + SISA.format(shards=count, slices=slices, curve=str(curve).lower()))
    peers: list[tuple[float, Any]] = []

    def peer() -> None:  # each in a fresh home, between the forgets, so load drifts hit both
        say(f"[{label}] peer {len(peers) + 1}: assay train without shards")
        peers.append(timed_train(folder / f"home-plain-{len(peers)}", plain, sharded=False))

    peer()
    say(f"[{label}] assay train with [training.unlearning] shards={shards}, slices={slices}")
    sharded_s, record = timed_train(folder / "home-sharded", sharded, sharded=True)
    ws = Workspace.open(Settings.load(home=folder / "home-sharded", environ={}))
    card = ws.registry.card(record)
    ws.close()
    spec = load_spec(sharded)
    pool = read_labelled(spec, spec.data.train).ids.astype(str)
    rng = np.random.default_rng(1)
    picks = rng.choice(pool, size=101, replace=False).tolist()
    say(f"[{label}] forget 1 id (then verify it)")
    one = timed_forget(folder / "home-sharded", spec.name, picks[:1], verify=True)
    peer()
    say(f"[{label}] forget 100 ids")
    hundred = timed_forget(folder / "home-sharded", spec.name, picks[1:], verify=False)
    peer()
    # Each forget against the mean of the peers measured just before and just after it.
    before_after = [(peers[0][0] + peers[1][0]) / 2, (peers[1][0] + peers[2][0]) / 2]
    refit = float(np.median([p[1].lineage["refit_s"] for p in peers]))
    reference = peers[0][1]
    u = card["unlearning"]
    return {
        "data": label,
        "train_rows": record.lineage["train_rows"],
        "test_rows": record.lineage["test_rows"],
        "shards": record.lineage["unlearning"]["shards"],
        "shards_asked": shards,
        "slices": slices,
        "trees_per_shard": sum(record.lineage["unlearning"]["trees"]),
        "peer_train_s": [round(p[0], 2) for p in peers],
        "peer_refit_s": refit,
        "sharded_train_s": round(sharded_s, 2),
        "forget_1": one,
        "forget_100": hundred,
        "ratio_1_end_to_end": round(before_after[0] / one["seconds"], 2),
        "ratio_100_end_to_end": round(before_after[1] / hundred["seconds"], 2),
        "ratio_1_fit": round(refit / one["refit_s"], 2),
        "ratio_100_fit": round(refit / hundred["refit_s"], 2),
        # The peer is the unsharded model on the same rows with the same hyperparameters.
        "roc_auc": {"sharded": record.summary["roc_auc"], "unsharded": reference.summary["roc_auc"]},
        "roc_auc_cost": round(reference.summary["roc_auc"] - record.summary["roc_auc"], 5),
        "curve": u["curve"],
    }


def report(r: dict[str, Any]) -> str:
    one, hundred = r["forget_1"], r["forget_100"]
    p = r["peer_train_s"]
    lines = [
        f"## {r['data']}: {r['train_rows']:,} training rows, {r['test_rows']:,} held-out; "
        f"shards = {r['shards_asked']} gave {r['shards']} shard(s) x {r['slices']} slice(s) of "
        f"{r['trees_per_shard']} trees",
        "",
        "| | seconds | vs assay train without shards (end to end) | model fitting | vs one unsharded refit |",
        "|---|---|---|---|---|",
        f"| assay train, no shards (peer: 1st, 2nd, 3rd run) | {p[0]:.1f}, {p[1]:.1f}, {p[2]:.1f} | 1x "
        f"| {r['peer_refit_s']:.2f} | 1x |",
        f"| assay train, sharded | {r['sharded_train_s']:.1f} | | | |",
        f"| forget 1 id ({one['retrained_shards']} shard retrained; between peer runs 1 and 2) | "
        f"{one['seconds']:.1f} | **{r['ratio_1_end_to_end']}x** | {one['refit_s']:.2f} | **{r['ratio_1_fit']}x** |",
        f"| forget 100 ids ({hundred['retrained_shards']} shards retrained; between runs 2 and 3) | "
        f"{hundred['seconds']:.1f} | **{r['ratio_100_end_to_end']}x** | {hundred['refit_s']:.2f} | "
        f"**{r['ratio_100_fit']}x** |",
        "",
        f"Held-out ROC-AUC: sharded {r['roc_auc']['sharded']:.4f}, unsharded (the peer) "
        f"{r['roc_auc']['unsharded']:.4f} (cost **{r['roc_auc_cost']:.4f}**). "
        f"Verification of the 1-id forget: held-out predictions equal bit for bit: "
        f"**{one['verification']['equal']}** ({one['verification']['versions'][0]['rows']:,} rows).",
    ]
    if r["curve"]:
        lines += [
            "",
            "The card's curve (held-out; one slice per shard except at the version's own shard count):",
            "",
            "| shards | ROC-AUC | average precision | log loss |",
            "|---|---|---|---|",
            *(
                f"| {p['shards']} | {p['roc_auc']:.4f} | {p['average_precision']:.4f} | {p['log_loss']:.4f} |"
                for p in r["curve"]
            ),
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", choices=["editquality", "synthetic"])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "editquality")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--shards", default="auto", help='A number, or "auto" (the default: sized from the rows).'
    )
    parser.add_argument("--slices", type=int, default=1)
    parser.add_argument("--no-curve", action="store_true", help="Skip the card's curve against shard count.")
    parser.add_argument("--json", type=Path, help="Also write the raw numbers here.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-unlearning-") as tmp:
        folder = Path(tmp)
        if args.dataset == "editquality":
            spec_text, label = editquality_spec(folder, args.data), "editquality"
        else:
            spec_text, label = synthetic_spec(folder, args.rows), f"synthetic {args.rows:,}"
        result = run(label, spec_text, folder, args.shards, args.slices, not args.no_curve)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(report(result))


if __name__ == "__main__":
    main()
