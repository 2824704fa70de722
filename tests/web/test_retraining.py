"""The retraining admin page in the real app: a challenger scored in the shadow of production on
the traffic the server logged (never in a response), its agreement and, once labels arrive over
the API, both versions' statistics; the runs of every model; admins only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from assay.modelling.spec_file import load_spec
from assay.modelling.training import train
from assay.retraining import runs
from assay.review import accounts
from assay.serving import tokens
from assay.settings import Settings
from assay.web.app import create_app
from assay.workspace import Workspace
from tests.modelling.test_comparison import WEAK_FEATURES, write_variant
from tests.monitoring.test_web import _flush, _items
from tests.reviewing import PASSWORD
from tests.servers import AppClient


@pytest.fixture
def client(trained_home: Path) -> Iterator[AppClient]:
    ws = Workspace.open(Settings.load(home=trained_home, environ={}))
    try:
        token = tokens.create_token(ws.engine, "product")
        accounts.create_user(ws.engine, "root", PASSWORD, role="admin")
        weak = train(
            load_spec(write_variant(trained_home, "weak", features=WEAK_FEATURES)), ws.registry
        ).record
        ws.registry.set_alias(
            "damaging", "challenger", weak.version, actor="t", reason="", forced=False, gates=[]
        )
        run = runs.start_run(ws.engine, "damaging", trigger="manual", actor="t", champion=1)
        runs.finish_run(
            ws.engine,
            run,
            "kept",
            "kept damaging@1: damaging@2 is significantly worse than damaging@1 on roc_auc",
        )
    finally:
        ws.close()
    settings = Settings.load(home=trained_home, environ={"ASSAY_MONITOR_INTERVAL_S": "0"})
    with AppClient(create_app(settings)) as c:
        c.http.headers["authorization"] = f"Bearer {token}"
        yield c


def test_the_challenger_is_scored_in_the_shadow_and_shown_to_admins(client: AppClient) -> None:
    assert client.get("/review/retraining").status_code == 303  # a login first
    items = _items(300, seed=21)
    r = client.post("/v1/scores", json={"models": ["damaging"], "items": items})
    assert r.status_code == 200
    answers = {s["damaging"]["version"] for s in r.json()["scores"].values()}
    assert answers == {"1"}  # production answers; the challenger never does
    _flush(client)
    client.post("/v1/session", json={"username": "root", "password": PASSWORD})
    page = client.get("/review/retraining")
    assert page.status_code == 200, page.text
    assert "damaging@2 beside damaging@1" in page.text and "Scored on 300 logged rows" in page.text
    assert "decisions agree on" in page.text and "No comparison on labelled items yet" in page.text
    assert "kept damaging@1: damaging@2 is significantly worse" in page.text
    labels = [{"id": i["id"], "label": "True" if k % 3 == 0 else "False"} for k, i in enumerate(items[:120])]
    assert client.post("/v1/labels", json={"model": "damaging", "labels": labels}).json()["accepted"] == 120
    page = client.get("/review/retraining")
    assert "120 of the items are labelled" in page.text and "<td>roc_auc</td>" in page.text


def test_reviewers_cannot_see_the_page(client: AppClient, trained_home: Path) -> None:
    ws = Workspace.open(Settings.load(home=trained_home, environ={}))
    try:
        accounts.create_user(ws.engine, "bob", PASSWORD, role="reviewer")
    finally:
        ws.close()
    client.post("/v1/session", json={"username": "bob", "password": PASSWORD})
    assert client.get("/review/retraining").status_code == 403
