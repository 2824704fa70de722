"""The admin's review pages: a campaign's progress and agreement, making and editing campaigns, accounts.

Every POST checks its CSRF token and the admin role, and answers with a
redirect made only after the change is committed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import Response

from assay.errors import AssayError, InvalidInput, PayloadTooLarge
from assay.review import agreement, campaigns, judgments, progress, resolution
from assay.review.campaigns import Campaign, CampaignOptions, create_campaign, parse_list
from assay.review.selection import SELECTIONS, UPLOAD_SUFFIXES, data_file
from assay.web import pages, sessions
from assay.web.api import Services, services


async def campaign_admin(request: Request) -> Response:
    await sessions.require_user(request, admin=True)
    name = request.path_params["name"]
    offset = pages.offset(request)
    registry = services(request).workspace.registry

    def load() -> dict[str, Any]:
        engine = pages.engine(request)
        campaign = campaigns.get_campaign(engine, name)
        loaded = registry.load(registry.get(campaign.model, campaign.model_version))
        return {
            "campaign": campaign,
            "progress": progress.measure(engine, campaign),
            "agreement": agreement.summary(engine, campaign),
            "disagreements": resolution.disputes(engine, campaign, limit=25, offset=offset),
            "versus": agreement.model_vs_labels(engine, campaign, loaded.operating_points),
        }

    return await pages.render(request, "campaign.html", **await run_in_threadpool(load))


async def campaign_status(request: Request) -> Response:
    await sessions.require_user(request, admin=True)
    form = await sessions.checked_form(request)
    name = request.path_params["name"]
    campaign = await run_in_threadpool(campaigns.get_campaign, pages.engine(request), name)
    await run_in_threadpool(campaigns.set_status, pages.engine(request), campaign, pages.text(form, "status"))
    return pages.redirect(f"/campaigns/{quote(name)}")


def _class_descriptions(form: FormData, campaign: Campaign) -> dict[str, str]:
    """``describe:<class>`` fields, one per class of the campaign."""
    return {c: pages.text(form, f"describe:{c}") for c in campaign.classes}


async def campaign_edit(request: Request) -> Response:
    """Change a running campaign's description, guidelines, class descriptions, reviewers or tie cap."""
    await sessions.require_user(request, admin=True)
    form = await sessions.checked_form(request)
    name = request.path_params["name"]

    def act() -> None:
        engine = pages.engine(request)
        campaign = campaigns.get_campaign(engine, name)
        edit = campaigns.CampaignEdit(
            description=pages.text(form, "description"),
            guidelines=pages.text(form, "guidelines"),
            class_descriptions=_class_descriptions(form, campaign),
            extra_labels=_number(form, "extra_labels", None),
            reviewers=parse_list(pages.text(form, "reviewers")),
        )
        campaigns.edit_campaign(engine, campaign, edit)

    await run_in_threadpool(act)
    return pages.redirect(f"/campaigns/{quote(name)}", edited="1")


async def adjudication_page(request: Request) -> Response:
    """The items reviewers disagree on, with every label and comment, the resolution, and a form to settle."""
    await sessions.require_user(request, admin=True)
    name = request.path_params["name"]
    offset = pages.offset(request)

    def load() -> dict[str, Any]:
        engine = pages.engine(request)
        campaign = campaigns.get_campaign(engine, name)
        return {
            "campaign": campaign,
            "disputes": resolution.disputes(engine, campaign, limit=pages.PAGE, offset=offset),
            "rules_text": resolution.RULES_TEXT,
            "page": pages.PAGE,
            "settled": request.query_params.get("settled"),
        }

    return await pages.render(request, "adjudicate.html", **await run_in_threadpool(load))


async def adjudicate(request: Request) -> Response:
    """Settle an item: the admin's judgment, marked preferred, decides its label."""
    admin = await sessions.require_user(request, admin=True)
    form = await sessions.checked_form(request)
    name = request.path_params["name"]
    item_id = pages.text(form, "item_id")

    def act() -> None:
        engine = pages.engine(request)
        campaign = campaigns.get_campaign(engine, name)
        resolution.adjudicate(
            engine, campaign, admin, item_id, pages.text(form, "label"), pages.text(form, "rationale")
        )

    await run_in_threadpool(act)
    return pages.redirect(
        f"/campaigns/{quote(name)}/adjudicate", settled=item_id, offset=request.query_params.get("offset")
    )


DOWNLOADS = ("resolved", "all", "raw")


async def download_labels(request: Request) -> Response:
    """The campaign's labels as CSV: ``resolved`` (what training reads), ``all`` items, or ``raw`` labels."""
    await sessions.require_user(request, admin=True)
    name = request.path_params["name"]
    kind = request.query_params.get("kind", "resolved")
    if kind not in DOWNLOADS:
        raise InvalidInput(f"kind must be one of {', '.join(DOWNLOADS)}; got {kind!r}", field="kind")

    def load() -> str:
        engine = pages.engine(request)
        campaign = campaigns.get_campaign(engine, name)
        return resolution.labels_csv(engine, campaign, everything=kind == "all", raw=kind == "raw")

    body = await run_in_threadpool(load)
    filename = quote(f"{name}-{kind}-labels.csv")
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={**pages.HEADERS, "Content-Disposition": f"attachment; filename*=UTF-8''{filename}"},
    )


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
    return await pages.render(
        request, "campaign_new.html", form={}, error=None, **await _new_context(request)
    )


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


def _number(form: FormData, name: str, default: int | None) -> int | None:
    """A whole-number form field, ``default`` when empty; anything else is ``InvalidInput`` naming it."""
    raw = pages.text(form, name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidInput(f"{name.replace('_', ' ')} must be a whole number", field=name) from None


def _options(form: FormData) -> CampaignOptions:
    def number(name: str, default: int | None) -> int | None:
        return _number(form, name, default)

    return CampaignOptions(
        name=pages.text(form, "name"),
        model=pages.text(form, "model"),
        selection=pages.text(form, "selection", "random"),
        size=number("size", None),
        id_column=pages.text(form, "id_column") or "id",
        threshold=pages.text(form, "threshold") or None,
        flag_class=pages.text(form, "flag_class") or None,
        ids=parse_list(pages.text(form, "ids")),
        labels_per_item=number("labels_per_item", 1) or 1,
        extra_labels=number("extra_labels", 0) or 0,
        guidelines=pages.text(form, "guidelines"),
        reviewers=parse_list(pages.text(form, "reviewers")),
        blind="blind" in form,
        auto_rules=[line for line in pages.text(form, "auto_rules").splitlines() if line.strip()],
        link_template=pages.text(form, "link_template") or None,
        description=pages.text(form, "description"),
        judgment_rule=pages.text(form, "judgment_rule", "admin"),
        seed=number("seed", 0) or 0,
    )


def _create(svc: Services, form: FormData, created_by: str) -> Campaign:
    """Make the campaign the form describes, its items from an upload, the data folder or the feature table."""
    options = _options(form)
    upload = form.get("upload")
    named = pages.text(form, "source")
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
        return await pages.render(
            request,
            "campaign_new.html",
            status=exc.status,
            form={k: v for k, v in form.items() if isinstance(v, str)},
            error=exc,
            **await _new_context(request),
        )
    finally:
        await form.close()  # an upload's spooled copy goes now, not when the collector gets to it
    return pages.redirect(f"/campaigns/{quote(campaign.name)}")
