"""The review pages: log in, work through worksets, judge items, and run campaigns as an admin.

Server-rendered Jinja2 with one small script (keyboard shortcuts); every form
works without it. Every POST checks its CSRF token and answers with a redirect
made only after the change is committed, so a page that says "saved" shows
what the store holds. Errors raised here become pages through ``error_page``,
which ``web.errors`` calls for every non-API path. ``routes()`` also carries
the review JSON API (``web.review_api``) and the static files.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from assay.errors import AssayError, InvalidInput, PayloadTooLarge
from assay.review import accounts, agreement, campaigns, judgments, labelling, progress, worksets
from assay.review.campaigns import Campaign, CampaignOptions, create_campaign, parse_list
from assay.review.logins import LoginThrottled
from assay.review.selection import SELECTIONS, UPLOAD_SUFFIXES, data_file
from assay.web import sessions
from assay.web.api import Services, services
from assay.web.review_api import api_routes

PREFIX = "/review"
_HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(_HERE / "templates"))
_HEADERS = {
    # No inline script or style anywhere, so the policy can be strict.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def _url(path: str, **query: Any) -> str:
    q = {k: v for k, v in query.items() if v not in (None, "")}
    return PREFIX + path + (("?" + urlencode(q)) if q else "")


async def _render(
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
        {"user": user, "csrf": csrf, "prefix": PREFIX, "url": _url, **context},
        status_code=status,
        headers={**_HEADERS, **(headers or {})},
    )
    if nonce_cookie is not None:
        sessions.set_nonce(request, response, nonce_cookie)
    return response


def _redirect(path: str, **query: Any) -> RedirectResponse:
    return RedirectResponse(_url(path, **query), status_code=303)


def _engine(request: Request) -> Engine:
    return services(request).workspace.engine


def _text(form: FormData, name: str, default: str = "") -> str:
    value = form.get(name, default)
    return value.strip() if isinstance(value, str) else default


def error_page(request: Request, exc: AssayError) -> Response:
    """The HTML page of an error on a review page; not logged in means: go to the login page."""
    if exc.status == 401 and request.method == "GET":
        return RedirectResponse(_url("/login", next=request.url.path), status_code=303)
    response = templates.TemplateResponse(
        request,
        "error.html",
        {"user": request.scope.get("review_user"), "csrf": "", "prefix": PREFIX, "url": _url, "error": exc},
        status_code=exc.status,
        headers=_HEADERS,
    )
    return response


# --- login --------------------------------------------------------------------------


async def login_page(request: Request) -> Response:
    return await _render(request, "login.html", next=request.query_params.get("next", ""), failed=None)


def _safe_next(target: str) -> str:
    # Only our own pages: never an absolute or protocol-relative URL (open redirect).
    return target if target.startswith(PREFIX) and not target.startswith("//") else PREFIX


async def login(request: Request) -> Response:
    form = await sessions.checked_form(request)
    target = _safe_next(_text(form, "next"))
    response = RedirectResponse(target, status_code=303)
    try:
        _user, token = await sessions.log_in(request, _text(form, "username"), str(form.get("password", "")))
    except AssayError as exc:
        if exc.status not in (401, 429, 503):
            raise
        # Refused logins come back as the form, saying why (and, when locked or busy, how long to wait).
        retry = str(exc.retry_after) if isinstance(exc, LoginThrottled) else "1"
        return await _render(
            request,
            "login.html",
            status=exc.status,
            headers=None if exc.status == 401 else {"Retry-After": retry},
            next=target,
            failed=exc,
        )
    sessions.set_session(request, response, token)
    return response


async def logout(request: Request) -> Response:
    await sessions.checked_form(request)
    response = _redirect("/login")
    await sessions.log_out(request, response)
    return response


# --- reviewer pages -------------------------------------------------------------------


async def home(request: Request) -> Response:
    user = await sessions.require_user(request)

    def load() -> list[dict[str, Any]]:
        out = []
        for c in campaigns.list_campaigns(_engine(request)):
            if not (user.is_admin or (c.is_open and c.may_label(user))):
                continue
            out.append({"campaign": c, "progress": progress.measure(_engine(request), c)})
        return out

    return await _render(request, "home.html", campaigns=await run_in_threadpool(load))


async def work_page(request: Request) -> Response:
    """The reviewer's current item in their workset (or the button to take one)."""
    user = await sessions.require_user(request)
    name = request.path_params["name"]

    def load() -> dict[str, Any]:
        engine = _engine(request)
        campaign = campaigns.get_campaign(engine, name)
        campaigns.check_may_label(campaign, user)
        workset = worksets.get_workset(engine, campaign, user)
        saved = request.query_params.get("saved")
        saved_item = None
        if saved and workset is not None:
            saved_item = next((i for i in workset.items if i.item_id == saved), None)
        return {
            "campaign": campaign,
            "workset": workset,
            "item": workset.next_item if workset else None,
            "progress": progress.measure(engine, campaign),
            "saved_item": saved_item,
            "skipped": request.query_params.get("skipped"),
            "empty": request.query_params.get("empty"),
        }

    return await _render(request, "work.html", **await run_in_threadpool(load))


