"""Monitoring in the server: the prediction log sink, the periodic check, alerts, labels and pages.

``Watch`` is built by the app's lifespan. It owns the ``PredictionLog`` the scorer writes to,
the background check of closed windows every ``monitor_interval_s`` (on a worker thread, never
on the event loop), webhook delivery (its own thread), and the Prometheus series: monitor states
(``assay_monitor_state``, 0 ok / 1 warning / 2 alert), rows the log wrote and dropped (by reason)
and webhook attempts (by result).

Routes: ``POST /v1/labels`` (a token) adds ground truth, each item accepted or refused with a
reason; ``GET /v1/monitors`` lists monitor states and recent events; ``GET
/v1/monitors/{model}/report`` (a token: it reads the whole period) is the analysis as JSON. The
admin pages ``/review/monitoring`` and ``/review/monitoring/{model}`` show the same report as
``assay monitor report`` to logged-in admins.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from dataclasses import dataclass
from functools import partial
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from assay.errors import InvalidInput
from assay.monitoring import alerts, checks, labels, monitor, report
from assay.monitoring.log import PredictionLog, open_log
from assay.monitoring.windows import parse_time
from assay.settings import Settings
from assay.web import background, sessions
from assay.web.api import bounded_list, json_object, json_response, read_json, require_token, services
from assay.web.limits import in_thread
from assay.web.metrics import Metrics
from assay.web.openapi_schema import (
    ERROR,
    MODEL_REF,
    NAME,
    TOKEN,
    closed_object,
    json_body,
    json_content,
    path_param,
    ref,
)
from assay.workspace import Workspace

log = logging.getLogger(__name__)

PAGE_PREFIX = "/review/monitoring"
# The report page is self-contained: inline CSS and SVG, no script, nothing fetched.
_REPORT_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
_LABEL_KEYS = frozenset({"model", "labels"})
MAX_EVENTS = 50


@dataclass(frozen=True)
class _Series:
    """Monitoring's Prometheus series of one app's metrics registry."""

    dropped: Counter
    written: Counter
    state: Gauge
    webhooks: Counter


# One set per registry: an app's lifespan may run more than once (tests), and a registry
# refuses a series it already has.
_SERIES: weakref.WeakKeyDictionary[CollectorRegistry, _Series] = weakref.WeakKeyDictionary()
_SERIES_LOCK = threading.Lock()


def _series(metrics: Metrics) -> _Series:
    r = metrics.registry
    with _SERIES_LOCK:
        series = _SERIES.get(r)
        if series is None:
            series = _Series(
                dropped=Counter(
                    "assay_prediction_log_dropped",
                    "Scored rows the prediction log dropped, by reason.",
                    ["reason"],
                    registry=r,
                ),
                written=Counter(
                    "assay_prediction_log_written", "Scored rows written to the prediction log.", registry=r
                ),
                state=Gauge(
                    "assay_monitor_state",
                    "State of each monitor: 0 ok, 1 warning, 2 alert.",
                    ["model", "monitor"],
                    registry=r,
                    multiprocess_mode="max",
                ),
                webhooks=Counter(
                    "assay_alert_webhooks", "Webhook delivery attempts, by result.", ["result"], registry=r
                ),
            )
            _SERIES[r] = series
        return series


class Watch:
    """Monitoring's share of the server (see the module docstring); one per app."""

    def __init__(self, workspace: Workspace, settings: Settings, metrics: Metrics) -> None:
        self.workspace = workspace
        self.settings = settings
        series = _series(metrics)
        self.dropped, self.written, self.state, self.webhooks = (
            series.dropped,
            series.written,
            series.state,
            series.webhooks,
        )
        self.log: PredictionLog | None = open_log(
            workspace.log,
            settings,
            on_drop=lambda reason, n: self.dropped.labels(reason).inc(n),
            on_write=self.written.inc,
        )
        self.sender = alerts.sender_from(
            settings, workspace.engine, on_result=lambda result: self.webhooks.labels(result).inc()
        )
        self.sender.start()
        self.update_gauges()

    async def run(self) -> None:
        """Check closed windows forever (every ``monitor_interval_s``; 0 turns it off)."""
        every = self.settings.monitor_interval_s
        if every <= 0:
            return
        await background.every(every, self.check_all, "checking the monitors failed; retrying next round")

    def check_all(self, now: float | None = None) -> list[checks.CheckResult]:
        ws = self.workspace
        results = []
        for name in checks.watched_models(ws.registry):
            try:
                results.append(
                    checks.check(
                        ws.engine,
                        ws.log,
                        ws.registry,
                        name,
                        now=now,
                        extra_labels=partial(labels.campaign_labels, ws.engine, name),
                    )
                )
            except Exception:
                log.exception("checking the monitors of %s failed", name)
        self.update_gauges()
        self.sender.wake()
        return results

    def update_gauges(self) -> None:
        for s in alerts.states(self.workspace.engine):
            self.state.labels(s["model"], s["monitor"]).set(alerts.STATE_VALUES[s["state"]])

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
        self.sender.close()


