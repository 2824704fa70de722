"""Serving speed on ORES's editquality data, for every model the spec can choose, in one run.

Trains, in one home, with ``assay train``: ``reverted`` from ``examples/editquality.toml`` as it is
(the model a user of the example gets), and ``reverted-<family>``: the same spec with
``training.candidates`` forced to one family (its gates left out: this measures speed), for each
family the example did not choose. Loads the held-out edits as the feature table, then, with every
server up side by side and measured in turns over ``--rounds`` rounds (``wrk`` on loopback, one
thread, 8 connections):

* single-item ``POST /v1/scores`` for every model: req/s, p50 and p99 of ``assay serve`` (1 worker)
  against ``bench/raw_server.py`` (Starlette + orjson over the raw LightGBM Booster of the
  LightGBM family's model), measured right after each;
* the same for ``assay serve --workers 2`` on the example's model: the scaling factor;
* 1,000-item requests: rows/s against the raw model's own batch predict (the family's estimator
  ``predict_proba`` on every core; ``Booster.predict`` for LightGBM);
* ``assay --help`` and ``assay show reverted``: wall and CPU time beside ``python -c pass``;
* ``assay score`` on 1M rows resampled from editquality (Parquet), with the prediction log (the
  default) and with ``--no-log``, against the raw batch predict of the same model;
* id-only requests answered from the score cache (in-process, and Redis when ``redis-server``
  is installed) vs cache misses (cache disabled);
* ``mlflow models serve`` for the LightGBM booster (installed into bench/out/mlflow-venv at bench
  time; ``--skip-mlflow`` leaves it out).

    python bench/bench_serving.py [--data ../shared/data/editquality] [--duration 10] [--rounds 3] [--skip-mlflow]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import harness
import lightgbm
import numpy as np
import orjson
import pandas as pd
from harness import (
    assay_server,
    best_rate,
    free_port,
    lua,
    raw_server,
    say,
    server,
    timed_command,
    write_json,
    wrk,
)
from serving_report import report

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "serving"
# The data's columns, as the example spec names them.
COLUMNS: list[str] = tomllib.loads((ROOT / "examples" / "editquality.toml").read_text())["data"]["columns"]
FEATURES = COLUMNS[1:-1]
MODEL = "reverted"
SPEC = """\
name = "reverted"
description = "editquality reverted, LightGBM only (serving benchmark)"
seed = 0
[data]
train = "{train}"
test = "{test}"
header = false
columns = {columns}
id = "rev_id"
label = "reverted"
positive = "True"
[features]
include = {features}
kinds = {{ user_is_anon = "boolean", user_is_bot_or_sysop = "boolean" }}
[training]
candidates = ["lightgbm"]
folds = 3
[operating_points]
likelybad = "maximum recall @ precision >= 0.6"
verylikelybad = "maximum recall @ precision >= 0.9"
"""
POST_LUA = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("{body}", "rb")
wrk.body = f:read("*a")
f:close()
"""
IDS_LUA = """\
local ids = {{}}
for line in io.lines("{ids}") do ids[#ids + 1] = line end
local i = 0
request = function()
  i = i % #ids + 1
  return wrk.format("GET", "/v1/scores/{model}/" .. ids[i])
end
"""


def train(data: Path) -> Path:
    home = OUT / "home"
    spec = OUT / "reverted.toml"
    quote = lambda items: "[" + ", ".join(f'"{c}"' for c in items) + "]"  # noqa: E731
    spec.write_text(
        SPEC.format(
            train=data / "enwiki.features_reverted.training.20k_2015.tsv.bz2",
            test=data / "enwiki.features_reverted.testing.20k_2015.tsv.bz2",
            columns=quote(COLUMNS),
            features=quote(FEATURES),
        )
    )
    say("training the LightGBM model with assay train")
    subprocess.run(["assay", "--home", str(home), "train", str(spec)], check=True, capture_output=True)
    test = data / "enwiki.features_reverted.testing.20k_2015.tsv.bz2"
    subprocess.run(
        ["assay", "--home", str(home), "features", "load", MODEL, str(test), "--no-header"],
        check=True,
        capture_output=True,
    )
    return home


def items_of(frame: pd.DataFrame) -> list[dict[str, Any]]:
    records = frame[FEATURES].to_dict("records")
    for record in records:
        for flag in ("user_is_anon", "user_is_bot_or_sysop"):
            record[flag] = bool(record[flag])
    return [{"id": str(i), "features": r} for i, r in zip(frame["rev_id"], records, strict=True)]


