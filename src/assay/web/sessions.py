"""Who is asking, for the review pages and the review API: session cookies, CSRF checks, tokens.

The session cookie carries a random token signed with the workspace secret
(``accounts.session_secret``); it is HttpOnly, SameSite=Lax, and Secure when
``settings.secure_cookies`` is on. Every state-changing request made with a
session must prove it came from our own page: a form field ``csrf_token``, or
an ``X-CSRF-Token`` header for JSON calls. Before login, a signed nonce cookie
plays the session's part, so the login form is protected too.

Logging in is rationed twice over. ``review.logins.LoginThrottle`` locks an
account or a client address out after too many failures (429 with
``Retry-After``), before any password is checked. And a password check is an
argon2 hash of 64 MiB and a good part of a second of CPU, so at most
``settings.login_hash_slots`` run at once per worker; a login that cannot get
a slot within ``HASH_WAIT_S`` is answered 503. A flood of logins therefore
waits on the event loop, holding neither memory nor the worker threads that
scoring and the other pages need.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from assay.errors import Forbidden, Unauthorized, Unavailable
from assay.review import accounts
from assay.review.accounts import User
from assay.review.logins import LoginThrottle, address_key
from assay.serving import tokens
from assay.web.api import Services, services

SESSION_COOKIE = "assay_session"
NONCE_COOKIE = "assay_login"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
# How long a login waits for a password-hashing slot before it is answered 503.
HASH_WAIT_S = 2.0


def secret(request: Request) -> bytes:
    """The signing secret, read once per app (it may live in a file in the home)."""
    state = request.app.state
    cached = getattr(state, "review_secret", None)
    if cached is None:
        cached = accounts.session_secret(services(request).settings)
        state.review_secret = cached
    return cached


def _session_token(request: Request) -> str | None:
    raw = request.cookies.get(SESSION_COOKIE)
    return accounts.unsign(secret(request), raw) if raw else None


async def current_user(request: Request) -> User | None:
    """The logged-in user of this request, or None; looked up once per request."""
    if "review_user" in request.scope:
        return request.scope["review_user"]
    token = _session_token(request)
    user = None
    if token is not None:
        user = await run_in_threadpool(accounts.session_user, services(request).workspace.engine, token)
    request.scope["review_user"] = user
    return user


async def require_user(request: Request, *, admin: bool = False) -> User:
    user = await current_user(request)
    if user is None:
        raise Unauthorized("log in first", code="login_required")
    if admin and not user.is_admin:
        raise Forbidden("this needs an admin account")
    return user


def csrf_key(request: Request) -> str | None:
    """What the CSRF token is derived from: the session token, else the pre-login nonce."""
    token = _session_token(request)
    if token is not None:
        return token
    raw = request.cookies.get(NONCE_COOKIE)
    return accounts.unsign(secret(request), raw) if raw else None


def page_csrf(request: Request) -> tuple[str, str | None]:
    """The CSRF token for a page's forms, and a nonce cookie to set when the browser has no key yet."""
    key = csrf_key(request)
    if key is not None:
        return accounts.csrf_token(secret(request), key), None
    nonce = secrets.token_urlsafe(24)
    return accounts.csrf_token(secret(request), nonce), accounts.sign(secret(request), nonce)


def check_csrf(request: Request, supplied: str | None) -> None:
    key = csrf_key(request)
    if key is None or not accounts.csrf_ok(secret(request), key, supplied):
        raise Forbidden("the form is stale or did not come from this site; reload the page", code="csrf")


async def checked_form(request: Request) -> FormData:
    """The posted form, after its CSRF token is checked."""
    form = await request.form()
    value = form.get(CSRF_FIELD)
    check_csrf(request, value if isinstance(value, str) else None)
    return form


def check_csrf_header(request: Request) -> None:
    check_csrf(request, request.headers.get(CSRF_HEADER))


def _cookie_args(svc: Services) -> dict[str, Any]:
    return {"httponly": True, "samesite": "lax", "secure": svc.settings.secure_cookies, "path": "/"}


def set_nonce(request: Request, response: Response, cookie: str) -> None:
    response.set_cookie(NONCE_COOKIE, cookie, **_cookie_args(services(request)))


def login_throttle(request: Request) -> LoginThrottle:
    """The app's login throttle, made from the settings on first use (state of this process)."""
    state = request.app.state
    throttle = getattr(state, "login_throttle", None)
    if throttle is None:
        settings = services(request).settings
        throttle = state.login_throttle = LoginThrottle(
            per_account=settings.login_failures_per_account,
            per_address=settings.login_failures_per_address,
            window_s=settings.login_window_s,
        )
    return throttle


@asynccontextmanager
async def hashing_slot(request: Request) -> AsyncIterator[None]:
    """Hold one of the app's password-hashing slots; ``Unavailable`` (503) when none frees up in time."""
    state = request.app.state
    slots = getattr(state, "hash_slots", None)
    if slots is None:
        slots = state.hash_slots = anyio.Semaphore(max(1, services(request).settings.login_hash_slots))
    try:
        with anyio.fail_after(HASH_WAIT_S):
            await slots.acquire()
    except TimeoutError:
        raise Unavailable("too many logins at once; try again in a moment", code="busy") from None
    try:
        yield
    finally:
        slots.release()


async def log_in(request: Request, username: str, password: str) -> tuple[User, str]:
    """Check the credentials and start a session; returns the user and the new session token.

    ``LoginThrottled`` (429) while the account or the client's address is locked out, without
    looking at the password; ``Unavailable`` (503) when no hashing slot frees up in time.
    """
    engine = services(request).workspace.engine
    throttle = login_throttle(request)
    attempt = throttle.begin(username, address_key(request.client.host if request.client else None))
    try:
        async with hashing_slot(request):
            user = await run_in_threadpool(accounts.authenticate, engine, username, password)
    except Unauthorized:
        throttle.failed(attempt)
        raise
    except BaseException:
        throttle.cancelled(attempt)  # no verdict on the password (busy, cancelled, a store error)
        raise
    throttle.succeeded(attempt)
    return user, await run_in_threadpool(accounts.start_session, engine, user)


def set_session(request: Request, response: Response, token: str) -> None:
    """Put the session cookie on ``response`` (and drop the pre-login nonce)."""
    key = secret(request)
    max_age = int(accounts.SESSION_TTL.total_seconds())
    response.set_cookie(
        SESSION_COOKIE, accounts.sign(key, token), max_age=max_age, **_cookie_args(services(request))
    )
    response.delete_cookie(NONCE_COOKIE, path="/")


async def log_out(request: Request, response: Response) -> None:
    token = _session_token(request)
    if token is not None:
        await run_in_threadpool(accounts.end_session, services(request).workspace.engine, token)
    response.delete_cookie(SESSION_COOKIE, path="/")


async def token_name(request: Request) -> str | None:
    """The name of the API token in ``Authorization: Bearer``, None without the header; bad ones raise."""
    header = request.headers.get("authorization")
    if not header:
        return None
    engine = services(request).workspace.engine
    info = await run_in_threadpool(tokens.verify_token, engine, tokens.bearer_token(header))
    return info.name
