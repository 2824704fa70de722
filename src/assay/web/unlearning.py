"""Deletion requests over HTTP (an admin API token): ``DELETE /v1/items/{item_id}`` and
``GET /v1/forget/{request}``.

The DELETE records the request and does everything that needs no training before it answers
(202): the stores' rows are gone, the versions that held the item are retired and nothing
serves them. Their replacements train on a thread of their own; the GET says how far it is
(a server stopped meanwhile leaves it ``running``: ``assay forget resume`` finishes it).
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from assay.engines.engine import open_engine
from assay.errors import Forbidden, InvalidInput
from assay.review.resolution import resolved_labels
from assay.serving.tokens import TokenInfo
from assay.unlearning import forgetting, requests
from assay.web.api import json_response, query_flag, require_token, services
from assay.web.openapi_schema import ERROR, TOKEN, json_content, path_param

log = logging.getLogger(__name__)


async def _require_admin(request: Request) -> TokenInfo:
    info = await require_token(request)
    if not info.admin:
        raise Forbidden(
            "deleting items needs an admin token (assay token create NAME --admin)", field="Authorization"
        )
    return info


def _forgetting(request: Request) -> forgetting.Forgetting:
    svc = services(request)
    ws = svc.workspace
    return forgetting.Forgetting(
        engine=ws.engine,
        registry=ws.registry,
        log=ws.log,
        cache=svc.scorer.cache,
        legal_hold=svc.settings.legal_hold,
        campaign_labels=functools.partial(resolved_labels, ws.engine),
        work=open_engine(svc.settings.engine, svc.settings.ray_address, svc.settings.train_jobs),
    )


async def delete_item(request: Request) -> Response:
    info = await _require_admin(request)
    svc = services(request)
    models = request.query_params.getlist("model") or [m.name for m in svc.workspace.registry.models()]
    if not models:
        raise InvalidInput("there is no model to forget the item from", field="model")
    f = _forgetting(request)
    queued = request.app.state.watch.log
    if queued is not None:  # scores of the item still queued for the log are written, then forgotten
        await run_in_threadpool(queued.flush)
    request_id = await run_in_threadpool(
        forgetting.record, f, models, [request.path_params["item_id"]], actor=f"token {info.name}"
    )
    if query_flag(request, "wait"):
        done = await run_in_threadpool(forgetting.carry_out, f, request_id)
        return json_response(done.to_dict())
    threading.Thread(
        target=_carry_out, args=(f, request_id), name=f"assay-forget-{request_id}", daemon=True
    ).start()
    body = requests.get_request(f.engine, request_id).to_dict()
    return Response(
        json_response(body).body,
        status_code=202,
        media_type="application/json",
        headers={"Location": f"/v1/forget/{request_id}"},
    )


def _carry_out(f: forgetting.Forgetting, request_id: int) -> None:
    try:
        forgetting.carry_out(f, request_id)
    except Exception:  # recorded on the request; it stays running for `assay forget resume`
        log.exception("deletion request %s stopped", request_id)


async def get_request(request: Request) -> Response:
    await _require_admin(request)
    raw = request.path_params["request_id"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
        raise InvalidInput(f"a deletion request is named by its number, not {raw[:40]!r}", field="request")
    found = await run_in_threadpool(requests.get_request, services(request).workspace.engine, int(raw))
    return json_response(found.to_dict())


UNLEARNING_TAG = {
    "name": "unlearning",
    "description": "Deletion requests: forget an item everywhere (an admin token).",
}


def unlearning_paths() -> dict[str, Any]:
    request = json_content({"type": "object", "required": ["id", "status"]}, "The deletion request")
    text = {"type": "string"}
    return {
        "/v1/items/{item_id}": {
            "delete": {
                "summary": "Forget an item everywhere; 202 once the stores are clean, retraining goes on",
                "operationId": "delete_item",
                "security": TOKEN,
                "parameters": [
                    path_param("item_id", "The item's id.", {"type": "string", "maxLength": 200}),
                    {
                        "name": "model",
                        "in": "query",
                        "schema": text,
                        "description": "Only this model (repeatable).",
                    },
                    {
                        "name": "wait",
                        "in": "query",
                        "schema": {"type": "boolean"},
                        "description": "Answer when done.",
                    },
                ],
                "responses": {"200": request, "202": request, **ERROR},
            }
        },
        "/v1/forget/{request_id}": {
            "get": {
                "summary": "A deletion request: its status, stores cleaned, versions retired and replaced",
                "operationId": "get_forget_request",
                "security": TOKEN,
                "parameters": [path_param("request_id", "The request's number.", text)],
                "responses": {"200": request, **ERROR},
            }
        },
    }


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/items/{item_id}", delete_item, methods=["DELETE"]),
        Route("/v1/forget/{request_id}", get_request, methods=["GET"]),
    ]
