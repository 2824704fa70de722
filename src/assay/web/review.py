"""The reviewer's pages: log in, work through worksets, judge items; and the routes of every review page.

Every POST checks its CSRF token and answers with a redirect made only after
the change is committed, so a page that says "saved" shows what the store
holds. ``routes()`` also carries the admin pages (``web.review_admin``), the
review JSON API (``web.review_api``) and the static files.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from assay.errors import AssayError
from assay.review import campaigns, judgments, labelling, progress, resolution, worksets
from assay.review.logins import LoginThrottled
from assay.store import db
from assay.web import pages, review_admin, review_users, sessions
from assay.web.api import services
from assay.web.review_api import api_routes

# --- login --------------------------------------------------------------------------


async def login_page(request: Request) -> Response:
    return await pages.render(request, "login.html", next=request.query_params.get("next", ""), failed=None)


def _safe_next(target: str) -> str:
    # Only our own pages: never an absolute or protocol-relative URL (open redirect).
    return target if target.startswith(pages.PREFIX) and not target.startswith("//") else pages.PREFIX


async def login(request: Request) -> Response:
    form = await sessions.checked_form(request)
    target = _safe_next(pages.text(form, "next"))
    response = RedirectResponse(target, status_code=303)
    try:
        _user, token = await sessions.log_in(
            request, pages.text(form, "username"), str(form.get("password", ""))
        )
    except AssayError as exc:
        if exc.status not in (401, 429, 503):
            raise
        # Refused logins come back as the form, saying why (and, when locked or busy, how long to wait).
        retry = str(exc.retry_after) if isinstance(exc, LoginThrottled) else "1"
        return await pages.render(
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
    response = pages.redirect("/login")
    await sessions.log_out(request, response)
    return response


# --- reviewer pages -------------------------------------------------------------------


async def home(request: Request) -> Response:
    user = await sessions.require_user(request)

    def load() -> list[dict[str, Any]]:
        out = []
        for c in campaigns.list_campaigns(pages.engine(request)):
            if not (user.is_admin or (c.is_open and c.may_label(user))):
                continue
            out.append({"campaign": c, "progress": progress.measure(pages.engine(request), c)})
        return out

    return await pages.render(request, "home.html", campaigns=await run_in_threadpool(load))


async def work_page(request: Request) -> Response:
    """The reviewer's current item in their workset (or the button to take one)."""
    user = await sessions.require_user(request)
    name = request.path_params["name"]

    def load() -> dict[str, Any]:
        engine = pages.engine(request)
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
            "stats": progress.reviewer_stats(engine, campaign, user.id),
            "saved_item": saved_item,
            "skipped": request.query_params.get("skipped"),
            "undone": request.query_params.get("undone"),
            "empty": request.query_params.get("empty"),
            "now": db.now(),
        }

    return await pages.render(request, "work.html", **await run_in_threadpool(load))


async def take_workset(request: Request) -> Response:
    user = await sessions.require_user(request)
    await sessions.checked_form(request)
    name = request.path_params["name"]
    settings = services(request).settings

    def take() -> bool:
        campaign = campaigns.get_campaign(pages.engine(request), name)
        ws = worksets.take_workset(
            pages.engine(request), campaign, user, size=settings.workset_size, ttl_s=settings.workset_ttl_s
        )
        return ws is not None

    got = await run_in_threadpool(take)
    return pages.redirect(f"/campaigns/{quote(name)}/work", empty=None if got else "1")


async def label_item(request: Request) -> Response:
    user = await sessions.require_user(request)
    form = await sessions.checked_form(request)
    name = request.path_params["name"]
    item_id = pages.text(form, "item_id")
    ttl = services(request).settings.workset_ttl_s

    def act() -> None:
        campaign = campaigns.get_campaign(pages.engine(request), name)
        if "skip" in form:
            labelling.skip_item(pages.engine(request), campaign, user, item_id)
        else:
            labelling.submit_label(
                pages.engine(request),
                campaign,
                user,
                item_id,
                pages.text(form, "label"),
                pages.text(form, "comment"),
                ttl_s=ttl,
            )

    await run_in_threadpool(act)
    if "skip" in form:
        return pages.redirect(f"/campaigns/{quote(name)}/work", skipped=item_id)
    return pages.redirect(f"/campaigns/{quote(name)}/work", saved=item_id)


async def undo_label(request: Request) -> Response:
    """Take back one's most recent label in the campaign: the item is back at the head of the workset."""
    user = await sessions.require_user(request)
    await sessions.checked_form(request)
    name = request.path_params["name"]
    ttl = services(request).settings.workset_ttl_s

    def act() -> str:
        campaign = campaigns.get_campaign(pages.engine(request), name)
        return labelling.undo_last(pages.engine(request), campaign, user, ttl_s=ttl)

    item_id = await run_in_threadpool(act)
    return pages.redirect(f"/campaigns/{quote(name)}/work", undone=item_id)


async def my_labels_page(request: Request) -> Response:
    """The reviewer's own labels in a campaign, newest first, with what others said and their agreement."""
    user = await sessions.require_user(request)
    name = request.path_params["name"]
    offset = pages.offset(request)

    def load() -> dict[str, Any]:
        engine = pages.engine(request)
        campaign = campaigns.get_campaign(engine, name)
        if not (user.is_admin or campaign.may_label(user)):
            campaigns.check_may_label(campaign, user)  # says why, as the work page does
        return {
            "campaign": campaign,
            "labels": labelling.my_labels(engine, campaign, user, limit=pages.PAGE + 1, offset=offset),
            "stats": progress.reviewer_stats(engine, campaign, user.id),
            "offset": offset,
            "page": pages.PAGE,
        }

    return await pages.render(request, "mine.html", **await run_in_threadpool(load))