async def take_workset(request: Request) -> Response:
    user = await sessions.require_user(request)
    await sessions.checked_form(request)
    name = request.path_params["name"]
    settings = services(request).settings

    def take() -> bool:
        campaign = campaigns.get_campaign(_engine(request), name)
        ws = worksets.take_workset(
            _engine(request), campaign, user, size=settings.workset_size, ttl_s=settings.workset_ttl_s
        )
        return ws is not None

    got = await run_in_threadpool(take)
    return _redirect(f"/campaigns/{quote(name)}/work", empty=None if got else "1")


async def label_item(request: Request) -> Response:
    user = await sessions.require_user(request)
    form = await sessions.checked_form(request)
    name = request.path_params["name"]
    item_id = _text(form, "item_id")
    ttl = services(request).settings.workset_ttl_s

    def act() -> None:
        campaign = campaigns.get_campaign(_engine(request), name)
        if "skip" in form:
            labelling.skip_item(_engine(request), campaign, user, item_id)
        else:
            labelling.submit_label(
                _engine(request),
                campaign,
                user,
                item_id,
                _text(form, "label"),
                _text(form, "comment"),
                ttl_s=ttl,
            )

    await run_in_threadpool(act)
    if "skip" in form:
        return _redirect(f"/campaigns/{quote(name)}/work", skipped=item_id)
    return _redirect(f"/campaigns/{quote(name)}/work", saved=item_id)


# --- judgments --------------------------------------------------------------------------


async def judgments_page(request: Request) -> Response:
    user = await sessions.require_user(request)
    model = request.query_params.get("model", "")
    item_id = request.query_params.get("item", "")
    campaign_name = request.query_params.get("campaign", "")
    scorer = services(request).scorer

    def load() -> dict[str, Any]:
        engine = _engine(request)
        campaign = campaigns.get_campaign(engine, campaign_name) if campaign_name else None
        context: dict[str, Any] = {"model": model, "item_id": item_id, "campaign": campaign, "classes": []}
        if model and item_id:
            found = judgments.judgments_for(engine, model, item_id)
            context["classes"] = scorer.model(model).loaded.classes
            # What the model predicted: never for a reviewer of a blind campaign.
            if campaign is not None and (user.is_admin or not campaign.blind):
                context["item"] = worksets.get_item(engine, campaign, item_id)
        else:
            found = judgments.recent_judgments(engine, model=model or None)
        context["judgments"] = [j.seen_by(admin=user.is_admin) for j in found]
        return context

    return await _render(request, "judgments.html", **await run_in_threadpool(load))


async def post_judgment(request: Request) -> Response:
    user = await sessions.require_user(request)
    form = await sessions.checked_form(request)
    model, item_id, campaign_name = _text(form, "model"), _text(form, "item_id"), _text(form, "campaign")
    scorer = services(request).scorer

    def act() -> None:
        engine = _engine(request)
        served = scorer.model(model)
        campaign = campaigns.get_campaign(engine, campaign_name) if campaign_name else None
        prediction = worksets.get_item(engine, campaign, item_id).prediction if campaign else None
        judgments.record_judgment(
            engine,
            model=served.name,
            item_id=item_id,
            label=_text(form, "label"),
            classes=served.loaded.classes,
            rationale=_text(form, "rationale"),
            author=user,
            model_version=campaign.model_version if campaign else served.version,
            model_prediction=prediction,
            campaign_id=campaign.id if campaign else None,
        )

    await run_in_threadpool(act)
    return _redirect("/judgments", model=model, item=item_id, campaign=campaign_name)


