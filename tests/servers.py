"""Helpers the serving tests share: items shaped like the damaging model's data, extra versions."""

from __future__ import annotations

import shutil
from contextlib import ExitStack
from functools import partial
from typing import Any

import httpx
from anyio.from_thread import start_blocking_portal
from starlette.applications import Starlette

from assay.workspace import Workspace
from tests.conftest import EDITQUALITY_FEATURES, edits_frame

FEATURES = EDITQUALITY_FEATURES


def edit_items(n: int, seed: int = 3) -> list[dict[str, Any]]:
    """Items with features, shaped like the damaging model's training data (plain JSON types)."""
    frame = edits_frame(n, seed=seed)
    return [
        {"id": str(row["rev_id"]), "features": {name: row[name] for name in FEATURES}}
        for row in frame.to_dict("records")  # native Python values, as JSON would give
    ]


def add_version(ws: Workspace, name: str, *, alias: str | None = None, damage: bool = False) -> int:
    """A new version of ``name`` with the production version's files (optionally a damaged model file)."""
    record = ws.registry.resolve(name)
    staging = ws.registry.staging_dir(name)
    for path in record.directory.iterdir():
        shutil.copy2(path, staging / path.name)
    new = ws.registry.add(
        name=name,
        task=record.lineage["task"],
        staging=staging,
        candidate=record.candidate,
        spec=record.spec,
        spec_hash=record.spec_hash,
        data_fingerprint=record.data_fingerprint,
        summary=record.summary,
        lineage=record.lineage,
    )
    if damage:
        with (new.directory / "model.json").open("ab") as f:
            f.write(b" ")
    if alias is not None:
        ws.registry.set_alias(name, alias, new.version, actor="test", reason="test", forced=True, gates=[])
    return new.version


class AppClient:
    """A synchronous client of the real app, in-process, with its lifespan running.

    httpx.AsyncClient over ASGITransport, driven from the test's thread through an
    anyio portal (starlette's TestClient warns about httpx in Starlette 1.x).
    """

    def __init__(
        self,
        app: Starlette,
        client: tuple[str, int] = ("127.0.0.1", 50000),
        *,
        raise_app_exceptions: bool = True,
    ) -> None:
        self.app = app
        self.client_address = client
        self.raise_app_exceptions = raise_app_exceptions

    def __enter__(self) -> AppClient:
        self._stack = ExitStack()
        self.portal = self._stack.enter_context(start_blocking_portal())
        self._stack.enter_context(
            self.portal.wrap_async_context_manager(self.app.router.lifespan_context(self.app))
        )
        self.http = self.async_client(self.client_address)
        self._stack.enter_context(self.portal.wrap_async_context_manager(self.http))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def async_client(self, client: tuple[str, int]) -> httpx.AsyncClient:
        """Another client of the same running app (e.g. from another address)."""
        transport = httpx.ASGITransport(
            app=self.app, client=client, raise_app_exceptions=self.raise_app_exceptions
        )
        return httpx.AsyncClient(transport=transport, base_url="http://testserver")

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.portal.call(partial(self.http.request, method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)
