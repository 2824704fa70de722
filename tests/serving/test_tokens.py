"""API tokens: shown once, stored only as a hash, revocable; the CLI commands."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from assay.cli import main
from assay.errors import Conflict, InvalidInput, NotFound, Unauthorized
from assay.serving import tokens
from assay.store import tables
from assay.workspace import Workspace


def test_a_token_is_stored_only_as_its_hash(workspace: Workspace) -> None:
    token = tokens.create_token(workspace.engine, "ingest")
    assert token.startswith(tokens.PREFIX) and len(token) > 40
    with workspace.engine.connect() as conn:
        rows = conn.execute(sa.select(tables.tokens)).all()
    assert len(rows) == 1
    assert rows[0].token_hash == tokens.hash_token(token)
    assert token not in repr(tuple(rows[0]))
    assert tokens.verify_token(workspace.engine, token).name == "ingest"


def test_unknown_and_revoked_tokens_are_refused(workspace: Workspace) -> None:
    token = tokens.create_token(workspace.engine, "ingest")
    with pytest.raises(Unauthorized) as unknown:
        tokens.verify_token(workspace.engine, token + "x")
    assert unknown.value.status == 401 and unknown.value.code == "invalid_token"
    tokens.revoke_token(workspace.engine, "ingest")
    tokens.revoke_token(workspace.engine, "ingest")  # idempotent
    with pytest.raises(Unauthorized):
        tokens.verify_token(workspace.engine, token)
    [info] = tokens.list_tokens(workspace.engine)
    assert info.name == "ingest" and not info.active


def test_names_are_unique_and_checked(workspace: Workspace) -> None:
    tokens.create_token(workspace.engine, "a")
    with pytest.raises(Conflict):
        tokens.create_token(workspace.engine, "a")
    with pytest.raises(InvalidInput):
        tokens.create_token(workspace.engine, "has space")
    with pytest.raises(NotFound):
        tokens.revoke_token(workspace.engine, "nobody")


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "token_required"),
        ("", "token_required"),
        ("Basic abc", "unauthorized"),
        ("Bearer ", "unauthorized"),
    ],
)
def test_bearer_header_parsing(header: str | None, code: str) -> None:
    with pytest.raises(Unauthorized) as exc:
        tokens.bearer_token(header)
    assert exc.value.code == code
    assert tokens.bearer_token("bearer  abc ") == "abc"


def test_token_commands(tmp_path) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    home = str(tmp_path / "home")
    created = runner.invoke(main, ["--home", home, "token", "create", "ingest"])
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert token.startswith(tokens.PREFIX)
    listed = runner.invoke(main, ["--home", home, "token", "list"])
    assert "ingest" in listed.stdout and "active" in listed.stdout and token not in listed.stdout
    assert runner.invoke(main, ["--home", home, "token", "revoke", "ingest"]).exit_code == 0
    assert "revoked" in runner.invoke(main, ["--home", home, "token", "list"]).stdout
    missing = runner.invoke(main, ["--home", home, "token", "revoke", "nobody"])
    assert missing.exit_code == 1 and "no token named" in missing.stderr
