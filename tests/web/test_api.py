"""The HTTP API through the real app: /v1, health, metrics, tokens, the error shape; and a real
uvicorn server with several workers following a promotion under load (/v2 is tests/web/test_oip.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import lightgbm
import numpy as np
import orjson
import pytest
from click.testing import CliRunner
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from assay.cli import main
from assay.modelling.queries import answer_threshold_query
from assay.modelling.spec_file import load_spec
from assay.modelling.training import train
from assay.registry.artifacts import LIGHTGBM_FILE
from assay.registry.importer import import_version
from assay.serving import tokens
from assay.settings import Settings
from assay.web.api import BIG_BODY_BYTES
from assay.web.app import create_app
from assay.workspace import Workspace
from tests.reviewing import Server
from tests.servers import AppClient, add_version, edit_items


@pytest.fixture
def settings(trained_home: Path) -> Settings:
    return Settings.load(home=trained_home, environ={}, alias_refresh_s=0.05)


@pytest.fixture
def client(settings: Settings) -> Iterator[AppClient]:
    with AppClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def token(trained_workspace: Workspace) -> str:
    return tokens.create_token(trained_workspace.engine, "tests")


def assert_error(response: httpx.Response, status: int, code: str, field: str | None = None) -> None:
    """The one error shape of the API, pinned."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) <= {"code", "message", "field"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert body["error"].get("field") == field


def test_score_shape_of_the_issue(client: AppClient) -> None:
    item = edit_items(1)[0]
    response = client.post("/v1/scores", json={"models": ["damaging"], "items": [item, {"id": "456"}]})
    assert response.status_code == 200
    scores = response.json()["scores"]
    score = scores[item["id"]]["damaging"]
    assert score["version"] == "1"
    assert isinstance(score["prediction"], bool)
    assert set(score["probability"]) == {"true", "false"}
    assert score["probability"]["true"] + score["probability"]["false"] == pytest.approx(1.0)
    assert set(score["operating_points"]) == {"likelybad", "verylikelybad"}
    assert scores["456"]["damaging"]["error"]["code"] == "unknown_item"


def test_many_models_many_items_features_and_explanations(client: AppClient) -> None:
    items = edit_items(3)
    body = {
        "models": ["damaging", "damaging@1", "damaging@candidate"],
        "items": items,
        "features": True,
        "explain": 2,
    }
    scores = client.post("/v1/scores", json=body).json()["scores"]
    for item in items:
        results = scores[item["id"]]
        assert set(results) == {"damaging", "damaging@1", "damaging@candidate"}
        score = results["damaging"]
        assert score["features"] == item["features"]
        assert len(score["explanation"]["contributions"]) == 2
        assert score["explanation"]["class"] == "True"


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (b"{not json", 400, "malformed_request", "body"),
        (b"", 400, "malformed_request", "body"),
        (b"[]", 422, "invalid_input", "body"),
        (b'{"models": ["damaging"]}', 422, "invalid_input", "items"),
        (b'{"models": ["damaging"], "items": [], "extra": 1}', 422, "invalid_input", "extra"),
        (b'{"models": "damaging", "items": []}', 422, "invalid_input", "models"),
        (b'{"models": [], "items": []}', 422, "invalid_input", "models"),
        (b'{"models": ["nope"], "items": []}', 404, "unknown_model", "model"),
        (b'{"models": ["damaging@7"], "items": []}', 404, "unknown_version", "model"),
        (b'{"models": ["damaging@beta"], "items": []}', 404, "unknown_alias", "model"),
        ('{"models": ["damaging@\u00b2"], "items": []}'.encode(), 404, "unknown_alias", "model"),
        (b'{"models": ["damaging@' + b"9" * 5000 + b'"], "items": []}', 404, "unknown_alias", "model"),
        (b'{"models": ["../etc"], "items": []}', 422, "invalid_input", "model name"),
        (b'{"models": ["damaging"], "items": {}}', 422, "invalid_input", "items"),
        (b'{"models": ["damaging"], "items": [1]}', 422, "invalid_input", "items[0]"),
        (b'{"models": ["damaging"], "items": [{"id": 1}, {"id": "1"}]}', 422, "duplicate_id", "items[1].id"),
        (b'{"models": ["damaging"], "items": [{"id": null}]}', 422, "invalid_id", "items[0].id"),
        (b'{"models": ["damaging"], "items": [], "features": 1}', 422, "invalid_input", "features"),
        (b'{"models": ["damaging"], "items": [], "explain": 99}', 422, "invalid_input", "explain"),
        (
            b'{"models": ["damaging"], "items": [{"id": 1, "features": {"words_added": NaN}}]}',
            400,
            "malformed_request",
            "body",
        ),
        # JSON has no inf: a number too large for a double is how a client sends one.
        (
            b'{"models": ["damaging"], "items": [{"id": 1, "features": {"words_added": 1e400}}]}',
            400,
            "malformed_request",
            "body",
        ),
    ],
)
def test_request_errors_have_one_shape(
    client: AppClient, body: bytes, status: int, code: str, field: str
) -> None:
    assert_error(client.post("/v1/scores", content=body), status, code, field)
    # A body over BIG_BODY_BYTES is read on the scoring thread: the same checks, the same errors.
    padded = body + b" " * (BIG_BODY_BYTES + 1)
    assert_error(client.post("/v1/scores", content=padded), status, code, field)


