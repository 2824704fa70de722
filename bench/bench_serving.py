"""Serving speed on ORES's editquality data: assay vs a hand-written Starlette app vs mlflow, one run.

Trains a LightGBM model of the editquality "reverted" data with ``assay train``,
loads the held-out edits as its feature table, then measures with ``wrk``
(loopback, 8 connections, one wrk thread so the single server worker keeps a
core of its own on small machines):

* single-item ``POST /v1/scores``: req/s and p99 of ``assay serve`` (1 worker),
  of ``bench/raw_server.py`` (Starlette + orjson calling the raw Booster), and of
  ``mlflow models serve`` for the same booster (installed into
  bench/out/mlflow-venv at bench time; ``--skip-mlflow`` leaves it out);
* 1,000-item requests: rows/s vs the raw model's own batch predict;
  (these two run as ``--rounds`` turns with every server up, and report medians
  and the per-round ratios, so that the machine's drift does not pose as a ratio);
* ``assay score`` on 1M rows (Parquet and CSV): rows/s vs the raw batch predict;
* id-only requests answered from the score cache (in-process, and Redis when
  ``redis-server`` is installed) vs cache misses (cache disabled).

    python bench/bench_serving.py [--data ../shared/data/editquality] [--duration 10] [--rounds 3] [--skip-mlflow]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import orjson
import pandas as pd

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


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"server not ready after {timeout}s:\n{log.read_text()}")


PIDS: dict[str, int] = {}  # base URL -> server process (one worker serves in that process)


@contextmanager
def server(
    command: list[str], ready_path: str, port: int, name: str, env: dict[str, str] | None = None
) -> Iterator[str]:
    """Run a server subprocess until the block ends; yields its base URL."""
    log = OUT / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    url = f"http://127.0.0.1:{port}"
    PIDS[url] = process.pid
    try:
        wait_ready(url + ready_path, process, log)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def assay_server(home: Path, name: str, **env: str) -> Any:
    port = free_port()
    command = ["assay", "--home", str(home), "serve", "--port", str(port), "--workers", "1"]
    return server(command, "/readyz", port, name, env)


def wrk(url: str, script: Path, duration: int, connections: int) -> dict[str, float]:
    """req/s, p50/p99 in ms and non-2xx count from one wrk run."""
    result = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    )
    text = result.stdout

    def latency(pct: str) -> float:
        match = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        assert match, text
        value, unit = float(match[1]), match[2]
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    socket_errors = re.search(r"Socket errors: (.*)", text)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text)[1]),  # type: ignore[index]
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "errors": int(errors[1]) if errors else 0,
        "socket_errors": socket_errors[1] if socket_errors else "",
    }


def lua(name: str, text: str) -> Path:
    path = OUT / name
    path.write_text(text)
    return path


def best_rate(fn: Any, rows: int, repeat: int) -> float:
    """Rows per second of the best of ``repeat`` calls (the machine is shared: the best is the least disturbed)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return rows / best


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
    script = lua("mlflow.lua", POST_LUA.format(body=_write(OUT / "mlflow-body.json", frame)))
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


def _write(path: Path, data: Any) -> Path:
    path.write_bytes(orjson.dumps(data))
    return path


