"""DELETE /v1/items/{id} and GET /v1/forget/{request} through the real app."""

from __future__ import annotations

import time

from assay.serving import tokens
from assay.settings import Settings
from assay.web.app import create_app
from tests.servers import AppClient
from tests.unlearning.conftest import sharded_template, sharded_workspace, training_ids  # noqa: F401
from tests.web.test_api import assert_error


def test_an_admin_token_forgets_an_item_over_http(sharded_workspace):  # noqa: F811
    ws = sharded_workspace
    reader = tokens.create_token(ws.engine, "product")
    admin = tokens.create_token(ws.engine, "dpo", admin=True)
    item = training_ids(ws.settings.home.parent / "data")[20]
    settings = Settings.load(home=ws.settings.home, environ={}, alias_refresh_s=0.05)
    with AppClient(create_app(settings)) as client:
        assert_error(client.delete(f"/v1/items/{item}"), 401, "token_required", "Authorization")
        denied = client.delete(f"/v1/items/{item}", headers={"authorization": f"Bearer {reader}"})
        assert_error(denied, 403, "forbidden", "Authorization")
        auth = {"authorization": f"Bearer {admin}"}
        assert_error(
            client.delete(f"/v1/items/{item}?model=nope", headers=auth), 404, "unknown_model", "model"
        )
        accepted = client.delete(f"/v1/items/{item}?model=damaging", headers=auth)
        assert accepted.status_code == 202, accepted.text
        body = accepted.json()
        assert body["actor"] == "token dpo" and body["versions"][0]["version"] == 1
        assert item not in accepted.text  # the request keeps salted hashes, not the id
        # From the 202 on, no alias points at the version that held the item.
        assert 1 not in ws.registry.aliases("damaging").values()
        location = accepted.headers["location"]
        deadline = time.monotonic() + 300
        while (status := client.get(location, headers=auth).json())["status"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert status["status"] == "done" and status["versions"][0]["replacement"] == 2
        assert_error(client.get("/v1/forget/abc", headers=auth), 422, "invalid_input", "request")
        assert_error(client.get("/v1/forget/99", headers=auth), 404, "unknown_request", "request")