def test_big_bodies_are_scored_like_small_ones(trained_home: Path) -> None:
    settings = Settings.load(home=trained_home, environ={}, max_items_per_request=400)
    items = edit_items(400, seed=5)
    body = orjson.dumps({"models": ["damaging", "damaging@1"], "items": items[:200]})
    assert len(body) > BIG_BODY_BYTES
    with AppClient(create_app(settings)) as client:
        big = client.post("/v1/scores", content=body).json()["scores"]
        small = {}
        for start in range(0, 200, 10):
            part = {"models": ["damaging", "damaging@1"], "items": items[start : start + 10]}
            small.update(client.post("/v1/scores", json=part).json()["scores"])
        too_many = client.post("/v1/scores", json={"models": ["damaging", "damaging@1"], "items": items})
    assert big == small and len(big) == 200
    assert_error(too_many, 413, "too_many_items", "items")


def test_scoring_threads_are_capped_at_the_cores(client: AppClient) -> None:
    """With local I/O scoring only computes: one thread per core at a time, the others wait."""
    svc = client.app.state.services
    slots = svc.scorer.threads
    running, most, changed = [0], [0], threading.Condition()
    score = svc.scorer.score

    def counted(*args: Any, **kwargs: Any) -> dict[str, Any]:
        with changed:
            running[0] += 1
            most[0] = max(most[0], running[0])
            changed.notify_all()
            # Stay until every slot is taken (a loaded machine may start threads late), then a
            # while longer, so a request let through past the cap would be seen running too.
            changed.wait_for(lambda: running[0] >= slots, timeout=5)
        time.sleep(0.1)
        with changed:
            running[0] -= 1
        return score(*args, **kwargs)

    svc.scorer.score = counted
    items = edit_items(50)  # 50 items: scored on a thread
    small = orjson.dumps({"models": ["damaging"], "items": items})
    big = small + b" " * BIG_BODY_BYTES  # read on the thread too

    async def together() -> list[int]:
        requests = [client.http.post("/v1/scores", content=b) for b in [small, big] * (slots + 1)]
        return [r.status_code for r in await asyncio.gather(*requests)]

    assert client.portal.call(together) == [200] * 2 * (slots + 1)
    assert most[0] == slots


