"""The JSON API: ``/v1`` (assay's own, ORES-shaped), health, readiness and metrics.

The Open Inference Protocol (``/v2``) is ``web.oip``; it shares this module's helpers.

Handlers parse and check the request, call the shared ``Scorer`` (see
``assay.serving.scoring``) and serialise with orjson; every error is an ``AssayError``
turned into a response by ``web.errors``. Small requests whose work stays on
this machine (in-process cache, SQLite store) are scored on the event loop,
which is faster than a thread hop; everything else runs on a worker thread
under the scoring timeout.

Reads are open; writes (precache, feature tables) need a bearer token.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from anyio import CapacityLimiter
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from assay.errors import InvalidInput, MalformedRequest, PayloadTooLarge, Unavailable
from assay.modelling.queries import ThresholdQuery, answer_threshold_query, parse_threshold_query
from assay.serving import tokens
from assay.serving.explain import check_explain
from assay.serving.features import FeatureTable
from assay.serving.scoring import Scorer
from assay.settings import Settings
from assay.web.limits import in_thread
from assay.web.metrics import CONTENT_TYPE, Metrics
from assay.workspace import Workspace

T = TypeVar("T")

# Requests with at most this many (item, model) pairs run on the event loop when all I/O is local.
INLINE_WORK = 16
# A POST /v1/scores body larger than this is parsed on the scoring thread, not on the event loop:
# parsing a 1,000-item body (~150 KB) takes about a millisecond, which would hold up every other
# connection, and its objects would wait on the loop for a thread. 16 single items are ~5 KB.
BIG_BODY_BYTES = 32 * 1024
# Statistics left out of GET /v1/models/{name}: long curves and the full threshold table
# (ask threshold queries instead).
_BULKY_STATS = ("thresholds", "pr_curve", "roc_curve")
_SCORE_KEYS = frozenset({"models", "items", "features", "explain"})
# What a query flag takes (``?features``, ``?features=true``, ``?explain=0``).
_YES = frozenset({"1", "true", "yes", ""})
_NO = frozenset({"0", "false", "no"})
# Threshold queries answered per GET /v1/models/{name}: each scans a table on the event loop.
MAX_THRESHOLD_QUERIES = 10


@dataclass
class Services:
    """What handlers need, built by the app's lifespan and kept on ``app.state.services``."""

    settings: Settings
    workspace: Workspace
    scorer: Scorer
    features: FeatureTable
    metrics: Metrics
    local_io: bool  # in-process cache and a SQLite store: lookups never wait on the network
    # Scoring threads that may run at once when all I/O is local (then scoring only computes):
    # one per core. More only take turns holding the interpreter, each with its request's objects
    # out of the caches and in the collector's way. None: anyio's default (work waits on the network).
    scoring_slots: CapacityLimiter | None = None


def services(request: Request) -> Services:
    return request.app.state.services


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


# --- request parsing ------------------------------------------------------------------


def parse_json(body: bytes, what: str = "the request") -> Any:
    """``body`` as JSON; an empty or malformed body is the client's error, naming ``what``."""
    if not body:
        raise MalformedRequest(f"{what} needs a JSON body", field="body")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedRequest(f"{what} is not valid JSON: {exc}", field="body") from None


async def read_json(request: Request) -> Any:
    return parse_json(await request.body())


def json_object(payload: Any, allowed: frozenset[str], required: Sequence[str] = ()) -> dict[str, Any]:
    """``payload`` as an object with only ``allowed`` keys and every ``required`` one."""
    if not isinstance(payload, dict):
        raise InvalidInput("the body must be a JSON object", field="body")
    unknown = sorted(k for k in payload if k not in allowed)
    if unknown:
        raise InvalidInput(
            f"unknown field {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}", field=unknown[0]
        )
    for key in required:
        if key not in payload:
            raise InvalidInput(f"the field {key!r} is required", field=key)
    return payload


def model_refs(value: Any) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise InvalidInput(
            'models must be a non-empty list of model names, e.g. ["damaging"]', field="models"
        )
    return list(dict.fromkeys(value))


def bounded_list(value: Any, field: str, limit: int, *, per: int = 1) -> list[Any]:
    """A JSON list of at most ``limit`` entries (counting each ``per`` times); 413 above."""
    if not isinstance(value, list):
        raise InvalidInput(f"{field} must be a list", field=field)
    if len(value) * per > limit:
        raise PayloadTooLarge(
            f"{len(value)} {field} x {per} model(s) is more than the {limit} this server takes per request; "
            "split the request",
            field=field,
            code="too_many_items",
        )
    return value


