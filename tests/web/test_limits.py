"""Protecting the service: body size (413), per-client (429) and total (503) concurrency, timeout (504)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from assay.settings import Settings
from assay.web.app import create_app
from tests.servers import AppClient, edit_items


def _client(home: Path, **overrides: Any) -> AppClient:
    return AppClient(create_app(Settings.load(home=home, environ={}, **overrides)))


@pytest.fixture
def small(trained_home: Path) -> Iterator[AppClient]:
    """An app that takes one request per client, two in total, and 2 kB bodies."""
    with _client(
        trained_home, max_body_bytes=2000, max_concurrent_per_client=1, max_concurrent_total=2
    ) as client:
        yield client


def _error(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/json"
    return response.json()["error"]  # type: ignore[no-any-return]


def test_a_body_over_the_limit_is_413(small: AppClient) -> None:
    items = edit_items(20)
    response = small.post("/v1/scores", json={"models": ["damaging"], "items": items})
    assert response.status_code == 413
    assert _error(response)["code"] == "payload_too_large" and _error(response)["field"] == "body"
    assert small.post("/v1/scores", json={"models": ["damaging"], "items": items[:2]}).status_code == 200


def test_a_chunked_body_is_cut_off_at_the_limit(small: AppClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"models": ["damaging"], "items": ['
        for _ in range(100):
            yield b'{"id": "x"},' * 5

    response = small.post("/v1/scores", content=chunks())
    assert "content-length" not in response.request.headers
    assert response.status_code == 413 and _error(response)["code"] == "payload_too_large"


class Held:
    """A request whose body is held back, so it stays in flight until ``release()``."""

    def __init__(self, client: AppClient, http: httpx.AsyncClient) -> None:
        self.client = client
        self.event: anyio.Event = client.portal.call(anyio.Event)
        self.future = client.portal.start_task_soon(self._send, http)

    async def _send(self, http: httpx.AsyncClient) -> httpx.Response:
        async def body() -> AsyncIterator[bytes]:
            yield b'{"models": ["damaging"], '
            await self.event.wait()
            yield b'"items": []}'

        return await http.post("/v1/scores", content=body())

    def release(self) -> httpx.Response:
        self.client.portal.call(self.event.set)
        return self.future.result(timeout=30)


def test_per_client_and_total_concurrency(small: AppClient) -> None:
    other = small.async_client(("10.0.0.2", 1))
    third = small.async_client(("10.0.0.3", 1))
    held = Held(small, small.http)
    try:
        small.portal.call(anyio.sleep, 0.05)  # let it get in
        busy = small.get("/v1/models")
        assert busy.status_code == 429
        assert _error(busy)["code"] == "too_many_requests" and busy.headers["retry-after"] == "1"
        assert small.portal.call(other.get, "/v1/models").status_code == 200  # another client is fine
        held_too = Held(small, other)
        small.portal.call(anyio.sleep, 0.05)
        full = small.portal.call(third.get, "/v1/models")
        assert full.status_code == 503 and _error(full)["code"] == "unavailable"
        assert small.get("/healthz").status_code == 200  # watching an overloaded server still works
        assert small.get("/metrics").status_code == 200
        assert held_too.release().status_code == 200
    finally:
        assert held.release().status_code == 200
        small.portal.call(other.aclose)
        small.portal.call(third.aclose)
    assert small.get("/v1/models").status_code == 200  # slots are given back
    metrics = small.get("/metrics").text
    assert 'assay_errors_total{code="too_many_requests"} 1.0' in metrics
    assert 'assay_errors_total{code="unavailable"} 1.0' in metrics


def test_made_up_tokens_do_not_make_a_client_new(small: AppClient) -> None:
    # The limit runs before tokens are checked: a new junk token per request must not buy a slot.
    held = Held(small, small.http)
    try:
        small.portal.call(anyio.sleep, 0.05)
        busy = small.get("/v1/models", headers={"Authorization": "Bearer junk-1"})
        assert busy.status_code == 429 and _error(busy)["code"] == "too_many_requests"
    finally:
        assert held.release().status_code == 200


def test_slow_scoring_is_answered_504(trained_home: Path) -> None:
    with _client(trained_home, scoring_timeout_s=1e-6) as client:
        big = client.post("/v1/scores", json={"models": ["damaging"], "items": edit_items(100)})
        assert big.status_code == 504 and _error(big)["code"] == "timeout"
        # A small request is scored on the event loop and cannot time out half-way.
        assert (
            client.post("/v1/scores", json={"models": ["damaging"], "items": edit_items(1)}).status_code
            == 200
        )