def test_item_errors_are_reported_on_the_item(client: AppClient) -> None:
    items = edit_items(3)
    items[1]["features"]["words_added"] = "three"
    scores = client.post("/v1/scores", json={"models": ["damaging"], "items": items}).json()["scores"]
    error = scores[items[1]["id"]]["damaging"]["error"]
    assert error == {
        "code": "invalid_input",
        "message": "feature 'words_added' must be a number; got str",
        "field": "features.words_added",
    }
    assert "probability" in scores[items[0]["id"]]["damaging"]
    assert "probability" in scores[items[2]["id"]]["damaging"]


def test_every_kind_of_bad_feature_is_named_on_its_item(client: AppClient) -> None:
    good = edit_items(1)[0]["features"]
    article = {"length": 12000.0, "refs": 30, "topic": "science"}
    bad = {
        "missing": ("damaging", {k: v for k, v in good.items() if k != "words_added"}, "missing_feature"),
        "unknown": ("damaging", {**good, "word_added": 1}, "unknown_feature"),
        "bool": ("damaging", {**good, "words_added": True}, "invalid_input"),
        "null": ("damaging", {**good, "words_added": None}, "invalid_input"),
        "object": ("damaging", {**good, "words_added": {"n": 1}}, "invalid_input"),
        "category": ("quality", {**article, "topic": "chess"}, "unknown_category"),
    }
    for item_id, (model, features, code) in bad.items():
        response = client.post(
            "/v1/scores", json={"models": [model], "items": [{"id": item_id, "features": features}]}
        )
        assert response.status_code == 200, (item_id, response.text)
        error = response.json()["scores"][item_id][model]["error"]
        assert error["code"] == code and error["field"].startswith("features"), (item_id, error)


def test_a_lightgbm_model_is_served_as_lightgbm_itself_scores(trained_home: Path) -> None:
    spec_text = (trained_home.parent / "data" / "damaging.toml").read_text()
    spec_path = trained_home.parent / "data" / "gbm.toml"
    spec_path.write_text(
        spec_text.replace('name = "damaging"', 'name = "gbm"').replace(
            'candidates = ["logistic_regression", "lightgbm"]', 'candidates = ["lightgbm"]'
        )
    )
    ws = Workspace.open(Settings.load(home=trained_home, environ={}))
    try:
        train(load_spec(spec_path), ws.registry)
        record = ws.registry.resolve("gbm")
        assert record.candidate == "lightgbm"
        booster = lightgbm.Booster(model_file=str(record.directory / LIGHTGBM_FILE))
        schema = ws.registry.load(record).schema
    finally:
        ws.close()
    items = edit_items(30, seed=11)
    expected = booster.predict(np.vstack([schema.encode_record(i["features"]) for i in items]))
    with AppClient(create_app(Settings.load(home=trained_home, environ={}))) as client:
        # One item takes the single-row fast path, thirty the batch path; both must be LightGBM's own.
        one = client.post("/v1/scores", json={"models": ["gbm"], "items": items[:1], "explain": 3}).json()
        many = client.post("/v1/scores", json={"models": ["gbm"], "items": items}).json()
    first = one["scores"][items[0]["id"]]["gbm"]
    assert first["probability"]["true"] == pytest.approx(expected[0], abs=1e-12)
    assert len(first["explanation"]["contributions"]) == 3
    for k, item in enumerate(items):
        assert many["scores"][item["id"]]["gbm"]["probability"]["true"] == pytest.approx(
            expected[k], abs=1e-12
        )


def test_too_many_items_is_413(trained_home: Path) -> None:
    settings = Settings.load(home=trained_home, environ={}, max_items_per_request=4)
    with AppClient(create_app(settings)) as client:
        items = edit_items(3)
        assert client.post("/v1/scores", json={"models": ["damaging"], "items": items}).status_code == 200
        too_many = client.post("/v1/scores", json={"models": ["damaging", "damaging@1"], "items": items})
        assert_error(too_many, 413, "too_many_items", "items")


def test_routing_errors_use_the_same_shape(client: AppClient) -> None:
    assert_error(client.get("/v1/nothing"), 404, "no_route")
    wrong = client.delete("/v1/scores")
    assert_error(wrong, 405, "method_not_allowed")
    assert wrong.headers["allow"] == "POST"