def query_flag(request: Request, name: str) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return False
    lowered = raw.lower()
    if lowered in _YES:
        return True
    if lowered in _NO:
        return False
    raise InvalidInput(f"{name} must be true or false", field=name)


def query_explain(request: Request) -> int:
    raw = request.query_params.get("explain")
    if raw is None:
        return 0
    if raw.isascii() and raw.isdigit() and len(raw) <= 3:  # str.isdigit also takes "²"
        return check_explain(int(raw))
    if raw.lower() in _YES | _NO:
        return check_explain(query_flag(request, "explain"))
    return check_explain(raw)  # refused, with the message that says what explain takes


def body_flag(payload: Mapping[str, Any], name: str) -> bool:
    value = payload.get(name, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"{name} must be true or false", field=name)
    return value


async def run_scoring(
    request: Request, refs: Sequence[str], work: int, fn: Callable[..., T], *args: Any, explain: int = 0
) -> T:
    """Run ``fn`` inline when its work is small, local and bounded, else on a thread under the timeout.

    Inline work cannot be timed out, so it must be cheap for certain: few rows, no explanation
    (occlusion explanations of non-tree models cost a prediction per feature), and models that
    are already loaded (a first ``name@3`` reads its artifact from disk).
    """
    svc = services(request)
    if work <= INLINE_WORK and svc.local_io and not explain and svc.scorer.warm(refs):
        return fn(*args)
    return await in_thread(fn, *args, timeout_s=svc.settings.scoring_timeout_s, limiter=svc.scoring_slots)


async def require_token(request: Request) -> tokens.TokenInfo:
    token = tokens.bearer_token(request.headers.get("authorization"))
    engine = services(request).workspace.engine
    return await in_thread(
        tokens.verify_token, engine, token, timeout_s=services(request).settings.scoring_timeout_s
    )


# --- /v1 ------------------------------------------------------------------------------


def score_request(payload: Any, svc: Services) -> tuple[list[str], list[Any], bool, int]:
    """(model references, items, features, explain) of a ``POST /v1/scores`` body, checked."""
    payload = json_object(payload, _SCORE_KEYS, required=("models", "items"))
    refs = model_refs(payload["models"])
    items = bounded_list(payload["items"], "items", svc.settings.max_items_per_request, per=len(refs))
    return refs, items, body_flag(payload, "features"), check_explain(payload.get("explain", False))


async def post_scores(request: Request) -> Response:
    svc = services(request)
    body = await request.body()
    if len(body) > BIG_BODY_BYTES:
        # Parsed, scored and written out on the scoring thread: the event loop only moves bytes.
        def whole() -> bytes:
            refs, items, features, explain = score_request(parse_json(body), svc)
            return orjson.dumps(svc.scorer.score(refs, items, features=features, explain=explain))

        answer = await in_thread(whole, timeout_s=svc.settings.scoring_timeout_s, limiter=svc.scoring_slots)
        return Response(answer, media_type="application/json")
    refs, items, features, explain = score_request(parse_json(body), svc)

    def score() -> dict[str, Any]:
        return svc.scorer.score(refs, items, features=features, explain=explain)

    return json_response(await run_scoring(request, refs, len(items) * len(refs), score, explain=explain))


async def get_score(request: Request) -> Response:
    svc = services(request)
    ref, item_id = request.path_params["model"], request.path_params["item_id"]
    features, explain = query_flag(request, "features"), query_explain(request)

    def score() -> dict[str, Any]:
        return {
            "scores": {item_id: {ref: svc.scorer.score_one(ref, item_id, features=features, explain=explain)}}
        }

    return json_response(await run_scoring(request, [ref], 1, score, explain=explain))


async def list_models(request: Request) -> Response:
    infos = services(request).scorer.models()
    return json_response(
        {
            "models": [
                {"name": i.name, "task": i.task, "versions": i.versions, "aliases": i.aliases} for i in infos
            ]
        }
    )


def threshold_queries(request: Request) -> list[tuple[str, ThresholdQuery]]:
    """The ``?threshold=`` queries, each parsed (in linear time, refused above its length cap).

    Parsed before any table is read, and at most ``MAX_THRESHOLD_QUERIES`` of them: each answer
    scans the threshold table on the event loop, and one URL could otherwise carry thousands.
    """
    raw = request.query_params.getlist("threshold")
    if len(raw) > MAX_THRESHOLD_QUERIES:
        raise MalformedRequest(
            f"{len(raw)} threshold queries; at most {MAX_THRESHOLD_QUERIES} are answered per request",
            field="threshold",
            code="too_many_queries",
        )
    return [(query, parse_threshold_query(query)) for query in raw]


