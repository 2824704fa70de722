"""Monitoring on ORES's editquality data: drift over a million logged rows vs Evidently, and what
logging every score costs the server.

Trains the LightGBM "reverted" model with ``assay train`` (its reference profile is written then),
logs 1,000,000 scored rows drawn from the held-out edits over 30 days, with drift that grows day by
day in three features, and measures:

* drift of the whole million against the stored reference, as ``monitor.analyse`` computes it for
  one window (reading the rows from the store included), and with 30 daily windows;
* Evidently's ``DataDriftPreset`` on the same rows against the same training rows (its report run
  alone, not reading its input), and every per-feature decision of both, for the million and for
  each daily window. Evidently 0.7 does not import with the pandas assay pins (3.x), so it runs in
  its own virtual environment (``--evidently-python``; see bench/evidently_drift.py);
* single-item ``POST /v1/scores`` req/s of ``assay serve`` with the prediction log on (every score
  logged) and off (``ASSAY_LOG_SAMPLE=0``), side by side in rounds, with ``wrk``; besides req/s
  (which other load on a shared machine swings by tens of percent from run to run), each
  server's CPU time per request, read from /proc around each run (a second and a half after it,
  so the log writer's flush counts): the cost logging adds, which that load barely moves.

* with ``--in-process``: the same single-item request through the scorer in this process (no
  HTTP), prediction log off, on in the store and on in Parquet files, in interleaved rounds: the
  process's CPU time per request, the log writer's thread included (flushed at the end of each
  run). Without the server's HTTP work the request is cheaper, so the share logging takes here
  is an upper bound of its share in the server; CPU time, unlike req/s, barely moves with other
  load on the machine.

    python bench/bench_monitoring.py [--data ../shared/data/editquality] [--rows 1000000]
        [--evidently-python /tmp/evidently-venv/bin/python] [--duration 10] [--rounds 3]
    python bench/bench_monitoring.py --in-process [--rounds 7] [--requests 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_serving as serving
import harness

from assay.modelling.datasets import read_table
from assay.monitoring import monitor
from assay.monitoring.drift import window_drift
from assay.monitoring.frames import frame_of
from assay.monitoring.log import PredictionLog
from assay.serving.cache import MemoryCache
from assay.serving.features import FeatureTable
from assay.serving.scoring import Scorer
from assay.settings import Settings
from assay.store.log_files import ParquetLog
from assay.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "monitoring"
DAYS = 30
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def logged_traffic(test: pd.DataFrame, rows: int, seed: int = 0) -> pd.DataFrame:
    """``rows`` held-out edits drawn with replacement over 30 days; from day 10 three features drift,
    more each day: words added grow, more edits are anonymous, bad-word deltas shift."""
    g = np.random.default_rng(seed)
    frame = test.iloc[g.integers(0, len(test), rows)].reset_index(drop=True)
    frame["rev_id"] = np.arange(rows)
    day = np.floor(np.arange(rows) * DAYS / rows)
    ramp = np.clip(day - 9, 0, None) / (DAYS - 10)  # 0 until day 9, then up to 1 on the last day
    words = pd.to_numeric(frame["words_added"])
    frame["words_added"] = np.round(words * (1 + 1.0 * ramp))
    anon = frame["user_is_anon"].astype(str).str.lower() == "true"
    frame["user_is_anon"] = np.where(g.random(rows) < 0.35 * ramp, True, anon)
    bad = pd.to_numeric(frame["badwords_prop_delta_sum"])
    frame["badwords_prop_delta_sum"] = bad + 0.1 * ramp * g.random(rows)
    frame["at"] = T0 + np.sort(g.random(rows)) * DAYS * 86400.0
    return frame


def evidently(
    python: str, reference: pd.DataFrame, current: pd.DataFrame, kinds: dict[str, str]
) -> dict[str, Any]:
    reference.to_parquet(OUT / "reference.parquet")
    current.to_parquet(OUT / "current.parquet")
    numeric = ",".join(c for c, k in kinds.items() if k == "numeric")
    categorical = ",".join(c for c, k in kinds.items() if k != "numeric")
    started = time.perf_counter()
    done = subprocess.run(
        [python, str(ROOT / "bench" / "evidently_drift.py"), str(OUT / "reference.parquet"),
         str(OUT / "current.parquet"), numeric, categorical],
        capture_output=True, text=True, check=True, env={**os.environ, "DO_NOT_TRACK": "1"},
    )  # fmt: skip
    out = json.loads(done.stdout)
    out["wall"] = time.perf_counter() - started
    return out


def compare(assay_drift: Any, ev: dict[str, Any]) -> tuple[int, list[str]]:
    """Agreeing decisions and a line per disagreement."""
    agree, lines = 0, []
    for c in assay_drift.features:
        e = ev["columns"][c.column]
        same = c.test == e["test"] and c.drift == e["drift"]
        agree += same
        if not same:
            lines.append(
                f"{c.column}: assay {c.test} {c.statistic:.6g} -> {c.drift}, Evidently {e['test']} {e['statistic']:.6g} -> {e['drift']}"
            )
    return agree, lines


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used (every thread: the server's and the log writer's)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url + "/metrics") as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "editquality")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--evidently-python", default=os.environ.get("EVIDENTLY_PYTHON", "/tmp/evidently-venv/bin/python")
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-serving", action="store_true")
    parser.add_argument("--in-process", action="store_true", help="the scorer's CPU per request, log on/off")
    parser.add_argument("--requests", type=int, default=20_000, help="requests per --in-process run")
    parser.add_argument(
        "--serving-only", action="store_true", help="reuse the last run's trained home; serving only"
    )
    args = parser.parse_args()
    test_file = args.data / "enwiki.features_reverted.testing.20k_2015.tsv.bz2"
    if not test_file.is_file():
        print(f"skipped: {args.data} has no editquality data")
        return 0
    serving.OUT = harness.OUT = OUT  # the serving helpers write their specs and logs here
    results: dict[str, Any] = {"rows": args.rows}
    if args.in_process:
        home = OUT / "home"
        if not (home / "assay.db").is_file():
            OUT.mkdir(parents=True, exist_ok=True)
            home = serving.train(args.data)
        report_in_process(in_process(home, test_file, args), args)
        return 0
    if args.serving_only:
        home = OUT / "home"
        if not (home / "assay.db").is_file():
            OUT.mkdir(parents=True, exist_ok=True)
            home = serving.train(args.data)
        serve(home, test_file, args, results)
        report(results, args)
        return 0
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    home = serving.train(args.data)

    ws = Workspace.open(Settings.load(home=home, environ={}))
    try:
        scorer = Scorer(ws.registry, FeatureTable(ws.engine), MemoryCache(1))
        served = scorer.model(serving.MODEL)
        loaded = served.loaded
        test = read_table(test_file, header=False, columns=serving.COLUMNS)
        say(f"scoring and logging {args.rows:,} rows over {DAYS} days")
        traffic = logged_traffic(test, args.rows)
        X = loaded.schema.encode_frame(traffic, source="traffic")
        scored = scorer.score_frame(serving.MODEL, traffic, id_column="rev_id")
        proba = scored[[f"probability_{c}" for c in loaded.classes]].to_numpy(dtype=float)
        started = time.perf_counter()
        ws.log.write(
            served.name,
            served.version,
            traffic["at"].to_numpy(),
            traffic["rev_id"].astype(str).tolist(),
            X,
            proba,
        )
        results["write_s"] = time.perf_counter() - started

        target = monitor.target(ws.registry, serving.MODEL)

        def assay_drift() -> tuple[Any, dict[str, float]]:
            t0 = time.perf_counter()
            frame = frame_of(loaded, ws.log)
            t1 = time.perf_counter()
            drift = window_drift(target.profile, frame.X, target.outputs(frame.proba), drift_share=0.5)
            t2 = time.perf_counter()
            return (frame, drift), {"read": t1 - t0, "drift": t2 - t1, "total": t2 - t0}

        (frame, whole), _ = assay_drift()  # warm: the first read also pages the store in
        assert len(frame) == args.rows
        t0 = time.perf_counter()
        daily = monitor.analyse(
            ws.engine, ws.log, ws.registry, serving.MODEL, since=T0, until=T0 + DAYS * 86400.0, window="1d"
        )
        results["analyse_daily_s"] = time.perf_counter() - t0

        kinds = {f.name: f.kind for f in loaded.schema.features}
        train_file = args.data / "enwiki.features_reverted.training.20k_2015.tsv.bz2"
        training = read_table(train_file, header=False, columns=serving.COLUMNS)
        reference = pd.DataFrame(
            loaded.schema.encode_frame(training, source="training"), columns=loaded.schema.names
        )
        current = pd.DataFrame(frame.X, columns=loaded.schema.names)
        drift_rounds = []
        have_evidently = Path(args.evidently_python).is_file()
        # Measured in turns, round after round: the machine is shared and its speed drifts, so each
        # ratio is taken within a round.
        for k in range(args.rounds):
            say(f"drift of the whole log as one window: round {k + 1} of {args.rounds}")
            _, timing = assay_drift()
            ev = evidently(args.evidently_python, reference, current, kinds) if have_evidently else None
            drift_rounds.append({"assay": timing, "evidently": ev})
        results["drift_rounds"] = drift_rounds
        if have_evidently:
            ev = drift_rounds[-1]["evidently"]
            results["evidently"] = ev
            results["agreement"] = compare(whole, ev)
            say("Evidently: each daily window")
            agree, total, drifted, lines = 0, 0, 0, []
            for w in daily.windows:
                part = current.iloc[w.window.lo : w.window.hi]
                ev_day = evidently(args.evidently_python, reference, part, kinds)
                a, day_lines = compare(w.drift, ev_day)
                agree += a
                total += len(w.drift.features)
                drifted += sum(bool(c["drift"]) for c in ev_day["columns"].values())
                lines += [
                    f"{time.strftime('%Y-%m-%d', time.gmtime(w.window.start))} {line}" for line in day_lines
                ]
            results["daily_agreement"] = (agree, total, drifted, lines)
        else:
            results["evidently"] = None
        results["whole"] = whole
        results["daily"] = daily
    finally:
        ws.close()

    if not args.skip_serving:
        serve(home, test_file, args, results)
    report(results, args)
    return 0


def serve(home: Path, test_file: Path, args: argparse.Namespace, results: dict[str, Any]) -> None:
    if shutil.which("wrk"):
        say(f"single-item scoring, prediction log on vs off: {args.rounds} rounds side by side")
        # Numbers as JSON numbers (read_table keeps every value a string, as training reads files).
        items = serving.items_of(pd.read_csv(test_file, sep="\t", header=None, names=serving.COLUMNS))
        single = harness.lua(
            "single.lua",
            serving.POST_LUA.format(
                body=harness.write_json(OUT / "single.json", {"models": [serving.MODEL], "items": items[:1]})
            ),
        )
        rounds = []
        with (
            harness.assay_server(home, "log-on") as on,
            harness.assay_server(home, "log-off", ASSAY_LOG_SAMPLE="0") as off,
        ):
            for url in (on, off):
                request = urllib.request.Request(
                    url + "/v1/scores",
                    data=(OUT / "single.json").read_bytes(),
                    headers={"content-type": "application/json"},
                )
                with urllib.request.urlopen(request) as answer:
                    assert b'"error"' not in answer.read(), "the benchmark's item is refused"
                harness.wrk(url + "/v1/scores", single, 2, args.connections)
            for k in range(args.rounds):
                say(f"  round {k + 1} of {args.rounds}")
                measured = {}
                # Which server goes first alternates: a round's second run meets a warmer machine.
                for name in ("on", "off") if k % 2 == 0 else ("off", "on"):
                    url = on if name == "on" else off
                    before = cpu_seconds(harness.PIDS[url])
                    measured[name] = harness.wrk(url + "/v1/scores", single, args.duration, args.connections)
                    time.sleep(1.5)  # the log's writer flushes every second: its work counts for the run
                    spent = cpu_seconds(harness.PIDS[url]) - before
                    measured[name]["cpu_us"] = spent / (measured[name]["rps"] * args.duration) * 1e6
                rounds.append(measured)
            time.sleep(1.0)
            results["logged"] = metric(on, "assay_prediction_log_written_total")
            results["dropped"] = metric(on, "assay_prediction_log_dropped_total")
        results["rounds"] = rounds


def in_process(home: Path, test_file: Path, args: argparse.Namespace) -> dict[str, list[float]]:
    """CPU seconds per single-item request through the scorer: log off, on (store), on (Parquet)."""
    item = serving.items_of(pd.read_csv(test_file, sep="\t", header=None, names=serving.COLUMNS))[0]
    requests = [[{**item, "id": f"r{k}"}] for k in range(args.requests)]
    work = Path(tempfile.mkdtemp(prefix="assay-logcost-"))
    shutil.copytree(home, work / "home")
    ws = Workspace.open(Settings.load(home=work / "home", environ={}))
    files = ParquetLog(work / "home" / "log")
    sinks: dict[str, Callable[[], PredictionLog | None]] = {
        "off": lambda: None,
        "store": lambda: PredictionLog(ws.log, queue_rows=2 * args.requests),
        "parquet": lambda: PredictionLog(files, queue_rows=2 * args.requests),
    }
    out: dict[str, list[float]] = {name: [] for name in sinks}
    try:
        for k in range(args.rounds + 1):  # the first round warms up and is left out
            order = list(sinks) if k % 2 == 0 else list(reversed(sinks))
            for name in order:
                sink = sinks[name]()
                scorer = Scorer(ws.registry, FeatureTable(ws.engine), MemoryCache(0), prediction_log=sink)
                scorer.score([serving.MODEL], requests[0])
                started = time.process_time()
                for body in requests:
                    scorer.score([serving.MODEL], body)
                if sink is not None:
                    assert sink.flush(600) and not sink.dropped
                spent = time.process_time() - started
                if sink is not None:
                    sink.close()
                scorer.close()
                if k:
                    out[name].append(spent / args.requests * 1e6)
            say(f"  round {k}: " + ", ".join(f"{n} {v[-1]:.1f} us" for n, v in out.items() if v and k))
    finally:
        ws.close()
        shutil.rmtree(work, ignore_errors=True)
    return out


def report_in_process(r: dict[str, list[float]], args: argparse.Namespace) -> None:
    print(f"machine: {os.cpu_count()} cores; single-item requests through the scorer, no HTTP")
    print(
        f"CPU per request (process time, the log writer's thread included), {args.requests:,} requests x {args.rounds} rounds:"
    )
    for name, values in r.items():
        print(
            f"  log {name:<8} median {statistics.median(values):7.1f} us   rounds {', '.join(f'{v:.1f}' for v in values)}"
        )
    for name in ("store", "parquet"):
        ratios = [off / on for off, on in zip(r["off"], r[name], strict=True)]
        print(
            f"  off/{name} per round (the req/s ratio of a CPU-bound server, at most): "
            f"{', '.join(f'{x:.3f}' for x in ratios)}; median {statistics.median(ratios):.3f}"
        )


def report(r: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"machine: {os.cpu_count()} cores; data: {args.data}")
    if "drift_rounds" not in r:
        report_serving(r, args)
        return
    print(f"\nlogged: {r['rows']:,} rows over {DAYS} days into the SQLite store in {r['write_s']:.1f}s")
    print(
        f"\ndrift of all {r['rows']:,} rows as one window against the stored reference profile ({args.rounds} rounds):"
    )
    for k, x in enumerate(r["drift_rounds"], start=1):
        a, e = x["assay"], x["evidently"]
        line = f"  round {k}: assay {a['total']:.2f}s (reading the log {a['read']:.2f}s, statistics {a['drift']:.2f}s)"
        if e:
            line += f"; Evidently {e['seconds']:.2f}s ({e['wall']:.1f}s with start-up and input); ratio {e['seconds'] / a['total']:.1f}x"
        print(line)
    totals = [x["assay"]["total"] for x in r["drift_rounds"]]
    print(f"  assay median {statistics.median(totals):.2f}s")
    ev = r.get("evidently")
    if ev:
        ratios = [x["evidently"]["seconds"] / x["assay"]["total"] for x in r["drift_rounds"]]
        print(
            f"  Evidently median {statistics.median(x['evidently']['seconds'] for x in r['drift_rounds']):.2f}s "
            f"(its DataDriftPreset run alone); ratio Evidently/assay median {statistics.median(ratios):.1f}x"
        )
    print(
        f"\nper-feature decisions, the million rows (data set drift: {r['whole'].dataset_drift}, share {r['whole'].share:.3f}):"
    )
    print(
        f"  {'feature':<34}{'test':<14}{'assay':>12}{'drift':>7}"
        + (f"{'Evidently':>12}{'drift':>7}" if ev else "")
    )
    for c in r["whole"].features:
        e = ev["columns"][c.column] if ev else None
        line = f"  {c.column:<34}{c.test:<14}{c.statistic:>12.5g}{c.drift!s:>7}"
        if e:
            line += f"{e['statistic']:>12.5g}{e['drift']!s:>7}"
        print(line)
    if ev:
        agree, lines = r["agreement"]
        print(
            f"  same decision on {agree} of {len(r['whole'].features)} features"
            + ("".join("\n  " + x for x in lines))
        )
        agree, total, drifted, lines = r["daily_agreement"]
        print(
            f"\ndaily windows ({len(r['daily'].windows)}, about {r['rows'] // DAYS:,} rows each): same decision on "
            f"{agree} of {total} (feature, window) pairs, {drifted} of them drift by Evidently"
        )
        for line in lines:
            print(f"  differs: {line}")
    flagged = [
        (time.strftime("%m-%d", time.gmtime(w.window.start)), w.drift.drifted_features)
        for w in r["daily"].windows
    ]
    first = next((d for d, f in flagged if f), None)
    print(
        f"  first daily window with a drifted feature: {first}; monitor.analyse over 30 daily windows: {r['analyse_daily_s']:.2f}s"
    )
    report_serving(r, args)


def report_serving(r: dict[str, Any], args: argparse.Namespace) -> None:
    if r.get("rounds"):
        on = [x["on"]["rps"] for x in r["rounds"]]
        off = [x["off"]["rps"] for x in r["rounds"]]
        ratios = [x["on"]["rps"] / x["off"]["rps"] for x in r["rounds"]]
        print(
            f"\nsingle-item POST /v1/scores, 1 worker, wrk -t1 -c{args.connections}, {args.duration}s x {args.rounds} rounds:"
        )
        print(
            f"  log on   {statistics.median(on):>8.0f} req/s  p99 {statistics.median(x['on']['p99_ms'] for x in r['rounds']):.2f} ms"
        )
        print(
            f"  log off  {statistics.median(off):>8.0f} req/s  p99 {statistics.median(x['off']['p99_ms'] for x in r['rounds']):.2f} ms"
        )
        print(
            f"  on/off per round: {', '.join(f'{x:.3f}' for x in ratios)}; median {statistics.median(ratios):.3f}"
        )
        print(f"  rows logged by the 'on' server: {r['logged']:.0f}, dropped: {r['dropped']:.0f}")
        # CPU per request: what a saturated server pays, which other load on the machine barely moves.
        cpu_on = [x["on"]["cpu_us"] for x in r["rounds"]]
        cpu_off = [x["off"]["cpu_us"] for x in r["rounds"]]
        cpu_ratios = [x["off"]["cpu_us"] / x["on"]["cpu_us"] for x in r["rounds"]]
        print(
            f"  server CPU per request (all its threads, the log writer's included): on "
            f"{statistics.median(cpu_on):.1f} us, off {statistics.median(cpu_off):.1f} us (medians)"
        )
        print(
            f"  off/on CPU per request per round (the req/s ratio a CPU-bound server sees): "
            f"{', '.join(f'{x:.3f}' for x in cpu_ratios)}; median {statistics.median(cpu_ratios):.3f}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