def test_a_bug_is_a_500_in_the_one_shape(settings: Settings) -> None:
    app = create_app(settings)

    async def broken(request: Request) -> Response:
        raise RuntimeError("a bug")

    app.router.routes.append(Route("/v1/broken", broken))
    with AppClient(app, raise_app_exceptions=False) as client:
        response = client.get("/v1/broken")
        metrics = client.get("/metrics").text
    assert_error(response, 500, "internal_error")
    assert "a bug" not in response.text
    assert 'assay_errors_total{code="internal_error"} 1.0' in metrics  # bugs are counted, to alert on


def test_pages_get_pages_and_the_api_gets_json(client: AppClient) -> None:
    page = client.get("/review/no-such-page")
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert_error(client.get("/v1/no-such-endpoint"), 404, "no_route")


def test_models_and_threshold_queries(client: AppClient, trained_workspace: Workspace) -> None:
    listing = client.get("/v1/models").json()["models"]
    assert {m["name"]: m["aliases"]["production"] for m in listing} == {"damaging": 1, "quality": 1}
    query = "maximum recall @ precision >= 0.6"
    detail = client.get(
        "/v1/models/damaging", params={"threshold": [query, "maximum precision @ recall >= 0.5"]}
    )
    assert detail.status_code == 200
    info = detail.json()
    assert info["version"] == "1" and info["positive"] == "True" and info["classes"] == ["False", "True"]
    assert [f["name"] for f in info["features"]][:2] == ["longest_repeated_char_added", "words_added"]
    assert "thresholds" not in info["statistics"] and "per_class" in info["statistics"]
    assert info["operating_points"]["likelybad"]["query"] == query
    table = trained_workspace.registry.load(trained_workspace.registry.resolve("damaging")).evaluation[
        "thresholds"
    ]
    assert info["thresholds"][0]["answer"] == answer_threshold_query(table["True"], query)
    assert info["thresholds"][0]["answer"]["threshold"] == info["operating_points"]["likelybad"]["threshold"]
    assert_error(
        client.get("/v1/models/damaging", params={"threshold": "most recall"}),
        422,
        "invalid_input",
        "threshold",
    )
    assert_error(client.get("/v1/models/quality", params={"threshold": query}), 422, "invalid_input", "class")
    by_class = client.get("/v1/models/quality", params={"threshold": query, "class": "good"}).json()
    assert by_class["thresholds"][0]["class"] == "good"
    assert_error(client.get("/v1/models/nope"), 404, "unknown_model", "model")


def test_feature_tables_precache_and_the_one_item_shortcut(client: AppClient, token: str) -> None:
    items = edit_items(4)
    rows = {"rows": items}
    assert_error(client.put("/v1/features/damaging", json=rows), 401, "token_required", "Authorization")
    assert client.put("/v1/features/damaging", json=rows).headers["www-authenticate"].startswith("Bearer")
    auth = {"Authorization": f"Bearer {token}"}
    assert_error(
        client.put("/v1/features/damaging", json=rows, headers={"Authorization": "Bearer nope"}),
        401,
        "invalid_token",
        "Authorization",
    )
    loaded = client.put("/v1/features/damaging", json=rows, headers=auth)
    assert loaded.json() == {"model": "damaging", "loaded": 4}
    bad = {"rows": [{"id": "x", "features": {"words_added": 1}}]}
    assert_error(
        client.put("/v1/features/damaging", json=bad, headers=auth),
        422,
        "missing_feature",
        "rows[0].features.longest_repeated_char_added",
    )

    ids = [item["id"] for item in items]
    precache = client.post("/v1/precache", json={"models": ["damaging"], "ids": [*ids, "nope"]}, headers=auth)
    assert precache.json() == {"scored": 4, "cached": 0, "failed": {"unknown_item": 1}}

    one = client.get(f"/v1/scores/damaging/{ids[0]}", params={"features": "true", "explain": "3"})
    assert one.status_code == 200
    score = one.json()["scores"][ids[0]]["damaging"]
    assert score["features"] == items[0]["features"] and len(score["explanation"]["contributions"]) == 3
    plain = client.get(f"/v1/scores/damaging/{ids[0]}").json()["scores"][ids[0]]["damaging"]
    assert set(plain) == {"version", "prediction", "probability", "operating_points"}
    assert_error(client.get("/v1/scores/damaging/nope"), 404, "unknown_item", "id")
    assert_error(
        client.get(f"/v1/scores/damaging/{ids[0]}", params={"explain": "lots"}),
        422,
        "invalid_input",
        "explain",
    )
    for explain in ("\u00b2", "9" * 5000):
        response = client.get(f"/v1/scores/damaging/{ids[0]}", params={"explain": explain})
        assert_error(response, 422, "invalid_input", "explain")
    metrics = client.get("/metrics").text
    assert 'assay_cache_lookups_total{result="hit"} 1.0' in metrics  # the plain GET came from the precache


