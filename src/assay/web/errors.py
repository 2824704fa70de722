"""The one place where errors become HTTP responses.

Every error the server answers has one JSON shape,
``{"error": {"code": "...", "message": "...", "field": "..."}}`` (``field``
only when one is at fault), with the status its ``AssayError`` class carries —
except under ``/v2``, where the Open Inference Protocol's clients expect the
protocol's own shape, ``{"error": "message"}`` (same status; Triton's and
KServe's clients read the message as a string).
API paths (``/v1``, ``/v2``, health, metrics, OpenAPI) always get JSON; other
paths (the review pages) get the page the review module renders, when it
supplies a renderer. Routing errors (404, 405) and the limits middleware use
the same shapes; anything else is a bug: logged, answered 500 without details.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from assay.errors import AssayError, MalformedRequest, NotFound

log = logging.getLogger(__name__)

API_PREFIXES = ("/v1/", "/v2/", "/v2", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs")

# Renders an error as an HTML page for the review pages; given by assay.web.pages.
PageRenderer = Callable[[Request, AssayError], Response | Awaitable[Response]]


class MethodNotAllowed(AssayError):
    status = 405
    code = "method_not_allowed"

    def __init__(self, message: str, *, allow: str = "") -> None:
        super().__init__(message)
        self.allow = allow


class InternalError(AssayError):
    status = 500
    code = "internal_error"


def error_body(exc: AssayError, *, oip: bool = False) -> bytes:
    """The JSON of ``exc``; ``oip``: the Open Inference Protocol's ``{"error": "message"}``."""
    if oip:
        return orjson.dumps({"error": exc.message})
    return orjson.dumps({"error": exc.to_dict()})


def error_response(
    exc: AssayError, headers: Mapping[str, str] | None = None, *, oip: bool = False
) -> Response:
    """The JSON response of ``exc``: its status, its error shape, and the headers its status needs."""
    extra = dict(headers or {})
    if exc.status == 401:
        extra.setdefault("WWW-Authenticate", 'Bearer realm="assay"')
    elif exc.status in (429, 503):
        extra.setdefault("Retry-After", "1")
    return Response(
        error_body(exc, oip=oip), status_code=exc.status, media_type="application/json", headers=extra
    )


def is_api_path(path: str) -> bool:
    return path == "/" or path.startswith(API_PREFIXES)


def is_oip_path(path: str) -> bool:
    """Paths of the Open Inference Protocol, whose errors take the protocol's shape."""
    return path == "/v2" or path.startswith("/v2/")


def from_http_exception(exc: HTTPException) -> AssayError:
    """Starlette's own errors (no route, wrong method) in assay's terms."""
    if exc.status_code == 404:
        return NotFound("no such endpoint; see /openapi.json", code="no_route")
    if exc.status_code == 405:
        allow = (exc.headers or {}).get("Allow", "")
        return MethodNotAllowed("this endpoint does not take that method; see /openapi.json", allow=allow)
    err = MalformedRequest(str(exc.detail))
    err.status = exc.status_code
    return err


def exception_handlers(page: PageRenderer | None = None) -> dict[Any, Callable[..., Any]]:
    """Handlers for ``Starlette(exception_handlers=...)``."""

    async def render(request: Request, exc: AssayError) -> Response:
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            metrics.error(exc.code)
        if page is not None and not is_api_path(request.url.path):
            response = page(request, exc)
            return await response if inspect.isawaitable(response) else response
        headers = {"Allow": exc.allow} if isinstance(exc, MethodNotAllowed) and exc.allow else None
        return error_response(exc, headers, oip=is_oip_path(request.url.path))

    async def on_assay_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AssayError)
        if exc.status >= 500:
            log.error("%s %s: %s", request.method, request.url.path, exc.message)
        return await render(request, exc)

    async def on_http_exception(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return await render(request, from_http_exception(exc))

    async def on_bug(request: Request, exc: Exception) -> Response:
        # ServerErrorMiddleware logs the traceback and re-raises after this response is sent.
        error = InternalError("internal error; it has been logged")
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            metrics.error(error.code)
        return error_response(error, oip=is_oip_path(request.url.path))

    return {AssayError: on_assay_error, HTTPException: on_http_exception, Exception: on_bug}