@contextmanager
def mlflow_server(model_dir: Path, body: dict[str, Any]) -> Iterator[tuple[str, Path] | None]:
    """``mlflow models serve`` for the same booster, in its own venv: (URL, wrk script), or None
    when mlflow cannot be set up."""
    venv = ROOT / "bench" / "out" / "mlflow-venv"
    python = venv / "bin" / "python"
    if not (venv / "bin" / "mlflow").exists():
        say("installing mlflow into bench/out/mlflow-venv (once)")
        try:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "mlflow", "lightgbm"], check=True)
        except subprocess.CalledProcessError as exc:
            say(f"mlflow could not be installed ({exc}); skipping it")
            yield None
            return
    saved = OUT / "mlflow-model"
    shutil.rmtree(saved, ignore_errors=True)
    subprocess.run(
        [
            str(python),
            "-c",
            "import sys, lightgbm, mlflow.lightgbm; "
            "mlflow.lightgbm.save_model(lightgbm.Booster(model_file=sys.argv[1]), sys.argv[2])",
            str(model_dir / "model.lgb.txt"),
            str(saved),
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    frame = {"dataframe_split": {"columns": FEATURES, "data": [[body["features"][c] for c in FEATURES]]}}
    script = lua("mlflow.lua", POST_LUA.format(body=write_json(OUT / "mlflow-body.json", frame)))
    command = [str(venv / "bin" / "mlflow"), "models", "serve", "-m", str(saved), "--env-manager", "local"]
    command += ["-h", "127.0.0.1", "-p", str(port)]
    # mlflow starts its server with the `uvicorn` on PATH: it must be the venv's.
    path = {"PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    with server(command, "/ping", port, "mlflow", path) as url:
        yield url + "/invocations", script


def precache(url: str, token: str, ids: list[str]) -> None:
    """Fill the server's cache with every id through POST /v1/precache, 1,000 at a time."""
    for start in range(0, len(ids), 1000):
        request = urllib.request.Request(
            url + "/v1/precache",
            data=orjson.dumps({"models": [MODEL], "ids": ids[start : start + 1000]}),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            counts = orjson.loads(response.read())
        assert not counts["failed"], counts


# The example spec's families, and the short name of the model that forces each.
FAMILIES = {
    "logistic_regression": "lr",
    "lightgbm": "lgbm",
    "hist_gradient_boosting": "hgb",
    "random_forest": "rf",
}


def forced_spec(data: Path, name: str, candidate: str | None) -> Path:
    """examples/editquality.toml reading ``data``; with ``candidate``, named ``name``, only that
    family, and no gates (a family that misses the example's bar is still measured)."""
    text = (
        (ROOT / "examples" / "editquality.toml")
        .read_text()
        .replace("../../shared/data/editquality", str(data))
    )
    if candidate is not None:
        text = text.replace('name = "reverted"', f'name = "{name}"', 1)
        text = text.replace("[training]\n", f'[training]\ncandidates = ["{candidate}"]\n', 1)
        text = re.sub(r"\[gates\]\n(.+\n)*", "", text)
    path = OUT / f"{name}.toml"
    path.write_text(text)
    return path


def card_of(home: Path, name: str) -> dict[str, Any]:
    shown = subprocess.run(
        ["assay", "--home", str(home), "show", name, "--json"], check=True, capture_output=True, text=True
    )
    return dict(orjson.loads(shown.stdout))


def train_models(data: Path) -> tuple[Path, dict[str, dict[str, Any]]]:
    """The home and, per model, its family, what serves it and its training time: the example's
    own model first, then one forced per family the example did not choose."""
    home = OUT / "home"
    models: dict[str, dict[str, Any]] = {}
    for candidate in [None, *FAMILIES]:
        if candidate is not None and candidate == models[MODEL]["family"]:
            continue
        name = MODEL if candidate is None else f"{MODEL}-{FAMILIES[candidate]}"
        say(f"training {name} with assay train ({candidate or 'the example spec as it is'})")
        started = time.perf_counter()
        subprocess.run(
            ["assay", "--home", str(home), "train", str(forced_spec(data, name, candidate))],
            check=True,
            capture_output=True,
        )
        card = card_of(home, name)
        inference = card["lineage"].get("inference") or {}
        models[name] = {
            "family": card["candidate"],
            "served_by": inference.get("runtime") or card["candidate"],
            "train_s": time.perf_counter() - started,
        }
    test = data / "enwiki.features_reverted.testing.20k_2015.tsv.bz2"
    subprocess.run(
        ["assay", "--home", str(home), "features", "load", MODEL, str(test), "--no-header"],
        check=True,
        capture_output=True,
    )
    return home, models


def version_dir(home: Path, name: str) -> Path:
    from assay.settings import Settings
    from assay.workspace import Workspace

    return Workspace.open(Settings.load(home=home, environ={})).registry.resolve(f"{name}@1").directory


def raw_predict(home: Path, name: str) -> Callable[[np.ndarray], Any]:
    """The trained model's own batch predict, on every core: the LightGBM Booster's, or the
    scikit-learn estimator's ``predict_proba`` (its skops file is this run's own)."""
    directory = version_dir(home, name)
    if (directory / "model.lgb.txt").is_file():
        booster = lightgbm.Booster(model_file=str(directory / "model.lgb.txt"))
        return lambda X: booster.predict(X)
    import skops.io

    path = directory / "model.skops"
    estimator = skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path))
    return estimator.predict_proba  # type: ignore[no-any-return]


def body_script(name: str, model: str, items: list[dict[str, Any]]) -> Path:
    body = write_json(OUT / f"{name}.json", {"models": [model], "items": items})
    return lua(f"{name}.lua", POST_LUA.format(body=body))


def measure_rounds(
    home: Path,
    models: dict[str, dict[str, Any]],
    items: list[dict[str, Any]],
    X: np.ndarray,
    args: argparse.Namespace,
) -> tuple[list[dict[str, Any]], str]:
    """Every server up, measured in turns, round after round; (rounds, the wrk mlflow note).

    On a shared machine the speed drifts by tens of percent over minutes, and a ratio of two runs
    made minutes apart would measure the drift: each ratio is taken within a round, and the raw
    app is measured right after each model it is compared with.
    """
    d, c = args.duration, args.connections
    single = {m: body_script(f"single-{m}", m, items[:1]) for m in models}
    batch = {m: body_script(f"batch-{m}", m, items[:1000]) for m in models}
    raw = {m: raw_predict(home, m) for m in models}
    lgbm_dir = version_dir(home, next(m for m, v in models.items() if v["family"] == "lightgbm"))
    booster = lightgbm.Booster(model_file=str(lgbm_dir / "model.lgb.txt"))
    X1000 = X[:1000]
    raw_port = free_port()
    raw_command = [sys.executable, str(ROOT / "bench" / "raw_server.py"), str(lgbm_dir), str(raw_port)]
    rounds = []
    with ExitStack() as stack:
        one = stack.enter_context(assay_server(home, "assay"))
        two = stack.enter_context(assay_server(home, "assay-2-workers", workers=2))
        raw_url = stack.enter_context(raw_server(raw_command, raw_port))
        mlflow = None if args.skip_mlflow else stack.enter_context(mlflow_server(lgbm_dir, items[0]))
        for url in (one, two, raw_url):
            for m in models:
                wrk(url + "/v1/scores", single[m], 2, c)  # warm-up (and every model loaded)
        for k in range(args.rounds):
            say(f"  round {k + 1} of {args.rounds}")
            measured: dict[str, Any] = {"raw_const": wrk(raw_url + "/const", single[MODEL], d, c)}
            for m in models:
                measured[f"assay {m}"] = wrk(one + "/v1/scores", single[m], d, c)
                measured[f"raw after {m}"] = wrk(raw_url + "/v1/scores", single[MODEL], d, c)
            measured["workers 2"] = wrk(two + "/v1/scores", single[MODEL], d, c)
            measured["workers 1"] = wrk(one + "/v1/scores", single[MODEL], d, c)
            if mlflow is not None:
                measured["mlflow"] = wrk(*mlflow, d, c)
            for m in models:
                measured[f"batch {m}"] = wrk(one + "/v1/scores", batch[m], d, c)
                measured[f"raw batch {m}"] = best_rate(lambda m=m: raw[m](X1000), 1000, 20)
            measured["booster batch"] = best_rate(lambda: booster.predict(X1000), 1000, 20)
            rounds.append(measured)
    return rounds, "" if mlflow is not None else "mlflow skipped"


def cache_runs(home: Path, items: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """id-only requests: cache hits (in-process, Redis) and misses."""
    d, c, results = args.duration, args.connections, {}
    ids = [item["id"] for item in items]
    (OUT / "ids.txt").write_text("\n".join(ids) + "\n")
    by_id = lua("ids.lua", IDS_LUA.format(ids=OUT / "ids.txt", model=MODEL))
    # A name of its own per run: a --reuse run's home already holds the last run's token.
    name = f"bench-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    token = subprocess.run(
        ["assay", "--home", str(home), "token", "create", name], check=True, capture_output=True, text=True
    ).stdout.strip()
    with assay_server(home, "assay-cache") as url:
        precache(url, token, ids)
        results["hit"] = wrk(url, by_id, d, c)
    with assay_server(home, "assay-nocache", ASSAY_CACHE_SIZE="0") as url:
        results["miss"] = wrk(url, by_id, d, c)
    if shutil.which("redis-server"):
        redis_port = free_port()
        redis = subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        try:
            redis_url = f"redis://127.0.0.1:{redis_port}/0"
            with assay_server(home, "assay-redis", ASSAY_REDIS_URL=redis_url) as url:
                precache(url, token, ids)
                results["redis_hit"] = wrk(url, by_id, d, c)
        finally:
            redis.terminate()
            redis.wait()
    return results


def startup_runs(home: Path, runs: int = 7) -> dict[str, list[tuple[float, float]]]:
    """(wall s, CPU s) of each run of the fast commands, interleaved with a bare Python start."""
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "assay --help": ["assay", "--help"],
        "assay show reverted": ["assay", "--home", str(home), "show", MODEL],
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            wall, cpu, _ = timed_command(command)
            times[name].append((wall, cpu))
    return times


def score_runs(home: Path, frame: pd.DataFrame, rounds: int) -> list[dict[str, float]]:
    """``assay score`` of a Parquet file, log on (the default) and off, with the raw batch
    predict of the same model measured between them, round after round."""
    source = OUT / "million.parquet"
    frame.drop(columns=["reverted"]).to_parquet(source, index=False)
    raw = raw_predict(home, MODEL)
    X = frame[FEATURES].astype("float64").to_numpy()
    measured = []
    for k in range(rounds):
        say(f"  assay score round {k + 1} of {rounds}")
        result: dict[str, float] = {"raw": best_rate(lambda: raw(X), len(X), 2)}
        for label, flags in (("log", []), ("no-log", ["--no-log"])):
            target = OUT / f"million.scores.{label}.parquet"
            command = ["assay", "--home", str(home), "score", MODEL, "--input", str(source)]
            wall, _cpu, stderr = timed_command([*command, "--output", str(target), *flags])
            reported = re.search(r"\(([\d,]+) rows/s\)", stderr)
            assert reported, stderr
            result[label] = float(reported[1].replace(",", ""))
            result[f"{label} wall"] = len(frame) / wall
        measured.append(result)
    return measured


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "editquality")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows for the assay score run")
    parser.add_argument("--rounds", type=int, default=3, help="turns of the side-by-side measurements")
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--reuse", action="store_true", help="keep the last run's trained home")
    args = parser.parse_args()
    test_file = args.data / "enwiki.features_reverted.testing.20k_2015.tsv.bz2"
    if not test_file.is_file():
        print(f"skipped: {args.data} has no editquality data")
        return 0
    if shutil.which("wrk") is None:
        print("skipped: wrk is not installed")
        return 0
    harness.OUT = OUT
    models_file = OUT / "models.json"
    if args.reuse and models_file.is_file():
        home, models = OUT / "home", orjson.loads(models_file.read_bytes())
    else:
        shutil.rmtree(OUT, ignore_errors=True)
        OUT.mkdir(parents=True)
        home, models = train_models(args.data)
        models_file.write_bytes(orjson.dumps(models))
    test = pd.read_csv(test_file, sep="\t", header=None, names=COLUMNS)
    items = items_of(test)
    results: dict[str, Any] = {"models": models}
    say(f"single items, 1,000-item requests and 2 workers: {args.rounds} rounds, the servers side by side")
    results["rounds"], results["mlflow"] = measure_rounds(
        home, models, items, test[FEATURES].astype("float64").to_numpy(), args
    )
    say("id-only requests: cache hits and misses")
    results.update(cache_runs(home, items, args))
    say("command start-up")
    results["startup"] = startup_runs(home)
    say(f"assay score on {args.rows:,} rows resampled from editquality")
    train_file = args.data / "enwiki.features_reverted.training.20k_2015.tsv.bz2"
    pool = pd.concat([pd.read_csv(train_file, sep="\t", header=None, names=COLUMNS), test], ignore_index=True)
    million = pool.sample(n=args.rows, replace=True, random_state=0).reset_index(drop=True)
    million["rev_id"] = np.arange(len(million))
    results["score"] = score_runs(home, million, max(1, args.rounds - 1))
    report(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