# --- judgments --------------------------------------------------------------------------


async def judgments_page(request: Request) -> Response:
    user = await sessions.require_user(request)
    model = request.query_params.get("model", "")
    item_id = request.query_params.get("item", "")
    campaign_name = request.query_params.get("campaign", "")
    scorer = services(request).scorer

    def load() -> dict[str, Any]:
        engine = pages.engine(request)
        campaign = campaigns.get_campaign(engine, campaign_name) if campaign_name else None
        context: dict[str, Any] = {"model": model, "item_id": item_id, "campaign": campaign, "classes": []}
        if model and item_id:
            found = judgments.judgments_for(engine, model, item_id)
            context["classes"] = scorer.model(model).loaded.classes
            if campaign is None:  # the item's context from the latest campaign that reviewed it
                campaign = context["campaign"] = worksets.latest_campaign_of(engine, model, item_id)
            if campaign is not None:
                context["item"] = worksets.get_item(engine, campaign, item_id)
                # What the model predicted: never for a reviewer of a blind campaign.
                context["show_score"] = user.is_admin or not campaign.blind
                if user.is_admin:
                    context["resolved"] = resolution.resolved_item(engine, campaign, item_id)
        else:
            found = judgments.recent_judgments(engine, model=model or None)
        context["judgments"] = [j.seen_by(admin=user.is_admin) for j in found]
        return context

    return await pages.render(request, "judgments.html", **await run_in_threadpool(load))


async def post_judgment(request: Request) -> Response:
    user = await sessions.require_user(request)
    form = await sessions.checked_form(request)
    model, item_id, campaign_name = (
        pages.text(form, "model"),
        pages.text(form, "item_id"),
        pages.text(form, "campaign"),
    )
    scorer = services(request).scorer

    def act() -> None:
        engine = pages.engine(request)
        served = scorer.model(model)
        campaign = campaigns.get_campaign(engine, campaign_name) if campaign_name else None
        prediction = worksets.get_item(engine, campaign, item_id).prediction if campaign else None
        judgments.record_judgment(
            engine,
            model=served.name,
            item_id=item_id,
            label=pages.text(form, "label"),
            classes=served.loaded.classes,
            rationale=pages.text(form, "rationale"),
            author=user,
            model_version=campaign.model_version if campaign else served.version,
            model_prediction=prediction,
            campaign_id=campaign.id if campaign else None,
        )

    await run_in_threadpool(act)
    return pages.redirect("/judgments", model=model, item=item_id, campaign=campaign_name)


async def endorse_judgment(request: Request) -> Response:
    user = await sessions.require_user(request)
    form = await sessions.checked_form(request)
    judgment_id = request.path_params["id"]
    engine = pages.engine(request)
    if "prefer" in form:
        j = await run_in_threadpool(judgments.mark_preferred, engine, judgment_id, user)
    else:
        j = await run_in_threadpool(
            judgments.endorse,
            engine,
            judgment_id,
            user,
            pages.text(form, "stance"),
            pages.text(form, "comment"),
        )
    return pages.redirect("/judgments", model=j.model, item=j.item_id, campaign=pages.text(form, "campaign"))


def routes() -> list[BaseRoute]:
    """The review pages, the review JSON API and the static files, for ``create_app``."""
    page_routes = [
        Route("/", home, methods=["GET"]),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/campaigns/new", review_admin.new_campaign_page, methods=["GET"]),
        Route("/campaigns", review_admin.create_campaign_page, methods=["POST"]),
        Route("/campaigns/{name}", review_admin.campaign_admin, methods=["GET"]),
        Route("/campaigns/{name}/status", review_admin.campaign_status, methods=["POST"]),
        Route("/campaigns/{name}/work", work_page, methods=["GET"]),
        Route("/campaigns/{name}/workset", take_workset, methods=["POST"]),
        Route("/campaigns/{name}/label", label_item, methods=["POST"]),
        Route("/campaigns/{name}/undo", undo_label, methods=["POST"]),
        Route("/campaigns/{name}/mine", my_labels_page, methods=["GET"]),
        Route("/judgments", judgments_page, methods=["GET"]),
        Route("/judgments", post_judgment, methods=["POST"]),
        Route("/judgments/{id:int}", endorse_judgment, methods=["POST"]),
        Route("/campaigns/{name}/edit", review_admin.campaign_edit, methods=["POST"]),
        Route("/campaigns/{name}/adjudicate", review_admin.adjudication_page, methods=["GET"]),
        Route("/campaigns/{name}/adjudicate", review_admin.adjudicate, methods=["POST"]),
        Route("/campaigns/{name}/labels.csv", review_admin.download_labels, methods=["GET"]),
        Route("/users", review_users.users_page, methods=["GET"]),
        Route("/users", review_users.create_user_page, methods=["POST"]),
        Route("/users/{username}/disabled", review_users.disable_user, methods=["POST"]),
        Route("/users/{username}/password", review_users.reset_password, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=str(pages.HERE / "static")), name="review-static"),
    ]
    return [Mount(pages.PREFIX, routes=page_routes), *api_routes()]
