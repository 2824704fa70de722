"""Schemathesis fuzzes the OpenAPI document against the real app: no 5xx, every response conforms.

One home serves both runs: a trained workspace with an API token, an admin, an open review
campaign (named as the document's examples name it) and a judgment a product reported. The first
run sends every operation the token; the review operations then refuse (401) except the judgments,
which take a token. The second run sends the review operations as the admin, with the session
cookie and CSRF header that logging in through ``POST /v1/session`` returned.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from assay.review import judgments, worksets
from assay.serving import tokens
from assay.settings import Settings
from assay.web.app import create_app
from assay.web.sessions import CSRF_HEADER, SESSION_COOKIE
from assay.workspace import Workspace
from tests.reviewing import PASSWORD, campaign, items_file, users

ADMIN = "root"
# The campaign and items the document's examples name, so that they reach real ones: the admin
# holds a workset with both items, to label one and skip the other.
CAMPAIGN = "edits-2026"
LABEL_ITEM, SKIP_ITEM = "100003", "100004"
# Schema-valid data may still be refused (422) where validity depends on the model (its feature
# names, classes) or on rules JSON Schema cannot state (item ids unique, tensor shape = data
# length, the item being in the reviewer's workset): no positive-data check.
EXCLUDED = [schemathesis.checks.positive_data_acceptance]


@dataclass(frozen=True)
class Fuzzed:
    schema: schemathesis.BaseSchema
    token: str


@dataclass(frozen=True)
class Session:
    cookie: str  # the signed value of the session cookie
    csrf: str


def _log_in(schema: schemathesis.BaseSchema) -> Session:
    """Log the admin in through the app's own ``POST /v1/session``."""
    operation = schema["/v1/session"]["POST"]
    response = operation.Case(
        body={"username": ADMIN, "password": PASSWORD}, media_type="application/json"
    ).call()
    assert response.status_code == 200, response.content
    cookies: SimpleCookie = SimpleCookie()
    for header in response.headers["set-cookie"]:
        cookies.load(header)
    return Session(cookies[SESSION_COOKIE].value, response.json()["csrf_token"])


@pytest.fixture(scope="module")
def fuzzed(trained_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Fuzzed:
    """The app over a copy of the trained home, loaded by schemathesis (it runs the app's lifespan).

    The home also holds the review data the document's examples name (see the module docstring).
    """
    root = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(trained_template, root / "copy")
    home_settings = Settings.load(home=root / "copy" / "home", environ={})
    ws = Workspace.open(home_settings)
    try:
        token = tokens.create_token(ws.engine, "fuzz")
        (admin,) = users(ws, ADMIN, role="admin")
        made = campaign(
            ws,
            items_file(root / "items", n=20),
            name=CAMPAIGN,
            selection="list",
            ids=[LABEL_ITEM, SKIP_ITEM, "100005"],
            labels_per_item=2,
            link_template="https://example.org/?diff={id}",
        )
        worksets.take_workset(ws.engine, made, admin, size=3, ttl_s=home_settings.workset_ttl_s)
        judgments.record_judgment(
            ws.engine,
            model="damaging",
            item_id=LABEL_ITEM,
            label="False",
            classes=made.classes,
            token_name="fuzz",
        )
    finally:
        ws.close()
    return Fuzzed(schemathesis.openapi.from_asgi("/openapi.json", create_app(home_settings)), token)


@pytest.fixture(scope="module")
def api_schema(fuzzed: Fuzzed) -> schemathesis.BaseSchema:
    return fuzzed.schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_keeps_its_document(case: schemathesis.Case, fuzzed: Fuzzed) -> None:
    # With the token, write endpoints are fuzzed past authentication too.
    case.call_and_validate(headers={"Authorization": f"Bearer {fuzzed.token}"}, excluded_checks=EXCLUDED)


# Logging in needs no session (the first run fuzzes it), and each example costs an argon2 hash.
review = schemathesis.pytest.from_fixture("api_schema").include(tag="review").exclude(operation_id="log_in")


# Schemathesis's own caching is off (refresh_interval=None): this provider keeps the session.
@review.auth(refresh_interval=None)
class AdminSession:
    """The admin's session cookie and CSRF header on every case that its security does not leave out.

    One login serves all the cases of an app, except logging out, which ends the session it is
    sent with: each logout gets a session of its own.
    """

    def __init__(self) -> None:
        self.sessions: dict[int, Session] = {}  # by id(app)

    def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> Session:
        if case.method.upper() == "DELETE":
            return _log_in(case.operation.schema)
        key = id(context.app)
        if key not in self.sessions:
            self.sessions[key] = _log_in(case.operation.schema)
        return self.sessions[key]

    def set(self, case: schemathesis.Case, data: Session, context: schemathesis.AuthContext) -> None:
        case.cookies = {**(case.cookies or {}), SESSION_COOKIE: data.cookie}
        case.headers = {**(case.headers or {}), CSRF_HEADER: data.csrf}


@review.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_review_api_keeps_its_document_with_a_session(case: schemathesis.Case) -> None:
    case.call_and_validate(excluded_checks=EXCLUDED)
