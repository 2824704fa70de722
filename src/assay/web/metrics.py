"""Prometheus metrics of the server: requests, latency, scores, cache, errors, loaded versions.

Each app has its own ``Metrics`` (its own collector registry, so several apps in
one process never collide). With several workers, prometheus_client's
multiprocess mode is used: ``assay serve`` points ``PROMETHEUS_MULTIPROC_DIR``
at a fresh folder before the workers start, every worker writes its samples
there, and ``/metrics`` (answered by whichever worker) sums them.

``Metrics`` is also the scorer's ``ScoringObserver``, and ``Timing`` the ASGI
middleware that counts and times every request by its route template.
"""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Scoring answers in about a millisecond; the buckets resolve that range and still show slow batches.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Metrics:
    """The server's metrics; ``render()`` is the body of ``/metrics``."""

    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "assay_requests", "HTTP requests answered.", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "assay_request_duration_seconds",
            "Time to answer an HTTP request.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter("assay_errors", "Error responses by error code.", ["code"], registry=r)
        self.scores = Counter(
            "assay_scores",
            "Item scores computed (cache hits not included).",
            ["model", "version"],
            registry=r,
        )
        self.item_errors = Counter(
            "assay_item_errors", "Items that could not be scored.", ["model"], registry=r
        )
        self.cache = Counter("assay_cache_lookups", "Score cache lookups.", ["result"], registry=r)
        self.loaded = Gauge(
            "assay_model_loaded",
            "Model versions loaded in the server (1 per loaded version).",
            ["model", "version"],
            registry=r,
            multiprocess_mode="max",
        )
        self.in_flight = Gauge(
            "assay_requests_in_flight",
            "Requests being answered now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self._cache_hit = self.cache.labels("hit")
        self._cache_miss = self.cache.labels("miss")
        self._scored: dict[tuple[str, int], Counter] = {}

    def render(self) -> bytes:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=str(self.multiprocess_dir))
        return generate_latest(merged)

    def error(self, code: str) -> None:
        self.errors.labels(code).inc()

    # --- ScoringObserver ------------------------------------------------------------

    def cache_lookups(self, hits: int, misses: int) -> None:
        if hits:
            self._cache_hit.inc(hits)
        if misses:
            self._cache_miss.inc(misses)

    def items_scored(self, model: str, version: int, scored: int, failed: int) -> None:
        if scored:
            counter = self._scored.get((model, version))
            if counter is None:
                counter = self._scored[(model, version)] = self.scores.labels(model, str(version))
            counter.inc(scored)
        if failed:
            self.item_errors.labels(model).inc(failed)

    def model_loaded(self, model: str, version: int) -> None:
        self.loaded.labels(model, str(version)).set(1)

    def model_unloaded(self, model: str, version: int) -> None:
        self.loaded.labels(model, str(version)).set(0)


class Timing:
    """ASGI middleware: counts and times each request under its route template (not its raw path)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.in_flight.dec()
            route = scope.get("route")
            # Unmatched paths share one label so a scan of random URLs cannot blow up the series count.
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            key = (method, template, status)
            series = self._series.get(key)
            if series is None:
                series = (
                    self.metrics.requests.labels(method, template, str(status)),
                    self.metrics.latency.labels(template),
                )
                self._series[key] = series
            series[0].inc()
            series[1].observe(time.perf_counter() - started)
