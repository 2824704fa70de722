"""What every review page shares: the templates, the security headers, links, rendering and errors.

Server-rendered Jinja2 with one small script; every form works without it.
Errors raised by a page become HTML through ``error_page``, which
``web.errors`` calls for every non-API path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.engine import Engine
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from assay.errors import AssayError, InvalidInput
from assay.web import sessions
from assay.web.api import services

PREFIX = "/review"
HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
HEADERS = {
    # No inline script or style anywhere, so the policy can be strict.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


PAGE = 50  # rows per page of a list
MAX_OFFSET = 10_000_000


def offset(request: Request) -> int:
    """The ``offset`` query parameter of a paged list: a whole number, 0 when absent."""
    raw = request.query_params.get("offset", "0")
    if not raw.isdigit() or int(raw) > MAX_OFFSET:
        raise InvalidInput(f"offset must be a whole number from 0 to {MAX_OFFSET}", field="offset")
    return int(raw)


def url(path: str, **query: Any) -> str:
    q = {k: v for k, v in query.items() if v not in (None, "")}
    return PREFIX + path + (("?" + urlencode(q)) if q else "")


async def render(
    request: Request,
    template: str,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> Response:
    csrf, nonce_cookie = sessions.page_csrf(request)
    user = await sessions.current_user(request)
    response = templates.TemplateResponse(
        request,
        template,
        {"user": user, "csrf": csrf, "prefix": PREFIX, "url": url, **context},
        status_code=status,
        headers={**HEADERS, **(headers or {})},
    )
    if nonce_cookie is not None:
        sessions.set_nonce(request, response, nonce_cookie)
    return response


def redirect(path: str, **query: Any) -> RedirectResponse:
    return RedirectResponse(url(path, **query), status_code=303)


def engine(request: Request) -> Engine:
    return services(request).workspace.engine


def text(form: FormData, name: str, default: str = "") -> str:
    value = form.get(name, default)
    return value.strip() if isinstance(value, str) else default


def error_page(request: Request, exc: AssayError) -> Response:
    """The HTML page of an error on a review page; not logged in means: go to the login page."""
    if exc.status == 401 and request.method == "GET":
        return RedirectResponse(url("/login", next=request.url.path), status_code=303)
    response = templates.TemplateResponse(
        request,
        "error.html",
        {"user": request.scope.get("review_user"), "csrf": "", "prefix": PREFIX, "url": url, "error": exc},
        status_code=exc.status,
        headers=HEADERS,
    )
    return response
