"""Fixtures of the review pages' tests: a trained home with users and campaigns, and the app over it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from assay.settings import Settings
from assay.web.app import create_app
from assay.workspace import Workspace
from tests.reviewing import campaign, items_file, users


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def review_home(trained_home: Path, tmp_path: Path) -> Path:
    """A trained home with an admin, two reviewers and an open campaign ``c1`` (2 labels per item)."""
    ws = Workspace.open(Settings.load(home=trained_home, environ={}))
    try:
        users(ws, "root", role="admin")
        users(ws, "ana", "ben")
        source = items_file(tmp_path / "items", n=120)
        campaign(ws, source, size=12, labels_per_item=2, link_template="https://example.org/?diff={id}")
        campaign(ws, source, name="blind", size=4, blind=True)
        campaign(ws, source, name="only-ana", size=4, reviewers=["ana"])
    finally:
        ws.close()
    return trained_home


@pytest.fixture
async def app(review_home: Path) -> AsyncIterator[object]:
    app = create_app(Settings.load(home=review_home, environ={"ASSAY_WORKSET_SIZE": "5"}))
    async with app.router.lifespan_context(app):
        yield app