async def get_model(request: Request) -> Response:
    """What a product needs to use a model, and answers to ``?threshold=`` queries."""
    scorer = services(request).scorer
    served = scorer.model(request.path_params["model"])
    loaded = served.loaded
    info = scorer.info(served.name)
    wanted_class = request.query_params.get("class") or loaded.positive
    queries = threshold_queries(request)
    thresholds = []
    if queries:
        tables = loaded.evaluation["thresholds"]
        if wanted_class is None or wanted_class not in tables:
            raise InvalidInput(
                f"name the class the threshold is for with ?class= (one of {', '.join(tables)})",
                field="class",
            )
        table = tables[wanted_class]
        for raw, query in queries:
            thresholds.append(
                {"query": raw, "class": wanted_class, "answer": answer_threshold_query(table, query)}
            )
    body = {
        "name": served.name,
        "version": served.version_label,
        "task": info.task,
        "aliases": info.aliases,
        "versions": info.versions,
        "classes": loaded.classes,
        "positive": loaded.positive,
        "decision_threshold": served.threshold,
        "features": loaded.schema.to_dict()["features"],
        "operating_points": loaded.operating_points,
        "statistics": {k: v for k, v in loaded.evaluation.items() if k not in _BULKY_STATS},
        "created_at": loaded.record.created_at.isoformat(),
        "candidate": loaded.record.candidate,
        "explanation_method": loaded.predictor.explanation_method,
    }
    if queries:
        body["thresholds"] = thresholds
    return json_response(body)


async def post_precache(request: Request) -> Response:
    svc = services(request)
    await require_token(request)
    payload = json_object(await read_json(request), frozenset({"models", "ids"}), required=("models", "ids"))
    refs = model_refs(payload["models"])
    ids = bounded_list(payload["ids"], "ids", svc.settings.max_items_per_request, per=len(refs))
    counts = await in_thread(svc.scorer.precache, refs, ids, timeout_s=svc.settings.scoring_timeout_s)
    return json_response(counts)


async def put_features(request: Request) -> Response:
    """Load (replace) rows of a model's feature table; every row is checked before any is written."""
    svc = services(request)
    await require_token(request)
    ref = request.path_params["model"]
    payload = json_object(await read_json(request), frozenset({"rows"}), required=("rows",))
    rows = bounded_list(payload["rows"], "rows", svc.settings.max_items_per_request)
    served = svc.scorer.model(ref)

    def load() -> list[str]:
        ids = svc.features.load_records(served.name, rows, served.loaded.schema)
        svc.scorer.invalidate(served.name, ids)
        return ids

    ids = await in_thread(load, timeout_s=svc.settings.scoring_timeout_s)
    return json_response({"model": served.name, "loaded": len(ids)})


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready to take work: the model table is loaded and the worker is not full.

    ``/healthz`` stays liveness (the process answers); this one turns 503 while every request
    slot is taken, so a load balancer sends new work elsewhere until slots free up.
    """
    scorer = services(request).scorer
    if not scorer.ready:
        raise Unavailable("the model table is not loaded yet", code="not_ready")
    capacity = request.app.state.capacity
    if capacity.saturated:
        raise Unavailable(
            f"the server is working on {capacity.in_flight} requests, its most; retry shortly",
            code="saturated",
        )
    return json_response(
        {
            "status": "ready",
            "models": len(scorer.models()),
            "loaded": len(scorer.loaded()),
            "in_flight": capacity.in_flight,
            "max_in_flight": capacity.max_total,
        }
    )


async def metrics(request: Request) -> Response:
    return Response(
        services(request).metrics.render(), media_type=None, headers={"Content-Type": CONTENT_TYPE}
    )


def routes() -> list[BaseRoute]:
    return [
        # The hot route first: the router tries routes in order.
        Route("/v1/scores", post_scores, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/v1/scores/{model}/{item_id}", get_score, methods=["GET"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model}", get_model, methods=["GET"]),
        Route("/v1/precache", post_precache, methods=["POST"]),
        Route("/v1/features/{model}", put_features, methods=["PUT"]),
    ]
