"""The tables bench_serving.py prints (Markdown, pasted into bench/RESULTS.md as they come)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from harness import median

Round = dict[str, Any]


def _ratio(rounds: list[Round], top: Callable[[Round], float], bottom: Callable[[Round], float]) -> str:
    """The median of the per-round ratios, with each round's."""
    each = [top(m) / bottom(m) for m in rounds]
    return f"{median(each):.2f}x ({', '.join(f'{x:.2f}' for x in each)})"


def _typical(rounds: list[Round], name: str) -> dict[str, float]:
    """A peer's median req/s, p50 and p99 over the rounds."""
    return {key: median([m[name][key] for m in rounds]) for key in ("rps", "p50_ms", "p99_ms")}


def _errors(r: dict[str, Any]) -> dict[str, str]:
    found = {}
    runs = [(f"{name} in round {k + 1}", w) for k, m in enumerate(r["rounds"]) for name, w in m.items()]
    runs += [(name, r[name]) for name in ("hit", "miss", "redis_hit") if r.get(name)]
    for where, w in runs:
        if isinstance(w, dict) and (w["errors"] or w["socket_errors"]):
            found[where] = f"{w['errors']} non-2xx {w['socket_errors']}".strip()
    return found


def single_items(r: dict[str, Any], args: argparse.Namespace) -> None:
    rounds, models = r["rounds"], r["models"]
    print(
        "| single-item POST /v1/scores | family | served by | req/s | p50 ms | p99 ms | vs hand-written app |"
    )
    print("|---|---|---|---|---|---|---|")
    for m, info in models.items():
        w, raw = _typical(rounds, f"assay {m}"), _typical(rounds, f"raw after {m}")
        ratio = _ratio(
            rounds, lambda x, m=m: x[f"assay {m}"]["rps"], lambda x, m=m: x[f"raw after {m}"]["rps"]
        )
        print(
            f"| assay serve, {m} | {info['family']} | {info['served_by']} | {w['rps']:,.0f} | {w['p50_ms']:.2f} "
            f"| {w['p99_ms']:.2f} | {ratio} |"
        )
        print(
            f"| hand-written app, measured next | | | {raw['rps']:,.0f} | {raw['p50_ms']:.2f} | {raw['p99_ms']:.2f} | |"
        )
    const = _typical(rounds, "raw_const")
    print(
        f"| the same app returning a constant | | | {const['rps']:,.0f} | {const['p50_ms']:.2f} | {const['p99_ms']:.2f} | |"
    )
    if "mlflow" in rounds[0]:
        w = _typical(rounds, "mlflow")
        print(
            f"| mlflow models serve (LightGBM booster) | | | {w['rps']:,.0f} | {w['p50_ms']:.2f} | {w['p99_ms']:.2f} | |"
        )
    print()
    one, two = _typical(rounds, "workers 1"), _typical(rounds, "workers 2")
    scaling = _ratio(rounds, lambda x: x["workers 2"]["rps"], lambda x: x["workers 1"]["rps"])
    print(f"| assay serve --workers N, {next(iter(models))} | req/s | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    print(f"| 1 worker | {one['rps']:,.0f} | {one['p50_ms']:.2f} | {one['p99_ms']:.2f} |")
    print(f"| 2 workers | {two['rps']:,.0f} | {two['p50_ms']:.2f} | {two['p99_ms']:.2f} |")
    print(f"\n- 2 workers vs 1: {scaling} (goal >= 1.7x; wrk shares the same {os.cpu_count()} cores)")


def batches(r: dict[str, Any]) -> None:
    rounds, models = r["rounds"], r["models"]
    print(
        "\n| 1,000-item POST /v1/scores, rows/s | assay | raw model's batch predict | ratio | LightGBM Booster.predict |"
    )
    print("|---|---|---|---|---|")
    for m, info in models.items():
        assay = median([x[f"batch {m}"]["rps"] * 1000 for x in rounds])
        raw = median([x[f"raw batch {m}"] for x in rounds])
        ratio = _ratio(
            rounds, lambda x, m=m: x[f"batch {m}"]["rps"] * 1000, lambda x, m=m: x[f"raw batch {m}"]
        )
        booster = median([x["booster batch"] for x in rounds])
        print(
            f"| {m} ({info['family']}, {info['served_by']}) | {assay:,.0f} | {raw:,.0f} | {ratio} | {booster:,.0f} |"
        )


def score(r: dict[str, Any], args: argparse.Namespace) -> None:
    runs = r["score"]
    family = r["models"][next(iter(r["models"]))]["family"]
    print(
        f"\n| assay score, {args.rows:,} rows, Parquet, rows/s | assay | raw batch predict ({family}) | ratio |"
    )
    print("|---|---|---|---|")
    for label, what in (("log", "prediction log on (the default)"), ("no-log", "--no-log")):
        for key, how in (
            (label, "read + score + write, as the command reports it"),
            (f"{label} wall", "wall clock, start-up and log included"),
        ):
            value = median([x[key] for x in runs])
            ratio = _ratio(runs, lambda x, key=key: x[key], lambda x: x["raw"])
            print(f"| {what}: {how} | {value:,.0f} | {median([x['raw'] for x in runs]):,.0f} | {ratio} |")


def startup(r: dict[str, Any]) -> None:
    print("\n| command | wall s, median (min-max) | CPU s, median |")
    print("|---|---|---|")
    for name, runs in r["startup"].items():
        walls = [w for w, _ in runs]
        print(
            f"| `{name}` | {median(walls):.2f} ({min(walls):.2f}-{max(walls):.2f}) | {median([c for _, c in runs]):.2f} |"
        )


def cache(r: dict[str, Any]) -> None:
    print("\n| id-only GET /v1/scores/{model}/{id} | req/s | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    for key, label in (
        ("hit", "cache hit (in-process)"),
        ("redis_hit", "cache hit (Redis)"),
        ("miss", "cache miss (feature lookup in SQLite + predict)"),
    ):
        w = r.get(key)
        if w:
            print(f"| {label} | {w['rps']:,.0f} | {w['p50_ms']:.2f} | {w['p99_ms']:.2f} |")


def report(r: dict[str, Any], args: argparse.Namespace) -> None:
    load = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} CPUs shared with other work (load average {load[0]:.1f} at the end); "
        f"wrk -t1 -c{args.connections} -d{args.duration}s; {len(r['rounds'])} rounds, peers side by side and "
        f"measured in turns (medians over the rounds, per-round ratios in brackets); {r['mlflow'] or 'mlflow run'}\n"
    )
    print("| model | family | served by | assay train s |")
    print("|---|---|---|---|")
    for m, info in r["models"].items():
        print(f"| {m} | {info['family']} | {info['served_by']} | {info['train_s']:.0f} |")
    print()
    single_items(r, args)
    batches(r)
    score(r, args)
    startup(r)
    cache(r)
    errors = _errors(r)
    if errors:
        print("\nerrors: " + "; ".join(f"{k}: {v}" for k, v in errors.items()))
