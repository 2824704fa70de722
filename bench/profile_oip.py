"""Where one 1,000-row Open Inference Protocol request spends its CPU: JSON vs binary tensors, per model.

Drives the real app (``create_app``: its lifespan, middleware, routes, scorer and prediction log)
with ASGI calls from one event loop, without sockets or a load generator, so what a request costs
the server can be read apart from this machine's other load: CPU per request (process time, every
thread: the scoring threads and the log's writer included) for ``/v1`` JSON items, ``/v2`` JSON
tensors and ``/v2`` binary tensors (binary outputs), in turns. Then the stages of ``/v2`` one by
one, on the same rows: parsing the body, encoding the columns, the model's predict (one call on
the whole matrix, as one thread), queueing the batch for the log, building the outputs and the
HTTP body; and gRPC's own steps (the message parsed and turned into columns, the answer built and
serialised). The last lines say how far removing the transport could take binary over JSON: the
ceiling is JSON's cost over what both paths share.

Models come from ``bench_oip.py``'s home (run it once, or ``--train``):

    python bench/profile_oip.py [--home bench/out/oip/home] [--requests 200] [--train]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
from bench_oip import MODELS, OUT, grpc_request, train, v2_binary, v2_json
from bench_serving import COLUMNS, items_of

from assay.settings import Settings
from assay.web.app import create_app
from assay.web.oip import infer, parse_infer
from assay.web.oip_grpc import infer_call, infer_response
from assay.web.oip_proto import grpc_service_pb2 as pb
from assay.web.oip_routes import http_response

ROWS = 1000


async def asgi_post(
    app: Any, state: dict[str, Any], path: str, body: bytes, headers: dict[str, str]
) -> bytes:
    """One POST through the app; its body (a non-200 answer raises)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        + [(b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": dict(state),
    }
    messages: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # no disconnect: the request is answered first
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    status = messages[0]["status"]
    out = b"".join(m.get("body", b"") for m in messages[1:])
    if status != 200:
        raise RuntimeError(f"{path}: {status} {out[:300]!r}")
    return out


def cost(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Median (CPU ms, wall ms) of ``fn`` over ``repeat`` calls after one warm-up."""
    fn()
    cpu, wall = [], []
    for _ in range(repeat):
        c, w = time.process_time(), time.perf_counter()
        fn()
        cpu.append((time.process_time() - c) * 1000)
        wall.append((time.perf_counter() - w) * 1000)
    return statistics.median(cpu), statistics.median(wall)


async def measure(home: Path, frame: pd.DataFrame, models: list[str], repeat: int) -> None:
    settings = Settings.load(home=home, environ={})
    app = create_app(settings)
    async with app.router.lifespan_context(app) as state:
        services = app.state.services
        scorer = services.scorer
        for model in models:
            print(f"\n## {model} ({MODELS[model]}): {scorer.model(model).loaded.predictor.kind}")
            await _paths(app, state, model, frame, repeat)
            _stages(scorer, model, frame, settings.max_items_per_request, repeat)


async def _paths(app: Any, state: dict[str, Any], model: str, frame: pd.DataFrame, repeat: int) -> None:
    infer_path = f"/v2/models/{model}/infer"
    binary, size = v2_binary(frame)
    paths = {
        "/v1 JSON items": ("/v1/scores", orjson.dumps({"models": [model], "items": items_of(frame)}), {}),
        "/v2 JSON tensors": (infer_path, v2_json(frame), {}),
        "/v2 binary tensors": (infer_path, binary, {"Inference-Header-Content-Length": str(size)}),
    }
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
    for _ in range(repeat):  # in turns, so a swing of the machine hits every path alike
        for name, (path, body, headers) in paths.items():
            h = {"content-type": "application/json", **headers}
            c, w = time.process_time(), time.perf_counter()
            await asgi_post(app, state, path, body, h)
            samples[name].append(((time.process_time() - c) * 1000, (time.perf_counter() - w) * 1000))
    print("\n| whole request, in-process | CPU ms | wall ms |\n|---|---|---|")
    medians = {}
    for name, pairs in samples.items():
        medians[name] = statistics.median(p[0] for p in pairs)
        print(f"| {name} | {medians[name]:.2f} | {statistics.median(p[1] for p in pairs):.2f} |")
    ratio = medians["/v2 JSON tensors"] / medians["/v2 binary tensors"]
    print(f"\nbinary vs JSON /v2 by CPU per request: {ratio:.2f}x")


def _stages(scorer: Any, model: str, frame: pd.DataFrame, max_rows: int, repeat: int) -> None:
    served = scorer.model(model)
    as_json = v2_json(frame)
    binary, size = v2_binary(frame)
    json_call = parse_infer(as_json, None, max_rows=max_rows)
    binary_call = parse_infer(binary, str(size), max_rows=max_rows)
    X, _ = served.encoder.encode_columns(binary_call.columns, binary_call.rows)
    proba = served.predict(X)
    json_result = infer(scorer, model, json_call)
    binary_call.binary_outputs = True
    binary_result = infer(scorer, model, binary_call)
    message = grpc_request(model, frame).SerializeToString()
    grpc_result = infer(scorer, model, infer_call(pb.ModelInferRequest.FromString(message), max_rows))
    log = scorer.prediction_log
    stages = {
        "parse the JSON body": lambda: parse_infer(as_json, None, max_rows=max_rows),
        "parse the binary body": lambda: parse_infer(binary, str(size), max_rows=max_rows),
        "gRPC: parse the message, columns": lambda: infer_call(
            pb.ModelInferRequest.FromString(message), max_rows
        ),
        "encode columns from JSON lists": lambda: served.encoder.encode_columns(
            json_call.columns, json_call.rows
        ),
        "encode columns from binary arrays": lambda: served.encoder.encode_columns(
            binary_call.columns, binary_call.rows
        ),
        "the model's predict (one thread)": lambda: served.predict(X),
        "queue the batch for the log": lambda: log.record(served.name, served.version, None, X, proba),
        "infer() from binary (encode, predict, log, outputs)": lambda: infer(scorer, model, binary_call),
        "answer as JSON tensors": lambda: http_response(json_result),
        "answer as binary tensors": lambda: http_response(binary_result),
        "gRPC: answer, serialised": lambda: infer_response(grpc_result).SerializeToString(),
    }
    print("\n| stage of /v2 (1,000 rows) | CPU ms | wall ms |\n|---|---|---|")
    got = {}
    for name, fn in stages.items():
        got[name] = cost(fn, repeat)
        print(f"| {name} | {got[name][0]:.3f} | {got[name][1]:.3f} |")
    shared = got["infer() from binary (encode, predict, log, outputs)"][0]
    json_only = got["parse the JSON body"][0] + got["answer as JSON tensors"][0]
    binary_only = got["parse the binary body"][0] + got["answer as binary tensors"][0]
    predict = got["the model's predict (one thread)"][0]
    print(
        f"\nshared by both (infer): {shared:.2f} ms, of which predict {predict:.2f}; "
        f"JSON's own parse + answer {json_only:.2f} ms, binary's {binary_only:.2f} ms; "
        f"stage ceiling binary/JSON = {(shared + json_only) / (shared + binary_only):.2f}x "
        "(the app and HTTP around them add the same to both)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=OUT / "home")
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "editquality"
    )
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--requests", type=int, default=200, help="requests per path and calls per stage")
    parser.add_argument("--train", action="store_true", help="train the models first (bench_oip.py's)")
    args = parser.parse_args()
    test_file = args.data / "enwiki.features_reverted.testing.20k_2015.tsv.bz2"
    if not test_file.is_file():
        print(f"skipped: {args.data} has no editquality data")
        return 0
    models = args.models.split(",")
    home = train(args.data.resolve(), models) if args.train else args.home
    frame = pd.read_csv(test_file, sep="\t", header=None, names=COLUMNS).iloc[:ROWS]
    asyncio.run(measure(home, frame, models, args.requests))
    return 0


if __name__ == "__main__":
    sys.exit(main())