# --- the JSON API ------------------------------------------------------------------------------


async def post_labels(request: Request) -> Response:
    """Ground truth for logged scores: ``{"model": name, "labels": [{"id", "label"}]}``."""
    svc = services(request)
    token = await require_token(request)
    payload = json_object(await read_json(request), _LABEL_KEYS, required=("model", "labels"))
    model = payload["model"]
    if not isinstance(model, str):
        raise InvalidInput("model must be a model name", field="model")
    items = bounded_list(payload["labels"], "labels", svc.settings.max_items_per_request)
    registry = svc.workspace.registry

    def add() -> list[labels.Outcome]:
        registry.model(model)  # an unknown model refuses the request (404)

        def classes_of(version: int) -> list[str]:
            return list(registry.card(registry.get(model, version))["classes"])

        return labels.add_labels(
            svc.workspace.engine,
            svc.workspace.log,
            model,
            items,
            source=f"api:{token.name}"[:300],
            classes_of=classes_of,
        )

    outcomes = await in_thread(add, timeout_s=svc.settings.scoring_timeout_s)
    accepted = sum(o.accepted for o in outcomes)
    return json_response(
        {
            "model": model,
            "accepted": accepted,
            "refused": len(outcomes) - accepted,
            "results": [o.to_dict() for o in outcomes],
        }
    )


async def get_monitors(request: Request) -> Response:
    engine = services(request).workspace.engine
    model = request.query_params.get("model") or None

    def load() -> dict[str, Any]:
        return {
            "monitors": alerts.states(engine, model),
            "events": alerts.events(engine, model, limit=MAX_EVENTS),
        }

    return json_response(await run_in_threadpool(load))


def _analysis_args(request: Request) -> dict[str, Any]:
    q = request.query_params
    now = time.time()
    window = q.get("window") or None
    return {
        "since": parse_time(q["since"], now=now, field="since") if q.get("since") else None,
        "until": parse_time(q["until"], now=now, field="until") if q.get("until") else None,
        "window": window,
        "with_psi": q.get("psi", "").lower() in ("1", "true", "yes"),
    }


def _analyse(request: Request, ref: str) -> monitor.Analysis:
    ws = services(request).workspace
    name = ref.partition("@")[0]
    return monitor.analyse(
        ws.engine,
        ws.log,
        ws.registry,
        ref,
        extra_labels=labels.campaign_labels(ws.engine, name),
        **_analysis_args(request),
    )


async def get_report(request: Request) -> Response:
    await require_token(request)
    svc = services(request)
    ref = request.path_params["model"]
    analysis = await in_thread(_analyse, request, ref, timeout_s=max(60.0, svc.settings.scoring_timeout_s))
    return json_response(analysis.to_dict())


# --- admin pages -----------------------------------------------------------------------------------


async def monitoring_page(request: Request) -> Response:
    await sessions.require_user(request, admin=True)
    ws = services(request).workspace

    def load() -> dict[str, Any]:
        states = alerts.states(ws.engine)
        by_model: dict[str, list[dict[str, Any]]] = {}
        for s in states:
            by_model.setdefault(s["model"], []).append(s)
        return {
            "models": [
                {
                    "name": name,
                    "worst": max(
                        (alerts.STATE_VALUES[s["state"]] for s in by_model.get(name, [])), default=0
                    ),
                    "monitors": by_model.get(name, []),
                }
                for name in checks.watched_models(ws.registry)
            ],
            "events": alerts.events(ws.engine, limit=MAX_EVENTS),
        }

    return HTMLResponse(_listing(await run_in_threadpool(load)), headers=_REPORT_HEADERS)


