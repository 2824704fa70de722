"""The Open Inference Protocol's HTTP routes under ``/v2``: metadata, health and inference.

The protocol itself — what a request means, the inference both transports share and the
parsing of HTTP bodies (JSON, or the binary tensor extension) — is ``web.oip``; this module
answers the routes with it, writing binary outputs after the JSON header when a request asks.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from assay.web.api import json_response, run_scoring, services
from assay.web.oip import (
    BINARY_TYPE,
    HEADER_LENGTH,
    InferResult,
    infer,
    inflate,
    model_metadata,
    model_ref,
    parse_infer,
    server_metadata,
)


def _route_ref(request: Request) -> str:
    return model_ref(request.path_params["model"], request.path_params.get("version"))


async def oip_server(request: Request) -> Response:
    return json_response(server_metadata())


async def oip_live(request: Request) -> Response:
    return json_response({"live": True})


async def oip_ready(request: Request) -> Response:
    return json_response(
        {"ready": services(request).scorer.ready and not request.app.state.capacity.saturated}
    )


async def oip_model(request: Request) -> Response:
    return json_response(model_metadata(services(request).scorer, _route_ref(request)))


async def oip_model_ready(request: Request) -> Response:
    services(request).scorer.model(_route_ref(request))  # an unknown model or version: 404
    return json_response({"name": request.path_params["model"], "ready": True})


async def oip_infer(request: Request) -> Response:
    svc = services(request)
    body = await request.body()
    encoding = request.headers.get("content-encoding")
    if encoding:
        body = inflate(body, encoding, svc.settings.max_body_bytes)
    call = parse_infer(
        body,
        request.headers.get(HEADER_LENGTH),
        max_rows=svc.settings.max_items_per_request,
        route=(request.path_params["model"], request.path_params.get("version")),
    )
    ref = _route_ref(request)
    result = await run_scoring(request, [ref], call.rows, infer, svc.scorer, ref, call)
    return http_response(result)


def http_response(result: InferResult) -> Response:
    """JSON, or (when an output is binary) the JSON header then each binary output's bytes."""
    outputs = []
    blobs = []
    for out in result.outputs:
        entry: dict[str, Any] = {"name": out.name, "datatype": out.datatype, "shape": out.shape}
        parameters = dict(out.parameters)
        if out.binary:
            blob = out.to_bytes()
            blobs.append(blob)
            parameters["binary_data_size"] = len(blob)
        else:
            entry["data"] = out.to_list()
        if parameters:
            entry["parameters"] = parameters
        outputs.append(entry)
    body: dict[str, Any] = {"model_name": result.model_name, "model_version": result.model_version}
    if result.id is not None:
        body["id"] = result.id
    body["outputs"] = outputs
    header = orjson.dumps(body)
    if not blobs:
        return Response(header, media_type="application/json")
    return Response(
        b"".join([header, *blobs]),
        media_type=BINARY_TYPE,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )


def routes() -> list[BaseRoute]:
    return [
        Route("/v2", oip_server, methods=["GET"]),
        Route("/v2/health/live", oip_live, methods=["GET"]),
        Route("/v2/health/ready", oip_ready, methods=["GET"]),
        Route("/v2/models/{model}", oip_model, methods=["GET"]),
        Route("/v2/models/{model}/ready", oip_model_ready, methods=["GET"]),
        Route("/v2/models/{model}/infer", oip_infer, methods=["POST"]),
        Route("/v2/models/{model}/versions/{version}", oip_model, methods=["GET"]),
        Route("/v2/models/{model}/versions/{version}/ready", oip_model_ready, methods=["GET"]),
        Route("/v2/models/{model}/versions/{version}/infer", oip_infer, methods=["POST"]),
    ]
