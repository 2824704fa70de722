"""Open Inference Protocol speed: binary HTTP and gRPC against JSON /v2 and /v1, same model, one run.

Trains one model of editquality's "reverted" data per family assay trains: LightGBM (500 trees, as
bench_serving.py does), HistGradientBoosting (the example spec's choice) and a random forest, both
served compiled to LightGBM text, and a logistic regression served as compiled linear terms, where
the model costs least and the transports show most. One ``assay serve --workers 1 --grpc-port``
serves them all, and every way in is
measured in turns, round after round (each ratio is taken within a round: this machine's speed
drifts by tens of percent over minutes):

* 1,000-row requests: ``POST /v1/scores`` (JSON items), ``POST /v2/models/{m}/infer`` as JSON, the
  same with the binary tensor extension (raw inputs after the JSON header, binary outputs: what
  Triton's client sends by default), and gRPC ``ModelInfer`` with ``raw_input_contents``; rows/s,
  and the model's own batch predict as the ceiling;
* single rows: gRPC ``ModelInfer`` against ``POST /v1/scores`` (and binary ``/v2``), req/s, p50, p99.

HTTP load comes from wrk (one thread), gRPC load from h2load (nghttp2's HTTP/2 load generator: a unary
gRPC call is an HTTP/2 POST of a length-prefixed message), both with the same connections and one
request in flight on each. Every path's answer is checked once against /v1 first; h2load counts a
gRPC error as a success (HTTP 200 with a grpc-status trailer), so the server's own gRPC counts in
/metrics are read around each run and any non-OK call is reported.

    python bench/bench_oip.py [--data ../shared/data/editquality] [--duration 10] [--rounds 3] [--connections 8]
                              [--reuse]   # serve the models the last run trained

Where the time of one request goes, path by path and stage by stage: bench/profile_oip.py.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import grpc
import harness
import numpy as np
import orjson
import pandas as pd
from bench_serving import COLUMNS, FEATURES, SPEC, best_rate, free_port, items_of, say, wrk

from assay.settings import Settings
from assay.web.oip_proto import grpc_service_pb2 as pb
from assay.web.oip_proto import grpc_service_pb2_grpc as pb_grpc
from assay.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "oip"
# One model per family assay trains, each served as training leaves it (tree ensembles compiled to
# LightGBM text, the logistic regression to linear terms).
MODELS = {
    "reverted": "lightgbm",
    "reverted_hgb": "hist_gradient_boosting",
    "reverted_forest": "random_forest",
    "reverted_linear": "logistic_regression",
}
BOOLEANS = ("user_is_anon", "user_is_bot_or_sysop")
ROWS = 1000
GRPC_PATH = "/inference.GRPCInferenceService/ModelInfer"


def train(data: Path, names: list[str]) -> Path:
    home = OUT / "home"
    quote = lambda items: "[" + ", ".join(f'"{c}"' for c in items) + "]"  # noqa: E731
    for name, candidate in MODELS.items():
        if name not in names:
            continue
        spec = OUT / f"{name}.toml"
        text = SPEC.format(
            train=data / "enwiki.features_reverted.training.20k_2015.tsv.bz2",
            test=data / "enwiki.features_reverted.testing.20k_2015.tsv.bz2",
            columns=quote(COLUMNS),
            features=quote(FEATURES),
        )
        spec.write_text(
            text.replace('name = "reverted"', f'name = "{name}"').replace('["lightgbm"]', f'["{candidate}"]')
        )
        say(f"training {name} ({candidate}) with assay train")
        subprocess.run(["assay", "--home", str(home), "train", str(spec)], check=True, capture_output=True)
    return home


# --- request bodies ---------------------------------------------------------------------------


def _column(frame: pd.DataFrame, name: str) -> np.ndarray:
    return frame[name].astype(bool).to_numpy() if name in BOOLEANS else frame[name].astype("<f8").to_numpy()


def v2_json(frame: pd.DataFrame) -> bytes:
    inputs = [
        {
            "name": name,
            "datatype": "BOOL" if name in BOOLEANS else "FP64",
            "shape": [len(frame)],
            "data": _column(frame, name).tolist(),
        }
        for name in FEATURES
    ]
    return orjson.dumps({"inputs": inputs})


def v2_binary(frame: pd.DataFrame) -> tuple[bytes, int]:
    """The body and its JSON header's length: raw inputs, and every output asked for as binary."""
    raws = [_column(frame, name).tobytes() for name in FEATURES]
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "datatype": "BOOL" if name in BOOLEANS else "FP64",
                    "shape": [len(frame)],
                    "parameters": {"binary_data_size": len(raw)},
                }
                for name, raw in zip(FEATURES, raws, strict=True)
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    return header + b"".join(raws), len(header)