async def endorse_judgment(request: Request) -> Response:
    user = await sessions.require_user(request)
    form = await sessions.checked_form(request)
    judgment_id = request.path_params["id"]
    engine = _engine(request)
    if "prefer" in form:
        j = await run_in_threadpool(judgments.mark_preferred, engine, judgment_id, user)
    else:
        j = await run_in_threadpool(
            judgments.endorse, engine, judgment_id, user, _text(form, "stance"), _text(form, "comment")
        )
    return _redirect("/judgments", model=j.model, item=j.item_id, campaign=_text(form, "campaign"))


# --- admin pages ------------------------------------------------------------------------


async def campaign_admin(request: Request) -> Response:
    await sessions.require_user(request, admin=True)
    name = request.path_params["name"]
    try:
        offset = max(0, int(request.query_params.get("offset", "0")))
    except ValueError:
        raise InvalidInput("offset must be a whole number", field="offset") from None
    registry = services(request).workspace.registry

    def load() -> dict[str, Any]:
        engine = _engine(request)
        campaign = campaigns.get_campaign(engine, name)
        loaded = registry.load(registry.get(campaign.model, campaign.model_version))
        return {
            "campaign": campaign,
            "progress": progress.measure(engine, campaign),
            "agreement": agreement.summary(engine, campaign),
            "disagreements": agreement.disagreements(engine, campaign, limit=25, offset=offset),
            "versus": agreement.model_vs_labels(engine, campaign, loaded.operating_points),
        }

    return await _render(request, "campaign.html", **await run_in_threadpool(load))


async def campaign_status(request: Request) -> Response:
    await sessions.require_user(request, admin=True)
    form = await sessions.checked_form(request)
    name = request.path_params["name"]
    campaign = await run_in_threadpool(campaigns.get_campaign, _engine(request), name)
    await run_in_threadpool(campaigns.set_status, _engine(request), campaign, _text(form, "status"))
    return _redirect(f"/campaigns/{quote(name)}")


async def _new_context(request: Request) -> dict[str, Any]:
    """What the campaign form offers: the models, and the classes of each (newest version) to flag."""
    scorer = services(request).scorer
    models = scorer.models()

    def classes() -> dict[str, list[str]]:
        return {m.name: scorer.model(f"{m.name}@{m.versions[-1]}").loaded.classes for m in models}

    # A new campaign reviews the decisions the product acts on (production's), unless the admin
    # picks another; training moves `candidate` first, so the aliases' order would choose it.
    default_model = next((f"{m.name}@production" for m in models if "production" in m.aliases), "")
    return {
        "models": models,
        "classes": await run_in_threadpool(classes),  # a first look loads the version's artifacts
        "selections": SELECTIONS,
        "rules": judgments.RULES,
        "default_model": default_model,
        "data_dir": bool(services(request).settings.campaign_data_dir),
        "upload_suffixes": UPLOAD_SUFFIXES,
        "upload_limit_mib": services(request).settings.max_body_bytes / 2**20,
    }


async def new_campaign_page(request: Request) -> Response:
    await sessions.require_user(request, admin=True)
    return await _render(request, "campaign_new.html", form={}, error=None, **await _new_context(request))


def _save_upload(upload: UploadFile, folder: Path, limit: int) -> tuple[Path, str]:
    """Copy an uploaded data file into ``folder``; returns its path there and the name it came with."""
    name = Path(upload.filename or "").name or "upload"
    suffix = Path(name).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise InvalidInput(
            f"upload a {', '.join(UPLOAD_SUFFIXES)} file (not compressed); got {name!r}", field="source"
        )
    path = folder / f"upload{suffix}"  # never the client's name: that is only shown
    upload.file.seek(0)
    copied = 0
    with path.open("wb") as out:
        while block := upload.file.read(1 << 20):
            copied += len(block)
            if copied > limit:  # the body limit already holds; this keeps the rule next to its use
                raise PayloadTooLarge(f"an uploaded data file may have at most {limit} bytes", field="source")
            out.write(block)
    if copied == 0:
        raise InvalidInput(f"the uploaded file {name!r} is empty", field="source")
    return path, name


def _options(form: FormData) -> CampaignOptions:
    def number(name: str, default: int | None) -> int | None:
        raw = _text(form, name)
        if not raw:
            return default
        try:
            return int(raw)
        except ValueError:
            raise InvalidInput(f"{name.replace('_', ' ')} must be a whole number", field=name) from None

    return CampaignOptions(
        name=_text(form, "name"),
        model=_text(form, "model"),
        selection=_text(form, "selection", "random"),
        size=number("size", None),
        id_column=_text(form, "id_column") or "id",
        threshold=_text(form, "threshold") or None,
        flag_class=_text(form, "flag_class") or None,
        ids=parse_list(_text(form, "ids")),
        labels_per_item=number("labels_per_item", 1) or 1,
        reviewers=parse_list(_text(form, "reviewers")),
        blind="blind" in form,
        auto_rules=[line for line in _text(form, "auto_rules").splitlines() if line.strip()],
        link_template=_text(form, "link_template") or None,
        description=_text(form, "description"),
        judgment_rule=_text(form, "judgment_rule", "admin"),
        seed=number("seed", 0) or 0,
    )


