"""Scale-out, measured on this machine: Ray vs the local engine, and two servers sharing services.

* ``train``: ``assay train`` of the example editquality spec (the candidates and settings it
  ships with) with the local engine and with a local Ray (started before the clock runs),
  alternating, ``--rounds`` times each: the Ray engine's overhead, and that both give the
  same model.
* ``score``: the scoring job of ``assay score --engine ray`` on a hive-partitioned folder of
  Parquet files (``--rows`` rows of editquality's held-out edits drawn with replacement, written
  under ``--folder``, by default in /tmp) with 1 and 2 workers, alternating, on one Ray started
  beforehand (its start timed apart), and the local engine as the peer: the speed-up.
* ``hosts``: two ``assay serve`` processes (one worker each) on one PostgreSQL database, one
  Redis and one S3-compatible bucket (``moto_server``): how long after a promotion commits
  each server answers with the new version; whether a ``PUT /v1/features`` on one server has
  reached the other before the call returns; and 60 s of single-item requests at 80 % of the
  two servers' measured capacity through a promotion, counting failed requests.

    python bench/bench_scaling.py train|score|hosts [--data ../shared/data/editquality] [--rounds N]

``hosts`` needs ``ASSAY_TEST_POSTGRES_URL`` (a role that may create databases) and
``ASSAY_TEST_REDIS_URL``, as the tests do, and ``moto_server`` on the PATH.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "scaling"
SPEC = ROOT / "examples" / "editquality.toml"
# The console script: with PYTHONPATH pointing at a checkout, it runs that checkout's code.
ASSAY = shutil.which("assay") or "assay"


def assay(home: Path, *args: str, env: dict[str, str] | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [ASSAY, "--home", str(home), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"assay {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return time.perf_counter() - started, done.stdout + done.stderr


def spec_for(data: Path, folder: Path) -> Path:
    text = SPEC.read_text().replace("../../shared/data/editquality", str(data))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "editquality.toml").write_text(text)
    return folder / "editquality.toml"


# --- train ---------------------------------------------------------------------------------


def bench_train(data: Path, rounds: int, candidates: list[str]) -> None:

    from assay.engines.engine import LocalEngine, open_engine
    from assay.modelling.spec_file import load_spec
    from assay.modelling.training import train
    from assay.settings import Settings
    from assay.workspace import Workspace

    spec = load_spec(spec_for(data, OUT / "train"))
    if candidates:  # a shorter run: only these of the spec's candidates
        spec.training.candidates = candidates
    started = time.perf_counter()
    engines = {"local": LocalEngine(), "ray": open_engine("ray")}
    cpus = engines["ray"].ray.cluster_resources().get("CPU")  # type: ignore[attr-defined]  # starts Ray
    print(f"ray started in {time.perf_counter() - started:.1f}s ({cpus} CPUs)")
    times: dict[str, list[float]] = {"local": [], "ray": []}
    models: dict[str, set[str]] = {"local": set(), "ray": set()}
    for r in range(rounds):
        for name, engine in engines.items():
            home = OUT / "train" / f"{name}-{r}"
            shutil.rmtree(home, ignore_errors=True)
            ws = Workspace.open(Settings.load(home=home, environ={}))
            try:
                t = time.perf_counter()
                result = train(spec, ws.registry, engine=engine)  # type: ignore[arg-type]
                times[name].append(time.perf_counter() - t)
                model = next(f for f in result.record.manifest if f.startswith("model."))
                models[name].add(result.record.manifest[model])
                print(
                    f"round {r + 1} {name}: {times[name][-1]:.1f}s, {result.winner.candidate}"
                    f" (load average {os.getloadavg()[0]:.1f})"
                )
            finally:
                ws.close()
    local, on_ray = statistics.median(times["local"]), statistics.median(times["ray"])
    print(f"assay train (example spec), median of {rounds}: local {local:.1f}s, ray {on_ray:.1f}s")
    print(f"ray overhead: {100 * (on_ray / local - 1):+.1f}% (goal <= +20%)")
    print(
        f"same model file from both engines: {models['local'] == models['ray'] and len(models['local']) == 1}"
    )


# --- score ---------------------------------------------------------------------------------


def score_input(data: Path, rows: int, folder: Path) -> Path:
    """``rows`` rows of editquality's held-out edits drawn with replacement, new ids, in a
    hive-partitioned folder (``day=NN/part.parquet``, 500,000 rows a file)."""
    source = folder / f"in-{rows}"
    if source.exists():
        return source
    from assay.modelling.datasets import read_table

    columns = __import__("tomllib").loads(SPEC.read_text())["data"]["columns"]  # the spec's own names
    held_out = read_table(
        str(data / "enwiki.features_reverted.testing.20k_2015.tsv.bz2"), header=False, columns=columns
    )
    per_file, written = 500_000, 0
    while written < rows:
        n = min(per_file, rows - written)
        frame = held_out.sample(n=n, replace=True, random_state=written).drop(columns=["reverted"])
        frame["rev_id"] = range(written, written + n)
        part = source / f"day={written // per_file:02d}"
        part.mkdir(parents=True)
        frame.to_parquet(part / "part.parquet", index=False)
        written += n
    return source


def bench_score(data: Path, rows: int, rounds: int, home: Path | None, folder: Path, model: str) -> None:
    """The scoring job of ``assay score --engine ray --no-log`` (``score_parquet``, as the command
    calls it) with 1 and 2 workers on one Ray started beforehand, alternating, and the local
    engine as the peer; Ray's start is timed apart (each command pays it once)."""
    from assay.engines.engine import LocalEngine, open_engine
    from assay.serving.batch import score_parquet
    from assay.serving.cache import MemoryCache
    from assay.serving.features import FeatureTable
    from assay.serving.scoring import Scorer
    from assay.settings import Settings
    from assay.workspace import Workspace

    if home is None:
        home = OUT / "score" / "home"
        if not (home / "assay.db").exists():
            assay(home, "train", str(spec_for(data, OUT / "score")))
    source = score_input(data, rows, folder)
    settings = Settings.load(home=home, environ={})
    ray_engine = open_engine("ray")
    started = time.perf_counter()
    cpus = ray_engine.ray.cluster_resources().get("CPU")  # type: ignore[attr-defined]  # starts Ray
    ray_start = time.perf_counter() - started
    print(f"ray started in {ray_start:.1f}s ({cpus} CPUs)")
    runs = {"ray, 1 worker": (ray_engine, 1), "ray, 2 workers": (ray_engine, 2), "local": (LocalEngine(), 1)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    ws = Workspace.open(settings)
    scorer = Scorer(ws.registry, FeatureTable(ws.engine), MemoryCache(0))
    try:
        for r in range(rounds):
            for name, (engine, workers) in runs.items():
                dest = folder / "out"
                shutil.rmtree(dest, ignore_errors=True)
                t = time.perf_counter()
                used, n = score_parquet(
                    settings,
                    scorer,
                    model,
                    source,
                    dest,
                    id_column="rev_id",
                    engine=engine,
                    workers=workers,
                )
                times[name].append(time.perf_counter() - t)
                print(
                    f"round {r + 1} {name}: {times[name][-1]:.1f}s, {n:,} rows with {used}, "
                    f"{n / times[name][-1]:,.0f} rows/s (load average {os.getloadavg()[0]:.1f})"
                )
    finally:
        scorer.close()
        ws.close()
    median = {name: statistics.median(t) for name, t in times.items()}
    print(
        f"scoring {rows:,} rows, median of {rounds}: " + ", ".join(f"{k} {v:.1f}s" for k, v in median.items())
    )
    print(
        f"speed-up with 2 workers: {median['ray, 1 worker'] / median['ray, 2 workers']:.2f}x (goal >= 1.6x); "
        f"with Ray's start added to each: "
        f"{(median['ray, 1 worker'] + ray_start) / (median['ray, 2 workers'] + ray_start):.2f}x"
    )


# --- hosts ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def shared_services() -> Iterator[dict[str, str]]:
    """A fresh PostgreSQL database, a Redis database and a bucket on a moto_server of our own."""
    import boto3
    import sqlalchemy as sa

    base = sa.engine.make_url(os.environ["ASSAY_TEST_POSTGRES_URL"])
    name = f"assay_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    port = free_port()
    moto = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)], stderr=subprocess.DEVNULL)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(endpoint, timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        env = {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        os.environ.update(env)
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="assay-bench")
        redis_url = os.environ["ASSAY_TEST_REDIS_URL"].rsplit("/", 1)[0] + "/7"
        import redis

        redis.Redis.from_url(redis_url).flushdb()
        yield {
            **env,
            "ASSAY_DATABASE_URL": base.set(database=name).render_as_string(hide_password=False),
            "ASSAY_REDIS_URL": redis_url,
            "ASSAY_ARTIFACTS_URL": "s3://assay-bench/versions",
            "ASSAY_S3_ENDPOINT_URL": endpoint,
            "ASSAY_LOG_SAMPLE": "0",
        }
    finally:
        moto.terminate()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def server(home: Path, env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    log = (home.parent / f"{home.name}.log").open("w")
    process = subprocess.Popen(
        [ASSAY, "--home", str(home), "serve", "--port", str(port)],
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def bench_hosts(data: Path, seconds: float) -> None:
    root = OUT / "hosts"
    shutil.rmtree(root, ignore_errors=True)
    with shared_services() as env:
        admin = root / "admin"
        assay(admin, "db", "upgrade", env=env)
        spec = spec_for(data, root)
        assay(admin, "train", str(spec), env=env)
        token = assay(admin, "token", "create", "bench", env=env)[1].split()[0]  # stdout first: the token
        with server(root / "a", env) as a, server(root / "b", env) as b:
            promotion_latency(admin, spec, env, [a, b])
            invalidation(a, b, token)
            load_through_promotion(admin, env, [a, b], seconds)


def _item(seed: int) -> dict[str, Any]:
    values = [1, 17, 10, 0.0, 0.0, -1.2, False, False, 33205885]
    names = [
        "longest_repeated_char_added",
        "words_added",
        "words_removed",
        "badwords_prop_delta_sum",
        "informals_prop_delta_sum",
        "non_stopword_prop_delta_sum",
        "user_is_anon",
        "user_is_bot_or_sysop",
        "user_seconds_since_registration",
    ]
    features = dict(zip(names, values, strict=True))
    features["words_added"] = seed * 37 % 500
    features["user_is_anon"] = seed % 2 == 0
    return {"id": "4242", "features": features}


def _production(url: str) -> int:
    return int(httpx.get(url + "/v1/models/reverted", timeout=5).json()["aliases"]["production"])


def promotion_latency(admin: Path, spec: Path, env: dict[str, str], urls: list[str]) -> None:
    assay(admin, "train", str(spec), env=env)  # version 2, not yet production
    seen: dict[str, float] = {}

    def watch(url: str) -> None:
        with httpx.Client(timeout=5) as http:
            while _production_with(http, url) != 2:
                pass
            seen[url] = time.perf_counter()

    threads = [threading.Thread(target=watch, args=(u,)) for u in urls]
    for t in threads:
        t.start()
    time.sleep(0.5)
    from assay.settings import Settings
    from assay.workspace import Workspace

    ws = Workspace.open(Settings.load(home=admin, environ=env))
    try:
        committed = time.perf_counter()
        ws.registry.promote("reverted", 2, actor="bench", reason="bench", force=True)
        committed = (committed + time.perf_counter()) / 2
    finally:
        ws.close()
    for t in threads:
        t.join(timeout=30)
    for i, url in enumerate(urls):
        print(
            f"promotion seen by server {'ab'[i]} {1000 * (seen[url] - committed):.0f} ms after it committed"
        )


def _production_with(http: httpx.Client, url: str) -> int:
    return int(http.get(url + "/v1/models/reverted").json()["aliases"]["production"])


def invalidation(a: str, b: str, token: str) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    score_url = "/v1/scores/reverted/4242"

    def probability(url: str) -> float:
        return float(
            httpx.get(url + score_url, timeout=5).json()["scores"]["4242"]["reverted"]["probability"]["true"]
        )

    httpx.put(
        a + "/v1/features/reverted", json={"rows": [_item(1)]}, headers=auth, timeout=10
    ).raise_for_status()
    before = (probability(a), probability(b))  # cached now, in Redis
    httpx.put(
        a + "/v1/features/reverted", json={"rows": [_item(2)]}, headers=auth, timeout=10
    ).raise_for_status()
    after = (probability(b), probability(a))  # asked right after the PUT returned
    fresh = after[0] == after[1] != before[0]
    print(
        f"PUT /v1/features on server a; server b's next answer is the new score: {fresh} "
        f"(before {before[0]:.4f}, after {after[0]:.4f})"
    )


def load_through_promotion(admin: Path, env: dict[str, str], urls: list[str], seconds: float) -> None:
    body = {"models": ["reverted"], "items": [_item(3)]}

    def hammer(rate: float | None, duration: float, results: list[tuple[int, str]], index: int) -> None:
        url = urls[index % len(urls)]
        interval = None if rate is None else 1.0 / rate
        next_at = time.perf_counter()
        stop = time.perf_counter() + duration
        with httpx.Client(base_url=url, timeout=30) as http:
            while time.perf_counter() < stop:
                try:
                    r = http.post("/v1/scores", json=body)
                    version = r.json()["scores"]["4242"]["reverted"].get("version", "?")
                    results.append((r.status_code, version))
                except httpx.HTTPError as exc:
                    results.append((0, type(exc).__name__))
                if interval is not None:
                    next_at += interval
                    time.sleep(max(0.0, next_at - time.perf_counter()))

    clients = 8
    capacity: list[tuple[int, str]] = []
    threads = [threading.Thread(target=hammer, args=(None, 10.0, capacity, i)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    measured = len(capacity) / 10.0
    rate = 0.8 * measured
    print(
        f"capacity of the two servers, {clients} closed-loop clients: {measured:.0f} req/s; "
        f"load at 80 %: {rate:.0f} req/s for {seconds:.0f}s"
    )
    results: list[tuple[int, str]] = []
    threads = [
        threading.Thread(target=hammer, args=(rate / clients, seconds, results, i)) for i in range(clients)
    ]
    for t in threads:
        t.start()
    time.sleep(seconds / 2)
    from assay.settings import Settings
    from assay.workspace import Workspace

    ws = Workspace.open(Settings.load(home=admin, environ=env))
    try:
        ws.registry.promote("reverted", 1, actor="bench", reason="back to 1 under load", force=True)
    finally:
        ws.close()
    for t in threads:
        t.join()
    failed = sum(1 for status, _ in results if status != 200)
    versions = sorted({v for _, v in results})
    print(
        f"{len(results)} requests ({len(results) / seconds:.0f} req/s) through a promotion: "
        f"{failed} failed; versions answered {versions}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["train", "score", "hosts"])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "editquality")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--home", type=Path, default=None, help="score: a home with the example's model")
    parser.add_argument("--model", default="reverted", help="score: the model to score with")
    parser.add_argument("--candidates", nargs="*", default=[], help="train: only these candidates")
    parser.add_argument(
        "--folder", type=Path, default=Path("/tmp/assay-bench-scaling"), help="score: input and output"
    )
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores (shared with other work: see the note in RESULTS.md)")
    if args.what == "train":
        bench_train(args.data.resolve(), args.rounds, args.candidates)
    elif args.what == "score":
        bench_score(args.data.resolve(), args.rows, args.rounds, args.home, args.folder, args.model)
    else:
        bench_hosts(args.data.resolve(), args.seconds)


if __name__ == "__main__":
    main()
