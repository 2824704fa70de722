"""The review JSON API under ``/v1``: sessions, campaigns, worksets, labels, skips and judgments.

Reviewers' programs (and the tests' reviewer processes) use the same session
as the pages: ``POST /v1/session`` logs in and returns the CSRF token that
every later write sends as ``X-CSRF-Token``. Products report a mistaken score
with ``POST /v1/judgments`` and an API token (``Authorization: Bearer``), no
session. Every answer that says a label is saved is sent after its commit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from assay.errors import InvalidInput, MalformedRequest
from assay.review import accounts, agreement, campaigns, judgments, labelling, progress, worksets
from assay.review.logins import LoginThrottled
from assay.web import sessions
from assay.web.api import json_object, json_response, read_json, services
from assay.web.errors import error_response

_LOGIN_KEYS = frozenset({"username", "password"})
_LABEL_KEYS = frozenset({"item_id", "label", "comment"})
_JUDGMENT_KEYS = frozenset({"model", "item_id", "label", "rationale", "campaign"})
_ENDORSE_KEYS = frozenset({"stance", "comment"})

Endpoint = Callable[[Request], Awaitable[Response]]


def _str(payload: dict[str, Any], key: str, *, required: bool = True) -> str:
    value = payload.get(key, "")
    if isinstance(value, int) and not isinstance(value, bool) and key == "item_id":
        value = str(value)  # ids are strings, but products often send numbers
    if not isinstance(value, str) or (required and not value.strip()):
        raise InvalidInput(f"{key} must be a non-empty string", field=key)
    return value.strip()


async def _body(request: Request, allowed: frozenset[str], required: tuple[str, ...] = ()) -> dict[str, Any]:
    if not request.headers.get("content-type", "").startswith("application/json"):
        # A cross-site form cannot send this content type without a CORS preflight.
        raise MalformedRequest("send the body as application/json", field="Content-Type")
    return json_object(await read_json(request), allowed, required)


async def post_session(request: Request) -> Response:
    payload = await _body(request, _LOGIN_KEYS, ("username", "password"))
    try:
        user, token = await sessions.log_in(request, _str(payload, "username"), _str(payload, "password"))
    except LoginThrottled as exc:
        # The generic error handler says "Retry-After: 1"; a lock-out says how long it really lasts.
        services(request).metrics.error(exc.code)
        return error_response(exc, {"Retry-After": str(exc.retry_after)})
    csrf = accounts.csrf_token(sessions.secret(request), token)
    response = json_response({"user": {"username": user.username, "role": user.role}, "csrf_token": csrf})
    sessions.set_session(request, response, token)
    return response


async def delete_session(request: Request) -> Response:
    await sessions.require_user(request)
    sessions.check_csrf_header(request)
    response = Response(status_code=204)
    await sessions.log_out(request, response)
    return response


async def list_campaigns(request: Request) -> Response:
    user = await sessions.require_user(request)
    engine = services(request).workspace.engine

    def load() -> list[dict[str, Any]]:
        return [
            {**c.to_dict(admin=user.is_admin), "progress": progress.measure(engine, c).to_dict()}
            for c in campaigns.list_campaigns(engine)
            if user.is_admin or (c.is_open and c.may_label(user))
        ]

    return json_response({"campaigns": await run_in_threadpool(load)})


async def get_campaign(request: Request) -> Response:
    await sessions.require_user(request, admin=True)
    svc = services(request)
    engine, registry = svc.workspace.engine, svc.workspace.registry

    def load() -> dict[str, Any]:
        c = campaigns.get_campaign(engine, request.path_params["name"])
        loaded = registry.load(registry.get(c.model, c.model_version))
        return {
            "campaign": c.to_dict(),
            "progress": progress.measure(engine, c).to_dict(),
            "agreement": agreement.summary(engine, c),
            "model_vs_labels": agreement.model_vs_labels(engine, c, loaded.operating_points),
        }

    return json_response(await run_in_threadpool(load))


def _workset_json(campaign: campaigns.Campaign, workset: worksets.Workset | None) -> dict[str, Any]:
    if workset is None:
        return {"workset": None}
    items = []
    for item in workset.items:
        entry: dict[str, Any] = {
            "item_id": item.item_id,
            "state": item.state,
            "label": item.label,
            "features": item.features,
            "link": campaign.link(item.item_id),
        }
        if not campaign.blind:  # blind campaigns never send the score, not even to scripts
            entry.update(
                {
                    "prediction": item.prediction,
                    "probability": item.probabilities,
                    "explanation": item.explanation,
                }
            )
        items.append(entry)
    return {
        "workset": {
            "id": workset.id,
            "expires_at": workset.expires_at.isoformat(),
            "total": workset.total,
            "finished": workset.finished,
            "items": items,
        }
    }


async def get_workset(request: Request) -> Response:
    user = await sessions.require_user(request)
    engine = services(request).workspace.engine

    def load() -> dict[str, Any]:
        c = campaigns.get_campaign(engine, request.path_params["name"])
        campaigns.check_may_label(c, user)
        return _workset_json(c, worksets.get_workset(engine, c, user))

    return json_response(await run_in_threadpool(load))


async def post_workset(request: Request) -> Response:
    user = await sessions.require_user(request)
    sessions.check_csrf_header(request)
    svc = services(request)
    engine, settings = svc.workspace.engine, svc.settings

    def take() -> dict[str, Any]:
        c = campaigns.get_campaign(engine, request.path_params["name"])
        ws = worksets.take_workset(engine, c, user, size=settings.workset_size, ttl_s=settings.workset_ttl_s)
        return _workset_json(c, ws)

    return json_response(await run_in_threadpool(take))


async def post_label(request: Request) -> Response:
    user = await sessions.require_user(request)
    sessions.check_csrf_header(request)
    payload = await _body(request, _LABEL_KEYS, ("item_id", "label"))
    svc = services(request)
    engine = svc.workspace.engine
    item_id = _str(payload, "item_id")

    def save() -> str:
        c = campaigns.get_campaign(engine, request.path_params["name"])
        return labelling.submit_label(
            engine,
            c,
            user,
            item_id,
            _str(payload, "label"),
            _str(payload, "comment", required=False),
            ttl_s=svc.settings.workset_ttl_s,
        )

    status = await run_in_threadpool(save)
    return json_response({"status": status, "item_id": item_id}, status=201 if status == "saved" else 200)


async def post_skip(request: Request) -> Response:
    user = await sessions.require_user(request)
    sessions.check_csrf_header(request)
    payload = await _body(request, frozenset({"item_id"}), ("item_id",))
    engine = services(request).workspace.engine
    item_id = _str(payload, "item_id")

    def skip() -> None:
        labelling.skip_item(
            engine, campaigns.get_campaign(engine, request.path_params["name"]), user, item_id
        )

    await run_in_threadpool(skip)
    return json_response({"status": "skipped", "item_id": item_id})


async def list_judgments(request: Request) -> Response:
    user = None
    if await sessions.token_name(request) is None:
        user = await sessions.require_user(request)
    admin = user is not None and user.is_admin  # a product's token sees what a reviewer sees
    engine = services(request).workspace.engine
    model = request.query_params.get("model")
    item_id = request.query_params.get("item_id")

    def load() -> list[dict[str, Any]]:
        if model and item_id:
            found = judgments.judgments_for(engine, model, item_id)
        else:
            found = judgments.recent_judgments(engine, model=model)
        return [j.seen_by(admin=admin).to_dict() for j in found]

    return json_response({"judgments": await run_in_threadpool(load)})


async def post_judgment(request: Request) -> Response:
    """Record a judgment: a product with its API token, or a person with a session."""
    token = await sessions.token_name(request)
    user = None
    if token is None:
        user = await sessions.require_user(request)
        sessions.check_csrf_header(request)
    payload = await _body(request, _JUDGMENT_KEYS, ("model", "item_id", "label"))
    svc = services(request)
    engine = svc.workspace.engine

    def save() -> dict[str, Any]:
        served = svc.scorer.model(_str(payload, "model"))
        campaign_name = _str(payload, "campaign", required=False)
        campaign = campaigns.get_campaign(engine, campaign_name) if campaign_name else None
        item_id = _str(payload, "item_id")
        prediction = worksets.get_item(engine, campaign, item_id).prediction if campaign else None
        j = judgments.record_judgment(
            engine,
            model=served.name,
            item_id=item_id,
            label=_str(payload, "label"),
            classes=served.loaded.classes,
            rationale=_str(payload, "rationale", required=False),
            author=user,
            token_name=token,
            model_version=campaign.model_version if campaign else served.version,
            model_prediction=prediction,
            campaign_id=campaign.id if campaign else None,
        )
        return j.seen_by(admin=user is not None and user.is_admin).to_dict()

    return json_response(await run_in_threadpool(save), status=201)


async def post_endorsement(request: Request) -> Response:
    user = await sessions.require_user(request)
    sessions.check_csrf_header(request)
    payload = await _body(request, _ENDORSE_KEYS, ("stance",))
    engine = services(request).workspace.engine
    j = await run_in_threadpool(
        judgments.endorse,
        engine,
        request.path_params["id"],
        user,
        _str(payload, "stance"),
        _str(payload, "comment", required=False),
    )
    return json_response(j.seen_by(admin=user.is_admin).to_dict())


def _route(path: str, handlers: dict[str, Endpoint]) -> Route:
    """One route for every method of ``path``: with a route per method, a 405 would name only the
    first route's methods in its ``Allow`` header."""

    async def endpoint(request: Request) -> Response:
        return await handlers["GET" if request.method == "HEAD" else request.method](request)

    return Route(path, endpoint, methods=list(handlers), name=path)


def api_routes() -> list[BaseRoute]:
    return [
        _route("/v1/session", {"POST": post_session, "DELETE": delete_session}),
        _route("/v1/campaigns", {"GET": list_campaigns}),
        _route("/v1/campaigns/{name}", {"GET": get_campaign}),
        _route("/v1/campaigns/{name}/workset", {"GET": get_workset, "POST": post_workset}),
        _route("/v1/campaigns/{name}/labels", {"POST": post_label}),
        _route("/v1/campaigns/{name}/skips", {"POST": post_skip}),
        _route("/v1/judgments", {"GET": list_judgments, "POST": post_judgment}),
        _route("/v1/judgments/{id:int}/endorsements", {"POST": post_endorsement}),
    ]
