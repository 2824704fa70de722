"""Protecting the service: body size, concurrency per client and in total, scoring time.

``Limits`` is a plain ASGI middleware (no per-request objects beyond a counter
bump, so it costs next to nothing on the hot path):

* a body larger than ``max_body_bytes`` -> 413, from ``Content-Length`` before
  anything is read, or while a chunked body streams in;
* more than ``max_concurrent_per_client`` requests in flight from one client
  address -> 429 (uvicorn puts a trusted proxy's ``X-Forwarded-For`` there:
  one on 127.0.0.1, or listed in ``FORWARDED_ALLOW_IPS``);
* more than ``max_concurrent_total`` in flight in this worker -> 503.

Health, readiness and metrics are exempt, so an overloaded server can still be
watched; ``Capacity`` is the count they read (``/readyz`` answers 503 while
the server is full). Items per request are checked where the body is parsed
(``api.py``), and ``in_thread`` runs heavy scoring off the event loop under
the scoring timeout (504).

What happens below the app — slow or oversized headers, bodies that never
finish, too many connections from one address — is guarded by the HTTP
protocol ``assay serve`` runs (``assay.web.server``); the errors it answers
with, and the mark it leaves on a request whose body timed out, live here so
that the app can count them without importing the server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from assay.errors import AssayError, PayloadTooLarge, ScoringTimeout, TooManyRequests, Unavailable
from assay.web.errors import error_response, is_oip_path

T = TypeVar("T")

EXEMPT_PREFIXES = ("/healthz", "/readyz", "/metrics", "/v2/health/")
# Scope extension the server adds to a request whose body did not arrive in time ({"timeout_s": …}).
BODY_TIMED_OUT = "assay.body_timed_out"
# Lifespan-state keys under which the app hands the server its settings and metrics.
SERVER_SETTINGS = "assay.settings"
SERVER_METRICS = "assay.metrics"


class RequestTimeout(AssayError):
    """The client did not send its headers or its body in time (the connection is closed)."""

    status = 408
    code = "request_timeout"


class HeadersTooLarge(AssayError):
    status = 431
    code = "headers_too_large"


class ClientClosedRequest(AssayError):
    """The client hung up before its request was read: its mistake, not a server error.

    499 is nginx's status for this; nobody receives it, it only labels the request in metrics.
    """

    status = 499
    code = "client_closed_request"


class Capacity:
    """Requests in flight in this worker against the most it takes; shared by ``Limits`` and ``/readyz``."""

    def __init__(self, max_total: int) -> None:
        self.max_total = max_total
        self.in_flight = 0

    @property
    def saturated(self) -> bool:
        return self.in_flight >= self.max_total


class Limits:
    """ASGI middleware enforcing body size and concurrency limits (see module doc)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        max_per_client: int,
        capacity: Capacity,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_per_client = max_per_client
        self.capacity = capacity  # the total cap; /readyz reads the same count
        self._per_client: dict[str, int] = {}

    @property
    def in_flight(self) -> int:
        return self.capacity.in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(EXEMPT_PREFIXES):
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None and length > self.max_body_bytes:
            await self._reject(scope, receive, send, self._too_large())
            return
        capacity = self.capacity
        if capacity.in_flight >= capacity.max_total:
            await self._reject(scope, receive, send, Unavailable("the server is at capacity; retry shortly"))
            return
        client = _client_key(scope)
        mine = self._per_client.get(client, 0)
        if mine >= self.max_per_client:
            await self._reject(
                scope,
                receive,
                send,
                TooManyRequests(f"more than {self.max_per_client} requests in flight from this client"),
            )
            return
        capacity.in_flight += 1
        self._per_client[client] = mine + 1
        try:
            await self.app(scope, receive if length is not None else self._counting(receive), send)
        finally:
            capacity.in_flight -= 1
            left = self._per_client[client] - 1
            if left:
                self._per_client[client] = left
            else:
                del self._per_client[client]

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"the request body is larger than {self.max_body_bytes} bytes", field="body")

    def _counting(self, receive: Receive) -> Receive:
        """``receive`` for a body without Content-Length: refuse it once it grows past the limit."""
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise self._too_large()  # raised inside the endpoint's body read: answered 413
            return message

        return counted

    async def _reject(self, scope: Scope, receive: Receive, send: Send, exc: AssayError) -> None:
        app = scope.get("app")
        metrics = getattr(getattr(app, "state", None), "metrics", None)
        if metrics is not None:
            metrics.error(exc.code)
        await error_response(exc, oip=is_oip_path(scope["path"]))(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _client_key(scope: Scope) -> str:
    """Who a request is from, for per-client limits: its address.

    Not its ``Authorization`` header: the limit runs before any token is checked, and a client
    sending a different made-up token with each request would otherwise never be limited.
    """
    client = scope.get("client")
    return client[0] if client else "unknown"


async def in_thread(
    fn: Callable[..., T], *args: Any, timeout_s: float, limiter: anyio.CapacityLimiter | None = None
) -> T:
    """Run blocking work on a worker thread; ``ScoringTimeout`` (504) when it takes over ``timeout_s``
    (waiting for a slot of ``limiter`` included; None: anyio's default limiter).

    The thread cannot be stopped; its result is dropped when the deadline passes.
    """
    try:
        with anyio.fail_after(timeout_s):
            return await anyio.to_thread.run_sync(lambda: fn(*args), abandon_on_cancel=True, limiter=limiter)
    except TimeoutError:
        raise ScoringTimeout(f"scoring took longer than {timeout_s:g}s") from None