def grpc_request(model: str, frame: pd.DataFrame) -> Any:
    request = pb.ModelInferRequest(model_name=model)
    for name in FEATURES:
        request.inputs.add(name=name, datatype="BOOL" if name in BOOLEANS else "FP64", shape=[len(frame)])
        request.raw_input_contents.append(_column(frame, name).tobytes())
    return request


def grpc_frame(request: Any) -> bytes:
    """A unary gRPC message on the wire: uncompressed flag, big-endian length, the message."""
    message = request.SerializeToString()
    return b"\0" + struct.pack(">I", len(message)) + message


def wrk_script(name: str, body: bytes, headers: dict[str, str]) -> Path:
    path = OUT / f"{name}.body"
    path.write_bytes(body)
    lines = ['wrk.method = "POST"', *(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())]
    lines += [f'local f = io.open("{path}", "rb")', 'wrk.body = f:read("*a")', "f:close()"]
    script = OUT / f"{name}.lua"
    script.write_text("\n".join(lines) + "\n")
    return script


# --- checks ---------------------------------------------------------------------------------------


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    request = urllib.request.Request(url, data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.read(), dict(response.headers)


def check_answers(url: str, stub: Any, model: str, frame: pd.DataFrame) -> None:
    """Every path gives /v1's probabilities for the same rows (or the benchmark would measure nonsense)."""
    items = items_of(frame)
    body, _ = post(
        url + "/v1/scores",
        orjson.dumps({"models": [model], "items": items}),
        {"Content-Type": "application/json"},
    )
    scores = orjson.loads(body)["scores"]
    expected = np.array([scores[item["id"]][model]["probability"]["true"] for item in items])
    infer = f"{url}/v2/models/{model}/infer"
    body, _ = post(infer, v2_json(frame), {"Content-Type": "application/json"})
    as_json = np.array(orjson.loads(body)["outputs"][0]["data"]).reshape(len(frame), -1)[:, 0]
    binary, size = v2_binary(frame)
    body, headers = post(infer, binary, {"Inference-Header-Content-Length": str(size)})
    length = int({k.lower(): v for k, v in headers.items()}["inference-header-content-length"])
    nbytes = orjson.loads(body[:length])["outputs"][0]["parameters"]["binary_data_size"]
    as_binary = np.frombuffer(body[length : length + nbytes], dtype="<f8").reshape(len(frame), -1)[:, 0]
    response = stub.ModelInfer(grpc_request(model, frame))
    as_grpc = np.frombuffer(response.raw_output_contents[0], dtype="<f8").reshape(len(frame), -1)[:, 0]
    for name, got in (("JSON /v2", as_json), ("binary /v2", as_binary), ("gRPC", as_grpc)):
        if not np.allclose(got, expected, rtol=0, atol=1e-12):
            raise RuntimeError(f"{model}: {name} disagrees with /v1")


# --- load -----------------------------------------------------------------------------------------


def grpc_calls(url: str) -> dict[str, float]:
    """The server's count of ModelInfer calls by gRPC status."""
    with urllib.request.urlopen(url + "/metrics", timeout=30) as response:
        text = response.read().decode()
    pattern = (
        rf'^assay_requests_total\{{method="GRPC",route="{re.escape(GRPC_PATH)}",status="(\w+)"\}} (\S+)$'
    )
    return {m[1]: float(m[2]) for m in re.finditer(pattern, text, re.M)}


def h2load(url: str, grpc_port: int, body: Path, duration: int, connections: int) -> dict[str, Any]:
    """req/s, p50/p99 in ms and non-OK gRPC calls of one h2load run of unary ModelInfer calls."""
    log = OUT / "h2load.log"
    before = grpc_calls(url)
    result = subprocess.run(
        [
            "h2load",
            "-t1",
            f"-c{connections}",
            "-m1",
            f"-D{duration}",
            "-d",
            str(body),
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "--log-file",
            str(log),
            f"http://127.0.0.1:{grpc_port}{GRPC_PATH}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    after = grpc_calls(url)
    rps = float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", result.stdout)[1])  # type: ignore[index]
    durations = sorted(
        int(line.split("\t")[2]) / 1000 for line in log.read_text().splitlines() if line.strip()
    )
    failed = sum(after.get(k, 0) - before.get(k, 0) for k in after if k != "OK")
    return {
        "rps": rps,
        "p50_ms": durations[len(durations) // 2],
        "p99_ms": durations[min(len(durations) - 1, int(len(durations) * 0.99))],
        "errors": int(failed),
        "socket_errors": "",
    }


def assay_serve(home: Path, grpc_port: int) -> AbstractContextManager[str]:
    """``assay serve`` with one worker and the gRPC endpoint, until the block ends; yields its URL."""
    port = free_port()
    command = ["assay", "--home", str(home), "serve", "--port", str(port), "--workers", "1"]
    return harness.server([*command, "--grpc-port", str(grpc_port)], "/readyz", port, "oip-assay")


def served_predictors(home: Path, models: list[str]) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Each model's predict as the server runs it (the compiled form when training kept one)."""
    workspace = Workspace.open(Settings.load(home=home, environ={}))
    try:
        return {
            model: workspace.registry.load(workspace.registry.resolve(model)).predictor.predict_proba
            for model in models
        }
    finally:
        workspace.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "editquality")
    parser.add_argument("--duration", type=int, default=10, help="seconds per load run")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reuse", action="store_true", help="serve the models a previous run trained")
    parser.add_argument("--models", default=",".join(MODELS), help="which of them to measure")
    args = parser.parse_args()
    test_file = args.data / "enwiki.features_reverted.testing.20k_2015.tsv.bz2"
    if not test_file.is_file():
        print(f"skipped: {args.data} has no editquality data")
        return 0
    missing = [tool for tool in ("wrk", "h2load") if shutil.which(tool) is None]
    if missing:
        print(f"skipped: {', '.join(missing)} not installed (apt-get install wrk nghttp2-client)")
        return 0
    home = OUT / "home"
    measured_models = args.models.split(",")
    if not (args.reuse and home.is_dir()):
        shutil.rmtree(OUT, ignore_errors=True)
        OUT.mkdir(parents=True)
        home = train(args.data.resolve(), measured_models)
    else:  # a reused home gets the measured models it lacks
        train(args.data.resolve(), [m for m in measured_models if not (home / "artifacts" / m).is_dir()])
    test = pd.read_csv(test_file, sep="\t", header=None, names=COLUMNS)
    batch, single = test.iloc[:ROWS], test.iloc[:1]
    items = items_of(batch)
    X = batch[FEATURES].astype("float64").to_numpy()
    predictors = served_predictors(home, measured_models)
    json_headers = {"Content-Type": "application/json"}
    d, c = args.duration, args.connections

    grpc_port = free_port()
    with assay_serve(home, grpc_port) as url:
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        runs: dict[str, Callable[[], dict[str, Any]]] = {}
        for model in measured_models:
            check_answers(url, stub, model, batch)
            infer = f"{url}/v2/models/{model}/infer"
            v1 = wrk_script(f"{model}-v1", orjson.dumps({"models": [model], "items": items}), json_headers)
            as_json = wrk_script(f"{model}-v2-json", v2_json(batch), json_headers)
            body, size = v2_binary(batch)
            binary = wrk_script(f"{model}-v2-binary", body, {"Inference-Header-Content-Length": str(size)})
            framed = OUT / f"{model}-grpc.bin"
            framed.write_bytes(grpc_frame(grpc_request(model, batch)))
            runs[f"{model}/v1"] = lambda s=v1: wrk(url + "/v1/scores", s, d, c)
            runs[f"{model}/v2-json"] = lambda s=as_json, u=infer: wrk(u, s, d, c)
            runs[f"{model}/v2-binary"] = lambda s=binary, u=infer: wrk(u, s, d, c)
            runs[f"{model}/grpc"] = lambda f=framed: h2load(url, grpc_port, f, d, c)
        one = wrk_script(
            "single-v1", orjson.dumps({"models": ["reverted"], "items": items_of(single)}), json_headers
        )
        body, size = v2_binary(single)
        one_binary = wrk_script("single-v2-binary", body, {"Inference-Header-Content-Length": str(size)})
        one_grpc = OUT / "single-grpc.bin"
        one_grpc.write_bytes(grpc_frame(grpc_request("reverted", single)))
        runs["single/v1"] = lambda: wrk(url + "/v1/scores", one, d, c)
        runs["single/v2-binary"] = lambda: wrk(url + "/v2/models/reverted/infer", one_binary, d, c)
        runs["single/grpc"] = lambda: h2load(url, grpc_port, one_grpc, d, c)
        channel.close()

        # The checks above loaded both models and ran every path once; this warms the connections.
        wrk(url + "/v1/scores", one, 2, c)
        rounds = []
        for k in range(args.rounds):
            say(f"round {k + 1} of {args.rounds}")
            measured = {name: run() for name, run in runs.items()}
            for model, predict in predictors.items():
                measured[f"{model}/predict"] = {"rps": best_rate(lambda p=predict: p(X), ROWS, 20) / ROWS}
            rounds.append(measured)
    report(rounds, args)
    return 0


def report(rounds: list[dict[str, Any]], args: argparse.Namespace) -> None:
    models = args.models.split(",")

    def median(values: list[float]) -> float:
        return float(statistics.median(values))

    def rows(name: str) -> float:
        return median([m[name]["rps"] * ROWS for m in rounds])

    def ratio(top: str, bottom: str) -> str:
        if any(m[bottom]["rps"] == 0 for m in rounds):  # wrk gives up on a request after 2 s
            return "n/a (a round finished no request of the peer)"
        each = [m[top]["rps"] / m[bottom]["rps"] for m in rounds]
        return f"{median(each):.2f}x (rounds: {', '.join(f'{x:.2f}' for x in each)})"

    print(
        f"machine: {os.cpu_count()} CPUs; one server worker; wrk -t1 / h2load -t1 -m1, {args.connections} "
        f"connections, {args.duration}s a run; {len(rounds)} rounds, every path measured in turns "
        "(medians over the rounds; each ratio taken within a round)\n"
    )
    print(
        "| 1,000-row requests, rows/s | "
        + " | ".join(f"{m} ({c})" for m, c in MODELS.items() if m in models)
        + " |"
    )
    print("|---" * (len(models) + 1) + "|")
    labels = {
        "v1": "POST /v1/scores, JSON items",
        "v2-json": "POST /v2/.../infer, JSON tensors",
        "v2-binary": "POST /v2/.../infer, binary tensors in and out",
        "grpc": "gRPC ModelInfer, raw contents in and out",
        "predict": "the model's own predict, 1,000 rows, one thread (best of 20)",
    }
    for key, label in labels.items():
        print(f"| {label} | " + " | ".join(f"{rows(f'{m}/{key}'):,.0f}" for m in models) + " |")
    print()
    for model in models:
        print(
            f"- {model}: binary HTTP vs JSON /v2 {ratio(f'{model}/v2-binary', f'{model}/v2-json')}; "
            f"vs /v1 {ratio(f'{model}/v2-binary', f'{model}/v1')} (goal >= 2x)"
        )
        print(
            f"- {model}: gRPC vs JSON /v2 {ratio(f'{model}/grpc', f'{model}/v2-json')}; "
            f"vs /v1 {ratio(f'{model}/grpc', f'{model}/v1')} (goal >= 2x)"
        )
    print()
    print("| single row, reverted | req/s | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    for key, label in (
        ("single/grpc", "gRPC ModelInfer"),
        ("single/v1", "POST /v1/scores"),
        ("single/v2-binary", "POST /v2/.../infer, binary"),
    ):
        w = {k: median([m[key][k] for m in rounds]) for k in ("rps", "p50_ms", "p99_ms")}
        print(f"| {label} | {w['rps']:,.0f} | {w['p50_ms']:.2f} | {w['p99_ms']:.2f} |")
    print(f"\n- single-row gRPC vs /v1: {ratio('single/grpc', 'single/v1')}")
    errors = [
        f"{name} in round {k + 1}: {w['errors']} failed {w['socket_errors']}".strip()
        for k, m in enumerate(rounds)
        for name, w in m.items()
        if w.get("errors") or w.get("socket_errors")
    ]
    if errors:
        print("\nerrors: " + "; ".join(errors))


if __name__ == "__main__":
    sys.exit(main())