def _create(svc: Services, form: FormData, created_by: str) -> Campaign:
    """Make the campaign the form describes, its items from an upload, the data folder or the feature table."""
    options = _options(form)
    upload = form.get("upload")
    named = _text(form, "source")
    if isinstance(upload, UploadFile) and upload.filename:
        if named:
            raise InvalidInput("upload a file or name one in the data folder, not both", field="source")
        with tempfile.TemporaryDirectory(prefix="assay-upload-") as folder:
            path, name = _save_upload(upload, Path(folder), svc.settings.max_body_bytes)
            options.source, options.source_name = str(path), f"upload {name}"
            return create_campaign(svc.workspace, svc.scorer, options, created_by=created_by)
    if named:
        path = data_file(svc.settings.campaign_data_dir, named)
        options.source, options.source_name = str(path), named
    return create_campaign(svc.workspace, svc.scorer, options, created_by=created_by)


async def create_campaign_page(request: Request) -> Response:
    user = await sessions.require_user(request, admin=True)
    form = await sessions.checked_form(request)
    svc = services(request)
    try:
        campaign = await run_in_threadpool(_create, svc, form, user.username)
    except AssayError as exc:
        if exc.status >= 500:
            raise
        # The form comes back filled in, with the problem named next to it.
        return await _render(
            request,
            "campaign_new.html",
            status=exc.status,
            form={k: v for k, v in form.items() if isinstance(v, str)},
            error=exc,
            **await _new_context(request),
        )
    finally:
        await form.close()  # an upload's spooled copy goes now, not when the collector gets to it
    return _redirect(f"/campaigns/{quote(campaign.name)}")


async def users_page(request: Request) -> Response:
    await sessions.require_user(request, admin=True)
    users = await run_in_threadpool(accounts.list_users, _engine(request))
    return await _render(request, "users.html", users=users, error=None, created=None, **_users_context())


def _users_context() -> dict[str, Any]:
    return {
        "roles": accounts.ROLES,
        "default_role": accounts.DEFAULT_ROLE,
        "min_password": accounts.MIN_PASSWORD_LENGTH,
    }


async def create_user_page(request: Request) -> Response:
    await sessions.require_user(request, admin=True)
    form = await sessions.checked_form(request)
    engine = _engine(request)
    try:
        async with sessions.hashing_slot(request):  # an argon2 hash, rationed like a login's
            created = await run_in_threadpool(
                accounts.create_user,
                engine,
                _text(form, "username"),
                str(form.get("password", "")),
                _text(form, "role", accounts.DEFAULT_ROLE),
            )
        error = None
    except AssayError as exc:
        if exc.status >= 500:
            raise
        created, error = None, exc
    users = await run_in_threadpool(accounts.list_users, engine)
    return await _render(
        request,
        "users.html",
        status=200 if error is None else error.status,
        users=users,
        error=error,
        created=created,
        **_users_context(),
    )


def routes() -> list[BaseRoute]:
    """The review pages, the review JSON API and the static files, for ``create_app``."""
    page_routes = [
        Route("/", home, methods=["GET"]),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/campaigns/new", new_campaign_page, methods=["GET"]),
        Route("/campaigns", create_campaign_page, methods=["POST"]),
        Route("/campaigns/{name}", campaign_admin, methods=["GET"]),
        Route("/campaigns/{name}/status", campaign_status, methods=["POST"]),
        Route("/campaigns/{name}/work", work_page, methods=["GET"]),
        Route("/campaigns/{name}/workset", take_workset, methods=["POST"]),
        Route("/campaigns/{name}/label", label_item, methods=["POST"]),
        Route("/judgments", judgments_page, methods=["GET"]),
        Route("/judgments", post_judgment, methods=["POST"]),
        Route("/judgments/{id:int}", endorse_judgment, methods=["POST"]),
        Route("/users", users_page, methods=["GET"]),
        Route("/users", create_user_page, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=str(_HERE / "static")), name="review-static"),
    ]
    return [Mount(PREFIX, routes=page_routes), *api_routes()]
