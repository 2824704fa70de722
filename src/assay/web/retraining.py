"""The retraining admin page: every retraining run, and each challenger in the shadow of production.

Read-only, for admins, at ``/review/retraining``: the latest runs of every model with their
outcome and decision, and for every model with a ``challenger`` alias its shadow comparison on
the traffic production served (agreement, and both versions on the labelled items).
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from assay.errors import AssayError
from assay.web import pages, sessions
from assay.web.api import services

PAGE = pages.PREFIX + "/retraining"
MAX_RUNS = 100


async def retraining_page(request: Request) -> Response:
    await sessions.require_user(request, admin=True)
    ws = services(request).workspace

    def load() -> dict[str, Any]:
        from assay.retraining import runs
        from assay.retraining.shadow import CHALLENGER_ALIAS, shadow

        shadows = []
        for info in ws.registry.models():
            if CHALLENGER_ALIAS in info.aliases and "production" in info.aliases:
                try:
                    shadows.append(shadow(ws.registry, ws.engine, ws.log, info.name, resamples=500).to_dict())
                except AssayError as exc:
                    shadows.append({"challenger": f"{info.name}@{CHALLENGER_ALIAS}", "error": exc.message})
        return {"runs": runs.list_runs(ws.engine, limit=MAX_RUNS), "shadows": shadows}

    return await pages.render(request, "retraining.html", **(await run_in_threadpool(load)))


def routes() -> list[BaseRoute]:
    """The page; it must come before the review pages' mount to be reached."""
    return [Route(PAGE, retraining_page, methods=["GET"])]