def score_file(home: Path, frame: pd.DataFrame, suffix: str) -> tuple[float, float]:
    """(rows/s the command reports, wall-clock rows/s including Python start-up) of ``assay score``."""
    source = OUT / f"million.{suffix}"
    if suffix == "parquet":
        frame.to_parquet(source, index=False)
    else:
        frame.to_csv(source, index=False)
    target = OUT / f"million.scores.{suffix}"
    started = time.perf_counter()
    result = subprocess.run(
        ["assay", "--home", str(home), "score", MODEL, "--input", str(source), "--output", str(target)],
        check=True,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    reported = float(re.search(r"\(([\d,]+) rows/s\)", result.stderr)[1].replace(",", ""))  # type: ignore[index]
    return reported, len(frame) / wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "editquality")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows for the assay score run")
    parser.add_argument("--rounds", type=int, default=3, help="turns of the side-by-side measurements")
    parser.add_argument("--skip-mlflow", action="store_true")
    args = parser.parse_args()
    test_file = args.data / "enwiki.features_reverted.testing.20k_2015.tsv.bz2"
    if not test_file.is_file():
        print(f"skipped: {args.data} has no editquality data")
        return 0
    if shutil.which("wrk") is None:
        print("skipped: wrk is not installed")
        return 0
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    home = train(args.data)
    model_dir = home / "artifacts" / MODEL / "1"
    booster = lightgbm.Booster(model_file=str(model_dir / "model.lgb.txt"))
    test = pd.read_csv(test_file, sep="\t", header=None, names=COLUMNS)
    items = items_of(test)
    d, c = args.duration, args.connections
    single = lua(
        "single.lua",
        POST_LUA.format(body=_write(OUT / "single.json", {"models": [MODEL], "items": items[:1]})),
    )
    batch = lua(
        "batch.lua",
        POST_LUA.format(body=_write(OUT / "batch.json", {"models": [MODEL], "items": items[:1000]})),
    )
    (OUT / "ids.txt").write_text("\n".join(item["id"] for item in items) + "\n")
    by_id = lua("ids.lua", IDS_LUA.format(ids=OUT / "ids.txt", model=MODEL))
    ids = [item["id"] for item in items]
    token = subprocess.run(
        ["assay", "--home", str(home), "token", "create", "bench"], check=True, capture_output=True, text=True
    ).stdout.strip()
    results: dict[str, Any] = {}
    X = test[FEATURES].astype("float64").to_numpy()
    X1000 = X[:1000]

    # The peers run side by side and are measured in turns, round after round: on a shared
    # machine the speed drifts by tens of percent over minutes, and a ratio of two runs made
    # minutes apart would measure the drift. Each ratio is taken within a round.
    say(f"single items and 1,000-item requests: {args.rounds} rounds, the servers side by side")
    raw_port = free_port()
    raw_command = [sys.executable, str(ROOT / "bench" / "raw_server.py"), str(model_dir), str(raw_port)]
    with ExitStack() as stack:
        assay_url = stack.enter_context(assay_server(home, "assay"))
        raw_url = stack.enter_context(raw_server(raw_command, raw_port))
        mlflow = None if args.skip_mlflow else stack.enter_context(mlflow_server(model_dir, items[0]))
        peers = [(assay_url + "/v1/scores", single), (raw_url + "/v1/scores", single)]
        for url, script in peers + ([mlflow] if mlflow is not None else []):
            wrk(url, script, 2, c)  # warm-up
        rounds = []
        for k in range(args.rounds):
            say(f"  round {k + 1} of {args.rounds}")
            measured = {
                "assay": wrk(assay_url + "/v1/scores", single, d, c),
                "raw": wrk(raw_url + "/v1/scores", single, d, c),
                "raw_const": wrk(raw_url + "/const", single, d, c),
            }
            if mlflow is not None:
                measured["mlflow"] = wrk(*mlflow, d, c)
            measured["assay_batch"] = wrk(assay_url + "/v1/scores", batch, d, c)
            measured["raw_batch_1000"] = best_rate(lambda: booster.predict(X1000), 1000, 20)
            measured["raw_batch_1000_1t"] = best_rate(lambda: booster.predict(X1000, num_threads=1), 1000, 20)
            rounds.append(measured)
        results["rounds"] = rounds
        say("assay serve: cache hits")
        precache(assay_url, token, ids)
        results["hit"] = wrk(assay_url, by_id, d, c)
    say("assay serve without a cache: every id-only request is a miss")
    with assay_server(home, "assay-nocache", ASSAY_CACHE_SIZE="0") as url:
        results["miss"] = wrk(url, by_id, d, c)
    if shutil.which("redis-server"):
        say("assay serve with Redis: cache hits")
        redis_port = free_port()
        redis = subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        try:
            with assay_server(
                home, "assay-redis", ASSAY_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0"
            ) as url:
                precache(url, token, ids)
                results["redis_hit"] = wrk(url, by_id, d, c)
        finally:
            redis.terminate()
            redis.wait()

    say("raw batch predict and assay score")
    reps = -(-args.rows // len(test))
    million = pd.concat([test.drop(columns=["reverted"])] * reps, ignore_index=True).iloc[: args.rows]
    million["rev_id"] = np.arange(len(million))
    Xm = million[FEATURES].astype("float64").to_numpy()
    results["raw_batch_million"] = best_rate(lambda: booster.predict(Xm), len(Xm), 3)
    results["score_parquet"] = score_file(home, million, "parquet")
    results["score_csv"] = score_file(home, million, "csv")
    report(results, args)
    return 0


@contextmanager
def raw_server(command: list[str], port: int) -> Iterator[str]:
    # The raw app has no readiness route: wait until its port answers a request.
    log = OUT / "raw.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(urllib.request.Request(url + "/const", data=b"{}"), timeout=2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(log.read_text()) from None
                time.sleep(0.3)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def report(r: dict[str, Any], args: argparse.Namespace) -> None:
    rounds = r["rounds"]

    def typical(name: str) -> dict[str, float]:
        """A peer's median req/s, p50 and p99 over the rounds."""
        return {key: _median([m[name][key] for m in rounds]) for key in ("rps", "p50_ms", "p99_ms")}

    def ratio(top: Any, bottom: Any) -> str:
        """The median of the per-round ratios, with each round's."""
        each = [top(m) / bottom(m) for m in rounds]
        return f"{_median(each):.2f}x (rounds: {', '.join(f'{x:.2f}' for x in each)})"

    def line(label: str, w: dict[str, Any]) -> str:
        return f"| {label} | {w['rps']:,.0f} | {w['p50_ms']:.2f} | {w['p99_ms']:.2f} |"

    errors = {
        f"{name} in round {k + 1}": f"{w['errors']} non-2xx {w['socket_errors']}".strip()
        for k, m in enumerate(rounds)
        for name, w in m.items()
        if isinstance(w, dict) and (w["errors"] or w["socket_errors"])
    }
    for name in ("hit", "miss", "redis_hit"):
        if r.get(name) and (r[name]["errors"] or r[name]["socket_errors"]):
            errors[name] = f"{r[name]['errors']} non-2xx {r[name]['socket_errors']}".strip()
    print(
        f"machine: {os.cpu_count()} CPUs; wrk -t1 -c{args.connections} -d{args.duration}s; one server worker; "
        f"{len(rounds)} rounds, peers side by side and measured in turns (medians over the rounds)\n"
    )
    print("| single-item POST /v1/scores | req/s | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    print(line("assay serve", typical("assay")))
    print(line("hand-written Starlette + raw Booster", typical("raw")))
    print(line("same app returning a constant", typical("raw_const")))
    has_mlflow = all("mlflow" in m for m in rounds)
    if has_mlflow:
        print(line("mlflow models serve", typical("mlflow")))
    print()
    assay = lambda m: m["assay"]["rps"]  # noqa: E731
    print(
        f"- assay vs hand-written Starlette + Booster: {ratio(assay, lambda m: m['raw']['rps'])} (goal >= 0.6x)"
    )
    if has_mlflow:
        print(f"- assay vs mlflow models serve: {ratio(assay, lambda m: m['mlflow']['rps'])} (goal >= 25x)")
    print(
        f"- the hand-written app vs mlflow (what any server could reach here): "
        f"{ratio(lambda m: m['raw']['rps'], lambda m: m['mlflow']['rps'])}"
        if has_mlflow
        else "- mlflow skipped"
    )
    print(f"- assay p99 at {args.connections} connections: {typical('assay')['p99_ms']:.2f} ms (aim < 3 ms)")
    print()
    print("| rows/s | assay | raw Booster.predict (all threads) | ratio | raw, 1 thread |")
    print("|---|---|---|---|---|")
    batch_rows = _median([m["assay_batch"]["rps"] * 1000 for m in rounds])
    print(
        f"| 1,000-item POST /v1/scores | {batch_rows:,.0f} | {_median([m['raw_batch_1000'] for m in rounds]):,.0f} | "
        f"{ratio(lambda m: m['assay_batch']['rps'] * 1000, lambda m: m['raw_batch_1000'])} | "
        f"{_median([m['raw_batch_1000_1t'] for m in rounds]):,.0f} |"
    )
    for fmt in ("parquet", "csv"):
        reported, wall = r[f"score_{fmt}"]
        print(
            f"| assay score, {args.rows:,} rows, {fmt} (read + score + write) | {reported:,.0f} "
            f"| {r['raw_batch_million']:,.0f} | {reported / r['raw_batch_million']:.2f}x | |"
        )
        print(
            f"|   the same, wall clock with Python start-up | {wall:,.0f} | | {wall / r['raw_batch_million']:.2f}x | |"
        )
    print()
    print("| id-only GET /v1/scores/{model}/{id} | req/s | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    print(line("cache hit (in-process)", r["hit"]))
    if r.get("redis_hit"):
        print(line("cache hit (Redis)", r["redis_hit"]))
    print(line("cache miss (feature lookup in SQLite + predict)", r["miss"]))
    if errors:
        print("\nerrors: " + "; ".join(f"{k}: {v}" for k, v in errors.items()))


if __name__ == "__main__":
    sys.exit(main())