def test_revoked_tokens_stop_working(client: AppClient, token: str, trained_workspace: Workspace) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    assert (
        client.post("/v1/precache", json={"models": ["damaging"], "ids": []}, headers=auth).status_code == 200
    )
    tokens.revoke_token(trained_workspace.engine, "tests")
    assert_error(
        client.post("/v1/precache", json={"models": ["damaging"], "ids": []}, headers=auth),
        401,
        "invalid_token",
        "Authorization",
    )


def test_the_app_follows_a_promotion(client: AppClient, trained_workspace: Workspace) -> None:
    item = edit_items(1)[0]

    def version() -> str:
        response = client.post("/v1/scores", json={"models": ["damaging"], "items": [item]})
        assert response.status_code == 200
        return response.json()["scores"][item["id"]]["damaging"]["version"]

    assert version() == "1"
    new = add_version(trained_workspace, "damaging", alias="production")
    deadline = time.monotonic() + 10
    while version() != str(new):
        assert time.monotonic() < deadline, "the promotion was not followed"
        time.sleep(0.02)
    assert client.get("/v1/models").json()["models"][0]["aliases"]["production"] == new


def test_health_readiness_metrics_and_docs(client: AppClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["status"] == "ready"
    client.post("/v1/scores", json={"models": ["damaging"], "items": edit_items(2)})
    client.post("/v1/scores", json={"models": ["nope"], "items": []})
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'assay_requests_total{method="POST",route="/v1/scores",status="200"} 1.0' in text
    assert 'assay_request_duration_seconds_count{route="/v1/scores"} 2.0' in text
    assert 'assay_scores_total{model="damaging",version="1"} 2.0' in text
    assert 'assay_errors_total{code="unknown_model"} 1.0' in text
    assert 'assay_model_loaded{model="quality",version="1"} 1.0' in text
    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.") and "/v1/scores" in document["paths"]
    assert "/v1/scores" in client.get("/docs").text


@pytest.mark.redis
def test_scores_are_shared_through_redis(trained_home: Path, redis_url: str) -> None:
    settings = Settings.load(home=trained_home, environ={}, redis_url=redis_url)
    item = edit_items(1, seed=77)[0]
    ws = Workspace.open(settings)
    try:
        ws_token = tokens.create_token(ws.engine, "tests")
    finally:
        ws.close()
    auth = {"Authorization": f"Bearer {ws_token}"}
    with AppClient(create_app(settings)) as first, AppClient(create_app(settings)) as second:
        first.put("/v1/features/damaging", json={"rows": [item]}, headers=auth).raise_for_status()
        assert (
            first.post(
                "/v1/precache", json={"models": ["damaging"], "ids": [item["id"]]}, headers=auth
            ).json()["scored"]
            == 1
        )
        second.get(f"/v1/scores/damaging/{item['id']}").raise_for_status()
        assert 'assay_cache_lookups_total{result="hit"} 1.0' in second.get("/metrics").text
        # Loading the item's features again drops its cached scores everywhere.
        first.put("/v1/features/damaging", json={"rows": [item]}, headers=auth).raise_for_status()
        second.get(f"/v1/scores/damaging/{item['id']}").raise_for_status()
        assert 'assay_cache_lookups_total{result="miss"} 1.0' in second.get("/metrics").text


def _changes_reach_the_other_app(settings: Settings) -> None:
    """Two apps with caches of their own over one store: a PUT to one drops the other's stale score,
    and a promotion made outside both is followed by both."""
    ws = Workspace.open(settings)
    try:
        auth = {"Authorization": f"Bearer {tokens.create_token(ws.engine, 'tests')}"}
    finally:
        ws.close()
    before, after = edit_items(1, seed=77)[0], edit_items(1, seed=78)[0]
    after["id"] = before["id"]
    url = f"/v1/scores/damaging/{before['id']}"

    def probability(app: AppClient) -> dict[str, float]:
        return app.get(url).json()["scores"][before["id"]]["damaging"]["probability"]

    with AppClient(create_app(settings)) as first, AppClient(create_app(settings)) as second:
        first.put("/v1/features/damaging", json={"rows": [before]}, headers=auth).raise_for_status()
        old = probability(second)
        assert probability(second) == old  # now from the second app's own cache
        first.put("/v1/features/damaging", json={"rows": [after]}, headers=auth).raise_for_status()
        new = probability(first)
        assert new != old
        deadline = time.monotonic() + 5
        while probability(second) != new:
            assert time.monotonic() < deadline, "the other app kept serving the stale score"
            time.sleep(0.01)
        ws = Workspace.open(settings)
        try:
            promoted = str(add_version(ws, "damaging", alias="production"))
        finally:
            ws.close()
        deadline = time.monotonic() + 5
        for app in (first, second):
            while app.get(url).json()["scores"][before["id"]]["damaging"]["version"] != promoted:
                assert time.monotonic() < deadline, "an app did not follow the promotion"
                time.sleep(0.01)


def test_changes_reach_every_process_without_redis(settings: Settings) -> None:
    _changes_reach_the_other_app(settings)


@pytest.mark.postgres
def test_changes_reach_every_host_on_postgres(trained_home: Path, postgres_url: str, tmp_path: Path) -> None:
    """Hosts share PostgreSQL (NOTIFY): invalidations and alias moves, with no poll to help them."""
    source = Workspace.open(Settings.load(home=trained_home, environ={}))
    settings = Settings.load(home=tmp_path / "pg", environ={}, database_url=postgres_url, alias_refresh_s=60)
    target = Workspace.open(settings)
    try:
        source.registry.export("damaging@1", tmp_path / "d.assay")
        import_version(target.registry, tmp_path / "d.assay")
        target.registry.promote("damaging", 1, actor="tests", reason="a copy", force=True)
    finally:
        source.close()
        target.close()
    _changes_reach_the_other_app(settings)


# --- a real server ----------------------------------------------------------------------------


@pytest.fixture
def server(trained_home: Path, tmp_path: Path) -> Iterator[str]:
    """``assay serve --workers 2`` in a subprocess; yields its base URL once it is ready."""
    running = Server(
        trained_home, tmp_path / "server.log", env={"ASSAY_ALIAS_REFRESH_S": "0.2"}, args=["--workers", "2"]
    ).start(timeout_s=180)
    try:
        yield running.url
    finally:
        running.stop()


@pytest.mark.timeout(600)
def test_a_promotion_under_load_fails_no_request(server: str, trained_workspace: Workspace) -> None:
    items = edit_items(2)
    body = {"models": ["damaging"], "items": items}
    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=server, timeout=30) as http:
            while not stop.is_set():
                response = http.post("/v1/scores", json=body)
                version = response.json()["scores"][items[0]["id"]]["damaging"].get("version", "?")
                seen.append((response.status_code, version))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        new = add_version(trained_workspace, "damaging", alias="production")
        deadline = time.monotonic() + 60
        while sum(v == str(new) for _, v in seen[-20:]) < 20:  # both workers have moved
            assert time.monotonic() < deadline, "the server did not follow the promotion"
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert seen and all(status == 200 for status, _ in seen)
    assert {v for _, v in seen} == {"1", str(new)}
    # Both workers report into one /metrics.
    text = httpx.get(server + "/metrics").text
    total = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('assay_requests_total{method="POST",route="/v1/scores",status="200"}')
    )
    assert total == len(seen)

    # `assay precache --url` streams ids to the running server, with a token.
    token = tokens.create_token(trained_workspace.engine, "precache")
    auth = {"Authorization": f"Bearer {token}"}
    httpx.put(server + "/v1/features/damaging", json={"rows": items}, headers=auth).raise_for_status()
    ids = "".join(item["id"] + "\n" for item in items) + "nope\n"
    command = ["--home", str(trained_workspace.settings.home), "precache", "damaging", "--url", server]
    result = CliRunner().invoke(main, [*command, "--token", token], input=ids)
    assert result.exit_code == 0, result.output
    assert "scored 2, already cached 0, failed: unknown_item=1" in result.stderr
    refused = CliRunner().invoke(main, [*command, "--token", "wrong"], input=ids)
    assert refused.exit_code == 1 and "401" in refused.stderr


