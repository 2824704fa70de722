"""The app factory: ``create_app(settings)`` wires routes, middleware, error handlers and the lifespan.

Creating the app does no work; the lifespan opens the workspace, builds the
scorer, reads the model table (readiness), and keeps it fresh through the
store's notices (``assay.store.notices``: PostgreSQL NOTIFY, else a poll every
``alias_refresh_s``), so promotions made on any host are followed at once
without a restart, and requests never wait on the store for it.

With ``grpc_port`` set, the lifespan also starts the Open Inference
Protocol's gRPC endpoint over the same services (``web.oip_grpc``), and stops
it before closing them.

Handlers reach the shared objects through ``request.app.state``:
``services`` (``api.Services``), and for the review pages also ``workspace``
and ``scorer`` — the review pages score through the same ``Scorer``.

The review pages contribute ``routes()`` (``assay.web.review``) and
``error_page(request, error) -> Response`` (``assay.web.pages``), the HTML
rendering of errors on those pages.

A client that hangs up before its body is read is no server error: it is
answered (to nobody) 499, or 408 when the server cut it off for sending its
body too slowly, and counted, without a traceback. The lifespan hands the
settings and metrics to the server as lifespan state, so that the HTTP
protocol of ``assay serve`` applies the connection limits of these settings
and counts what it refuses before any request exists (``assay.web.server``).
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from assay.serving.cache import open_cache
from assay.serving.features import FeatureTable
from assay.serving.scoring import Scorer
from assay.settings import Settings
from assay.store.notices import NoticeWatcher
from assay.web import api, background, errors, oip_routes, openapi, pages, review
from assay.web.limits import (
    BODY_TIMED_OUT,
    SERVER_METRICS,
    SERVER_SETTINGS,
    Capacity,
    ClientClosedRequest,
    Limits,
    RequestTimeout,
)
from assay.web.metrics import Metrics, Timing
from assay.web.monitoring import Watch
from assay.web.monitoring import routes as monitoring_routes
from assay.web.retraining import routes as retraining_routes
from assay.web.unlearning import routes as unlearning_routes
from assay.workspace import Workspace

log = logging.getLogger(__name__)

# Seconds between full re-reads of the model table; notices bring alias moves at once.
FULL_REFRESH_S = 60.0
# Allocations between the collector's youngest-generation runs while serving (Python's default: 700).
GC_THRESHOLD = 10_000


def create_app(settings: Settings, *, metrics_dir: Path | None = None) -> Starlette:
    """The ASGI app over the workspace ``settings`` names.

    ``metrics_dir`` is prometheus_client's multiprocess folder when several workers
    share one ``/metrics`` (``assay serve --workers N`` sets it up).
    """
    metrics = Metrics(metrics_dir)
    capacity = Capacity(settings.max_concurrent_total)
    app = Starlette(
        routes=[
            *api.routes(),
            *oip_routes.routes(),
            *openapi.routes(),
            *monitoring_routes(),
            *unlearning_routes(),
            *retraining_routes(),
            *review.routes(),
        ],
        middleware=[
            Middleware(Timing, metrics=metrics),
            Middleware(
                Limits,
                max_body_bytes=settings.max_body_bytes,
                max_per_client=settings.max_concurrent_per_client,
                capacity=capacity,
            ),
        ],
        exception_handlers={
            **errors.exception_handlers(pages.error_page),
            ClientDisconnect: _client_gone,
        },
        lifespan=partial(_lifespan, settings=settings, metrics=metrics),
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.capacity = capacity
    return app


@asynccontextmanager
async def _lifespan(app: Starlette, *, settings: Settings, metrics: Metrics) -> AsyncIterator[dict[str, Any]]:
    """Open the workspace and the services over it, serve, then close them in reverse order."""
    workspace = await anyio.to_thread.run_sync(Workspace.open, settings)
    cache = open_cache(settings)
    features = FeatureTable(workspace.engine)
    watch = Watch(workspace, settings, metrics)  # the prediction log, monitor checks and alerts
    # The server loads every alias's version up front: no request waits on a load.
    scorer = Scorer(
        workspace.registry, features, cache, observer=metrics, prediction_log=watch.log, preload=True
    )
    # Alias moves and feature changes made by any process on any host reach this one at once.
    watcher = NoticeWatcher(workspace.engine, poll_s=settings.alias_refresh_s)
    scorer.follow(watcher)
    grpc_endpoint: Any = None  # oip_grpc.GrpcEndpoint, when ASSAY_GRPC_PORT is set
    thresholds: tuple[int, int, int] | None = None  # the collector's, restored at the end
    try:
        watcher.start()
        await anyio.to_thread.run_sync(scorer.refresh)
        local_io = not settings.redis_url and settings.store_url.startswith("sqlite")
        app.state.services = api.Services(
            settings=settings,
            workspace=workspace,
            scorer=scorer,
            features=features,
            metrics=metrics,
            local_io=local_io,
            scoring_slots=anyio.CapacityLimiter(scorer.threads) if local_io else None,
        )
        app.state.workspace, app.state.scorer, app.state.watch = workspace, scorer, watch
        if settings.grpc_port:  # the Open Inference Protocol over gRPC, on the same services
            from assay.web import oip_grpc  # grpcio is the optional extra assay[grpc]

            grpc_endpoint = oip_grpc.start(app.state.services)
        # What start-up built (libraries, models) lives as long as the server: out of the
        # collector's way, a big request's many small objects no longer make every full
        # collection walk it (a 1,000-item request ran about a quarter faster).
        gc.collect()
        gc.freeze()
        # A 1,000-item request makes some 6,000 containers that live until it is answered and are
        # then freed by their counts: at the default threshold (700 allocations) the collector ran
        # about 9 times per such request just to walk them, ~0.2 ms of its 2.5 ms of CPU.
        thresholds = gc.get_threshold()
        gc.set_threshold(GC_THRESHOLD, *thresholds[1:])
        async with anyio.create_task_group() as tasks:
            # Re-read the model table now and then besides the notices: a version that failed to load is
            # tried again; a failed refresh keeps the old table.
            tasks.start_soon(
                background.every,
                FULL_REFRESH_S,
                scorer.refresh,
                "refreshing the model table failed; serving the previous one",
            )
            tasks.start_soon(watch.run)
            # Lifespan state: what the HTTP protocol of ``assay serve`` reads (assay.web.server).
            yield {SERVER_SETTINGS: settings, SERVER_METRICS: metrics}
            tasks.cancel_scope.cancel()
    finally:
        watcher.stop()
        if grpc_endpoint is not None:
            await anyio.to_thread.run_sync(grpc_endpoint.stop)
        if thresholds is not None:
            gc.set_threshold(*thresholds)
        gc.unfreeze()  # what this server held may be collected again once it stops
        scorer.close()
        watch.close()  # writes the log rows still queued
        cache.close()
        workspace.close()


async def _client_gone(request: Request, exc: Exception) -> Response:
    """The body stopped arriving: the client hung up (499) or the server timed it out (408).

    The response goes nowhere (the connection is gone); its status labels the request in metrics.
    """
    extensions = request.scope.get("extensions") or {}
    error: ClientClosedRequest | RequestTimeout
    if BODY_TIMED_OUT in extensions:
        error = RequestTimeout("the request body did not arrive in time", field="body")
    else:
        error = ClientClosedRequest("the client closed the connection before sending its whole body")
    request.app.state.metrics.error(error.code)
    return errors.error_response(error)


def app_from_environment() -> Starlette:
    """Entry point of each ``assay serve`` worker (uvicorn ``--factory``): settings come from ``ASSAY_*``."""
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")  # prometheus_client's own variable
    return create_app(Settings.load(), metrics_dir=Path(metrics_dir) if metrics_dir else None)
