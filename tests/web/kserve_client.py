"""KServe's Python clients (REST and gRPC, with their defaults) against a running ``assay serve``.

Run by tests/web/test_oip_clients.py with the Python of a virtual environment holding KServe
(``ASSAY_TEST_KSERVE_PYTHON``; ``.ci/run`` builds it from constraints-kserve.txt): KServe 0.21
requires pandas < 3, which assay's own environment cannot have. This script imports neither
assay nor the tests; it reads a request file and prints what each client got, as JSON:

    python kserve_client.py HTTP_URL GRPC_ADDRESS MODEL REQUEST.json

REQUEST.json: ``{"columns": {feature: [values]}, "booleans": [feature, ...]}``. Every answer is
``{"probability": [[...], ...]}`` or ``{"error": "message"}``; health answers are booleans.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable
from typing import Any

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig


def inputs(request: dict[str, Any], numeric: str, binary: bool) -> list[InferInput]:
    out = []
    for name, values in request["columns"].items():
        datatype = "BOOL" if name in request["booleans"] else numeric
        array = np.asarray(values, dtype={"BOOL": np.bool_, "FP64": np.float64, "FP32": np.float32}[datatype])
        tensor = InferInput(name, [len(array)], datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        out.append(tensor)
    return out


async def answer(call: Awaitable[Any]) -> dict[str, Any]:
    try:
        response = await call
    except Exception as exc:  # the client's own error types differ by transport; the message is what counts
        return {"error": f"{type(exc).__name__}: {exc}"}
    outputs = {o.name: o for o in response.outputs}
    return {"probability": outputs["probability"].as_numpy().tolist(), "version": response.model_version}


async def main(http: str, grpc_address: str, model: str, request: dict[str, Any]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    rest = InferenceRESTClient(RESTConfig(protocol="v2"))
    results["rest live"] = await rest.is_server_live(http)
    results["rest ready"] = await rest.is_server_ready(http)
    results["rest model ready"] = await rest.is_model_ready(http, model)
    for binary in (True, False):
        for numeric in ("FP64", "FP32"):
            infer = InferRequest(model, inputs(request, numeric, binary))
            results[f"rest {numeric} binary={binary}"] = await answer(
                rest.infer(http, infer, model_name=model)
            )
    bad = inputs(request, "FP64", True)
    first = bad[0].name
    bad[0] = InferInput(first, [len(request["columns"][first])], "FP64")
    bad[0].set_data_from_numpy(np.full(len(request["columns"][first]), np.nan), binary_data=True)
    results["rest nan"] = await answer(rest.infer(http, InferRequest(model, bad), model_name=model))
    unknown = InferRequest("nosuchmodel", inputs(request, "FP64", True))
    results["rest unknown model"] = await answer(rest.infer(http, unknown, model_name="nosuchmodel"))
    await rest.close()

    grpc = InferenceGRPCClient(grpc_address)
    results["grpc live"] = await grpc.is_server_live()
    results["grpc ready"] = await grpc.is_server_ready()
    results["grpc model ready"] = await grpc.is_model_ready(model)
    for numeric in ("FP64", "FP32"):
        results[f"grpc {numeric}"] = await answer(
            grpc.infer(InferRequest(model, inputs(request, numeric, True)))
        )
    results["grpc nan"] = await answer(grpc.infer(InferRequest(model, bad)))
    versioned = InferRequest(model, inputs(request, "FP64", True), model_version="1")
    results["grpc version 1"] = await answer(grpc.infer(versioned))
    missing = InferRequest(model, inputs(request, "FP64", True), model_version="9")
    results["grpc version 9"] = await answer(grpc.infer(missing))
    await grpc.close()
    return results


if __name__ == "__main__":
    with open(sys.argv[4]) as file:
        payload = json.load(file)
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], payload))))
