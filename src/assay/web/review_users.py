"""The admin's account pages: list, add, disable or re-enable, and reset a password.

Every POST checks its CSRF token and the admin role. Setting a password hashes
it with argon2 inside the same rationed slot as a login, so this page cannot
be used to load the server more than logging in can.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from assay.errors import AssayError, Conflict
from assay.review import accounts
from assay.web import pages, sessions


async def _page(
    request: Request, *, error: AssayError | None = None, created: Any = None, done: str | None = None
) -> Response:
    users = await run_in_threadpool(accounts.list_users, pages.engine(request))
    return await pages.render(
        request,
        "users.html",
        status=200 if error is None else error.status,
        users=users,
        error=error,
        created=created,
        done=done,
        roles=accounts.ROLES,
        default_role=accounts.DEFAULT_ROLE,
        min_password=accounts.MIN_PASSWORD_LENGTH,
    )


async def users_page(request: Request) -> Response:
    await sessions.require_user(request, admin=True)
    return await _page(request, done=request.query_params.get("done"))


async def create_user_page(request: Request) -> Response:
    await sessions.require_user(request, admin=True)
    form = await sessions.checked_form(request)
    try:
        async with sessions.hashing_slot(request):  # an argon2 hash, rationed like a login's
            created = await run_in_threadpool(
                accounts.create_user,
                pages.engine(request),
                pages.text(form, "username"),
                str(form.get("password", "")),
                pages.text(form, "role", accounts.DEFAULT_ROLE),
            )
    except AssayError as exc:
        if exc.status >= 500:
            raise
        return await _page(request, error=exc)
    return await _page(request, created=created)


async def disable_user(request: Request) -> Response:
    """Disable an account (its sessions end; its labels stay) or, with ``enable``, let it log in again."""
    admin = await sessions.require_user(request, admin=True)
    form = await sessions.checked_form(request)
    username = request.path_params["username"]
    enable = pages.text(form, "enable") == "1"
    if username == admin.username and not enable:
        raise Conflict("you cannot disable your own account", field="username", code="own_account")
    await run_in_threadpool(accounts.set_disabled, pages.engine(request), username, not enable)
    return pages.redirect("/users", done=f"{username} {'enabled' if enable else 'disabled'}")


async def reset_password(request: Request) -> Response:
    """Set a new password for an account (its sessions end); a refused password comes back named."""
    await sessions.require_user(request, admin=True)
    form = await sessions.checked_form(request)
    username = request.path_params["username"]
    try:
        async with sessions.hashing_slot(request):
            await run_in_threadpool(
                accounts.set_password, pages.engine(request), username, str(form.get("password", ""))
            )
    except AssayError as exc:
        if exc.status >= 500:
            raise
        return await _page(request, error=exc)
    return pages.redirect("/users", done=f"password of {username} changed")
