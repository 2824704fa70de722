"""Schemathesis fuzzes the OpenAPI document against the real app: no 5xx, every response conforms."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from assay import tokens
from assay.settings import Settings
from assay.web.app import create_app
from assay.workspace import Workspace


@pytest.fixture(scope="module")
def fuzzed(
    trained_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[schemathesis.BaseSchema, str]:
    """The app over a copy of the trained home, loaded by schemathesis (it runs the app's lifespan)."""
    root = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(trained_template, root / "copy")
    home_settings = Settings.load(home=root / "copy" / "home", environ={})
    ws = Workspace.open(home_settings)
    try:
        token = tokens.create_token(ws.engine, "fuzz")
    finally:
        ws.close()
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(home_settings)), token


@pytest.fixture(scope="module")
def api_schema(fuzzed: tuple[schemathesis.BaseSchema, str]) -> schemathesis.BaseSchema:
    return fuzzed[0]


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_keeps_its_document(
    case: schemathesis.Case, fuzzed: tuple[schemathesis.BaseSchema, str]
) -> None:
    # With the token, write endpoints are fuzzed past authentication too. Schema-valid data may
    # still be refused (422) where validity depends on the model (its feature names) or on rules
    # JSON Schema cannot state (item ids unique, tensor shape = data length): no positive-data check.
    case.call_and_validate(
        headers={"Authorization": f"Bearer {fuzzed[1]}"},
        excluded_checks=[schemathesis.checks.positive_data_acceptance],
    )