async def model_page(request: Request) -> Response:
    await sessions.require_user(request, admin=True)
    ref = request.path_params["model"]
    analysis = await run_in_threadpool(_analyse, request, ref)
    return HTMLResponse(report.render_html(analysis, back=PAGE_PREFIX), headers=_REPORT_HEADERS)


def _listing(context: dict[str, Any]) -> str:
    return (
        report.environment()
        .get_template("monitoring.html")
        .render(prefix=PAGE_PREFIX, names=["ok", "warning", "alert"], **context)
    )


def routes() -> list[BaseRoute]:
    """Monitoring's routes; the pages must come before the review pages' mount to be reached."""
    return [
        Route("/v1/labels", post_labels, methods=["POST"]),
        Route("/v1/monitors", get_monitors, methods=["GET"]),
        Route("/v1/monitors/{model}/report", get_report, methods=["GET"]),
        Route(PAGE_PREFIX, monitoring_page, methods=["GET"]),
        Route(PAGE_PREFIX + "/{model}", model_page, methods=["GET"]),
    ]


# --- the OpenAPI document's part ---------------------------------------------------------------

TAG = {"name": "monitoring", "description": "Ground-truth labels, monitor states and monitoring reports."}


def monitoring_schemas() -> dict[str, Any]:
    outcome = {
        "type": "object",
        "required": ["index", "id", "status"],
        "properties": {
            "index": {"type": "integer"},
            "id": {"type": "string", "nullable": True},
            "status": {"type": "string", "enum": ["accepted", "refused"]},
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    }
    return {
        "LabelsRequest": closed_object(
            {
                "model": {
                    **NAME,
                    "description": "A model name; labels are checked against the scores it logged.",
                },
                "labels": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "id": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                            "label": {"anyOf": [{"type": "string"}, {"type": "boolean"}]},
                        },
                    },
                },
            }
        ),
        "LabelsResponse": {
            "type": "object",
            "required": ["model", "accepted", "refused", "results"],
            "properties": {
                "model": {"type": "string"},
                "accepted": {"type": "integer"},
                "refused": {"type": "integer"},
                "results": {"type": "array", "items": outcome},
            },
        },
        "Monitors": {
            "type": "object",
            "required": ["monitors", "events"],
            "properties": {
                "monitors": {"type": "array", "items": {"type": "object"}},
                "events": {"type": "array", "items": {"type": "object"}},
            },
        },
        "MonitoringReport": {
            "type": "object",
            "required": ["model", "version", "window", "windows"],
            "properties": {
                "model": {"type": "string"},
                "version": {"type": "integer"},
                "window": {"type": "string"},
                "windows": {"type": "array", "items": {"type": "object"}},
            },
        },
    }


def monitoring_paths() -> dict[str, Any]:
    text = {"type": "string"}
    period = [
        {
            "name": "since",
            "in": "query",
            "schema": text,
            "description": "ISO time, a duration back (7d) or UNIX seconds.",
        },
        {
            "name": "until",
            "in": "query",
            "schema": text,
            "description": "The end of the period (same forms); default now.",
        },
        {
            "name": "window",
            "in": "query",
            "schema": text,
            "description": "A duration (1h, 1d) or a number of rows.",
        },
        {
            "name": "psi",
            "in": "query",
            "schema": {"type": "boolean"},
            "description": "Add each column's PSI.",
        },
    ]
    return {
        "/v1/labels": {
            "post": {
                "summary": "Ground truth for logged scores: each label accepted or refused with a reason",
                "operationId": "post_labels",
                "security": TOKEN,
                "requestBody": json_body("LabelsRequest"),
                "responses": {"200": json_content(ref("LabelsResponse")), **ERROR},
            }
        },
        "/v1/monitors": {
            "get": {
                "summary": "Every monitor's state (ok, warning, alert) and the latest events",
                "operationId": "get_monitors",
                "parameters": [
                    {"name": "model", "in": "query", "schema": text, "description": "One model only."}
                ],
                "responses": {"200": json_content(ref("Monitors")), **ERROR},
            }
        },
        "/v1/monitors/{model}/report": {
            "get": {
                "summary": "Drift, performance and alerts of a model over a period, window by window",
                "operationId": "get_monitoring_report",
                "security": TOKEN,
                "parameters": [
                    path_param("model", "A model: `name`, `name@3` or `name@alias`.", MODEL_REF),
                    *period,
                ],
                "responses": {"200": json_content(ref("MonitoringReport")), **ERROR},
            }
        },
    }
