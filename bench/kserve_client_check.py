"""KServe's Python clients (REST and gRPC, their defaults) against a running ``assay serve``.

KServe 0.21 cannot be installed beside the versions assay pins (it requires pandas < 3 and
python-dateutil < 3), so, like Evidently, it runs in its own virtual environment:

    python -m venv /tmp/kserve-venv && /tmp/kserve-venv/bin/pip install kserve==0.21.0
    python bench/bench_oip.py    # trains "reverted" into bench/out/oip/home (or any home serving it)
    assay --home bench/out/oip/home serve --port 8000 --grpc-port 8001 &
    /tmp/kserve-venv/bin/python bench/kserve_client_check.py http://127.0.0.1:8000 127.0.0.1:8001 \
        ../shared/data/editquality/enwiki.features_reverted.testing.20k_2015.tsv.bz2

It sends 50 held-out edits by each client (binary and JSON tensors; FP64, FP32, INT64 inputs),
compares the probabilities with ``/v1``'s, and prints what a bad input, an unknown model and an
unknown version answer. Where this client differs from Triton's (its REST body repeats the model
as ``model_name``), tests/web/test_oip.py pins assay's behaviour.
"""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.request

import numpy as np
import pandas as pd
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

http, grpc_addr, data = sys.argv[1], sys.argv[2], sys.argv[3]
COLS = [
    "rev_id",
    "longest_repeated_char_added",
    "words_added",
    "words_removed",
    "badwords_prop_delta_sum",
    "informals_prop_delta_sum",
    "non_stopword_prop_delta_sum",
    "user_is_anon",
    "user_is_bot_or_sysop",
    "user_seconds_since_registration",
    "reverted",
]
frame = pd.read_csv(data, sep="\t", header=None, names=COLS, nrows=50)
FEATURES = COLS[1:-1]


def inputs(binary: bool, numeric="FP64"):
    out = []
    for name in FEATURES:
        col = frame[name].to_numpy()
        if col.dtype == bool:
            i = InferInput(name, [len(col)], "BOOL")
            i.set_data_from_numpy(col, binary_data=binary)
        else:
            dt = {"FP64": np.float64, "FP32": np.float32, "INT64": np.int64}[numeric]
            arr = (
                col.astype(dt)
                if numeric.startswith("FP") or (col == col.astype(np.int64)).all()
                else col.astype(np.float64)
            )
            i = InferInput(name, [len(col)], "FP64" if arr.dtype == np.float64 else numeric)
            i.set_data_from_numpy(arr, binary_data=binary)
        out.append(i)
    return out


async def main():
    results = {}
    # reference: /v1 probabilities
    items = [
        {"id": str(frame["rev_id"].iloc[k]), "features": {n: frame[n].iloc[k].item() for n in FEATURES}}
        for k in range(len(frame))
    ]
    req = urllib.request.Request(
        http + "/v1/scores",
        data=json.dumps({"models": ["reverted"], "items": items}).encode(),
        headers={"content-type": "application/json"},
    )
    v1 = json.loads(urllib.request.urlopen(req).read())["scores"]
    want = np.array([v1[it["id"]]["reverted"]["probability"]["true"] for it in items])
    rest = InferenceRESTClient(RESTConfig(protocol="v2"))
    results["rest live"] = await rest.is_server_live(http)
    results["rest ready"] = await rest.is_server_ready(http)
    results["rest model ready"] = await rest.is_model_ready(http, "reverted")
    for binary in (True, False):
        for numeric in ("FP64", "FP32", "INT64"):
            try:
                r = await rest.infer(
                    http, InferRequest("reverted", inputs(binary, numeric)), model_name="reverted"
                )
                proba = {o.name: o for o in r.outputs}["probability"].as_numpy()
                got = proba[:, 0]
                results[f"rest infer binary={binary} {numeric}"] = (
                    f"max |diff| vs /v1 {np.abs(got - want).max():.2e}"
                    + ("" if numeric == "FP64" else " (FP32/INT inputs round the features)")
                )
            except Exception as exc:
                results[f"rest infer binary={binary} {numeric}"] = (
                    f"ERROR {type(exc).__name__}: {str(exc)[:200]}"
                )
    try:
        bad = inputs(True)
        bad[0] = InferInput(FEATURES[0], [3], "FP64")
        bad[0].set_data_from_numpy(np.array([1.0, np.nan, 2.0]))
        await rest.infer(http, InferRequest("reverted", bad), model_name="reverted")
        results["rest bad input"] = "no error!"
    except Exception as exc:
        results["rest bad input"] = f"{type(exc).__name__}: {str(exc)[:160]}"
    try:
        await rest.infer(http, InferRequest("nosuch", inputs(True)), model_name="nosuch")
        results["rest unknown model"] = "no error!"
    except Exception as exc:
        results["rest unknown model"] = f"{type(exc).__name__}: {str(exc)[:160]}"
    await rest.close()
    g = InferenceGRPCClient(grpc_addr)
    results["grpc live"] = await g.is_server_live()
    results["grpc ready"] = await g.is_server_ready()
    results["grpc model ready"] = await g.is_model_ready("reverted")
    for binary in (True, False):
        try:
            r = await g.infer(InferRequest("reverted", inputs(binary)))
            proba = {o.name: o for o in r.outputs}["probability"].as_numpy()
            results[f"grpc infer raw={binary}"] = f"max |diff| vs /v1 {np.abs(proba[:, 0] - want).max():.2e}"
        except Exception as exc:
            results[f"grpc infer raw={binary}"] = f"ERROR {type(exc).__name__}: {str(exc)[:200]}"
    try:
        await g.infer(InferRequest("reverted", inputs(True), model_version="9"))
        results["grpc unknown version"] = "no error!"
    except Exception as exc:
        results["grpc unknown version"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    await g.close()
    for k, v in results.items():
        print(f"{k}: {v}")


asyncio.run(main())