def _openapi_validator(document: dict[str, Any], name: str) -> jsonschema.Draft7Validator:
    """A validator of ``components.schemas[name]`` (OpenAPI 3.0's ``nullable`` as JSON Schema's null type)."""

    def plain(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: plain(v) for k, v in node.items() if k != "nullable"}
            if node.get("nullable") and isinstance(node.get("type"), str):
                out["type"] = [node["type"], "null"]
            return out
        return [plain(v) for v in node] if isinstance(node, list) else node

    root = plain(document)
    return jsonschema.Draft7Validator({**root, "$ref": f"#/components/schemas/{name}"})


def test_scores_are_decided_at_the_declared_groups_threshold(mitigated_home: Path) -> None:
    ws = Workspace.open(Settings.load(home=mitigated_home, environ={}))
    record = ws.registry.load(ws.registry.resolve("fairctx")).card["mitigation"]
    ws.close()
    items = []
    for item in edit_items(6, seed=21):
        anon = item["features"].pop("user_is_anon")
        items.append({**item, "context": {"user_is_anon": anon}})
    items[0]["context"] = {}  # no group: the fallback threshold
    with AppClient(create_app(Settings.load(home=mitigated_home, environ={}))) as client:
        response = client.post("/v1/scores", json={"models": ["fairctx"], "items": items})
        assert response.status_code == 200, response.text
        scores = response.json()["scores"]
        validator = _openapi_validator(client.get("/openapi.json").json(), "ScoreResponse")
        validator.validate(response.json())
        for item in items:
            score = scores[item["id"]]["fairctx"]
            group = item["context"].get("user_is_anon")
            t = record["fallback_threshold"] if group is None else record["thresholds"][str(group)]
            assert score["decision"] == {
                "attribute": "user_is_anon",
                "group": None if group is None else str(group),
                "threshold": t,
            }
            assert score["prediction"] is (score["probability"]["true"] >= t)
        unknown = {**items[1], "context": {"user_is_anon": "anonymous"}}
        body = client.post("/v1/scores", json={"models": ["fairctx"], "items": [unknown]}).json()
        error = body["scores"][unknown["id"]]["fairctx"]["error"]
        assert error["code"] == "unknown_group" and error["field"] == "context.user_is_anon"
        assert "'anonymous'" in error["message"]
        refused = client.post(
            "/v1/scores", json={"models": ["fairctx"], "items": [{**items[1], "context": [1]}]}
        )
        assert refused.json()["scores"][items[1]["id"]]["fairctx"]["error"]["field"] == "context"
