"""Monitoring in the server: every computed score is logged off the request path (and a broken log
never fails one), labels over the API, monitor states and Prometheus gauges, admin pages."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from assay.review import accounts
from assay.serving import tokens
from assay.settings import Settings
from assay.store import tables
from assay.web.app import create_app
from assay.workspace import Workspace
from tests.conftest import EDITQUALITY_FEATURES, edits_frame
from tests.reviewing import PASSWORD
from tests.servers import AppClient


def _items(n: int, seed: int = 0) -> list[dict]:
    frame = edits_frame(n, seed=seed)
    rows = frame[EDITQUALITY_FEATURES].to_dict(orient="records")
    for row in rows:
        for k in ("user_is_anon", "user_is_bot_or_sysop"):
            row[k] = bool(row[k])
    return [{"id": str(i), "features": r} for i, r in zip(frame["rev_id"], rows, strict=True)]


@pytest.fixture
def home(trained_home: Path) -> Path:
    ws = Workspace.open(Settings.load(home=trained_home, environ={}))
    try:
        (trained_home / "token").write_text(tokens.create_token(ws.engine, "product"))
        accounts.create_user(ws.engine, "root", PASSWORD, role="admin")
    finally:
        ws.close()
    return trained_home


@pytest.fixture
def client(home: Path, request: pytest.FixtureRequest) -> Iterator[AppClient]:
    backend = getattr(request, "param", "store")  # the log's backend, when a test names it
    settings = Settings.load(
        home=home, environ={"ASSAY_MONITOR_INTERVAL_S": "0", "ASSAY_LOG_BACKEND": backend}
    )
    with AppClient(create_app(settings)) as c:
        c.http.headers["authorization"] = f"Bearer {(home / 'token').read_text()}"
        yield c


def _flush(client: AppClient) -> None:
    log = client.app.state.watch.log  # type: ignore[attr-defined]
    assert log is not None and log.flush(10)


@pytest.mark.parametrize("client", ["store", "parquet"], indirect=True)
def test_scores_are_logged_and_labels_join_them(client: AppClient) -> None:
    items = _items(30)
    r = client.post("/v1/scores", json={"models": ["damaging"], "items": items})
    assert r.status_code == 200
    assert client.get("/v1/scores/damaging/nope").status_code == 404  # an unknown item: nothing to log
    _flush(client)
    ws = client.app.state.workspace  # type: ignore[attr-defined]
    assert ws.log.versions("damaging") == {1: 30}
    body = {
        "model": "damaging",
        "labels": [
            {"id": items[0]["id"], "label": "True"},
            {"id": items[1]["id"], "label": "False"},
            {"id": items[1]["id"], "label": "True"},
            {"id": "nope", "label": "True"},
            {"id": items[2]["id"], "label": "sometimes"},
        ],
    }
    r = client.post("/v1/labels", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["accepted"], out["refused"]) == (2, 3)
    assert [x.get("error", {}).get("code") for x in out["results"]] == [
        None,
        None,
        "duplicate_label",
        "unknown_item",
        "unknown_class",
    ]
    with ws.engine.connect() as conn:
        assert conn.execute(sa.select(tables.monitor_labels.c.source).limit(1)).scalar() == "api:product"


def test_labels_need_a_token_and_a_known_model(client: AppClient) -> None:
    body = {"model": "damaging", "labels": [{"id": "1", "label": "True"}]}
    assert client.post("/v1/labels", json=body, headers={"authorization": ""}).status_code == 401
    r = client.post("/v1/labels", json={**body, "model": "nope"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_model"
    r = client.post("/v1/labels", json={"model": "damaging", "labels": "x"})
    assert r.status_code == 422


def test_a_broken_log_never_fails_or_slows_a_score(client: AppClient) -> None:
    engine = client.app.state.workspace.engine  # type: ignore[attr-defined]
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE prediction_log RENAME TO prediction_log_gone"))
    try:
        items = _items(5, seed=1)
        started = time.perf_counter()
        for item in items:
            r = client.post("/v1/scores", json={"models": ["damaging"], "items": [item]})
            assert r.status_code == 200 and "error" not in r.json()["scores"][item["id"]]["damaging"]
        assert time.perf_counter() - started < 5
        _flush(client)
        metrics = client.get("/metrics").text
        assert 'assay_prediction_log_dropped_total{reason="store_error"} 5.0' in metrics
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE prediction_log_gone RENAME TO prediction_log"))


@pytest.mark.parametrize("client", ["store", "parquet"], indirect=True)
def test_monitor_states_reach_the_api_and_prometheus(client: AppClient) -> None:
    items = _items(600, seed=2)
    for k in range(0, 600, 100):
        client.post("/v1/scores", json={"models": ["damaging"], "items": items[k : k + 100]})
    _flush(client)
    watch = client.app.state.watch  # type: ignore[attr-defined]
    results = watch.check_all(now=time.time() + 2 * 86400)  # the day's window has closed
    assert results and results[0].windows >= 1
    states = client.get("/v1/monitors").json()["monitors"]
    assert {s["monitor"] for s in states} >= {"data_drift", "feature:words_added", "prediction_drift"}
    metrics = client.get("/metrics").text
    assert 'assay_monitor_state{model="damaging",monitor="data_drift"}' in metrics
    assert "assay_prediction_log_written_total 600.0" in metrics
    report = client.get("/v1/monitors/damaging/report?window=100")
    assert report.status_code == 200 and len(report.json()["windows"]) == 6
    assert client.get("/v1/monitors/damaging/report", headers={"authorization": ""}).status_code == 401


def test_the_admin_pages_need_an_admin(client: AppClient) -> None:
    r = client.get("/review/monitoring")
    assert r.status_code == 303 and "/review/login" in r.headers["location"]
    client.post("/v1/session", json={"username": "root", "password": PASSWORD})
    items = _items(600, seed=3)
    for k in range(0, 600, 200):
        client.post("/v1/scores", json={"models": ["damaging"], "items": items[k : k + 200]})
    _flush(client)
    page = client.get("/review/monitoring")
    assert page.status_code == 200 and "damaging" in page.text and "script" not in page.text.lower()
    assert "default-src 'none'" in page.headers["content-security-policy"]
    report = client.get("/review/monitoring/damaging?window=600")
    assert (
        report.status_code == 200 and "<svg" in report.text and "Drift per feature over time" in report.text
    )
