"""Accounts: roles, argon2 hashes, sessions, signing and CSRF tokens."""

from __future__ import annotations

import os
import stat

import pytest
import sqlalchemy as sa

from assay.errors import Conflict, InvalidInput, NotFound, Unauthorized
from assay.review import accounts
from assay.settings import Settings
from assay.store import tables
from assay.workspace import Workspace


def test_password_is_stored_only_as_an_argon2id_hash(workspace):
    user = accounts.create_user(workspace.engine, "ana", "violet-harbor-engine", "admin")
    assert user.is_admin and user.pseudonym.startswith("rv-") and user.pseudonym != "ana"
    with workspace.engine.connect() as conn:
        stored = conn.execute(sa.select(tables.users.c.password_hash)).scalar_one()
    assert stored.startswith("$argon2id$") and "violet-harbor-engine" not in stored
    assert accounts.authenticate(workspace.engine, "ana", "violet-harbor-engine").id == user.id


@pytest.mark.parametrize(
    ("username", "password"), [("ana", "wrong password"), ("nobody", "violet-harbor-engine")]
)
def test_bad_credentials_get_one_message(workspace, username, password):
    accounts.create_user(workspace.engine, "ana", "violet-harbor-engine")
    with pytest.raises(Unauthorized, match="wrong username or password"):
        accounts.authenticate(workspace.engine, username, password)


def test_user_validation(workspace):
    with pytest.raises(InvalidInput, match="at least 12"):
        accounts.create_user(workspace.engine, "ana", "short")
    with pytest.raises(InvalidInput, match="role"):
        accounts.create_user(workspace.engine, "ana", "amber-quarry-tulip", "owner")
    with pytest.raises(InvalidInput, match="username"):
        accounts.create_user(workspace.engine, "ana smith", "amber-quarry-tulip")
    accounts.create_user(workspace.engine, "ana", "amber-quarry-tulip")
    with pytest.raises(Conflict):
        accounts.create_user(workspace.engine, "ana", "granite-sparrow-lake")
    with pytest.raises(NotFound):
        accounts.user_by_name(workspace.engine, "bob")


def test_sessions_end_on_logout_password_change_and_disable(workspace):
    engine = workspace.engine
    user = accounts.create_user(engine, "ana", "violet-harbor-engine")
    token = accounts.start_session(engine, user)
    assert accounts.session_user(engine, token).username == "ana"
    assert accounts.session_user(engine, token + "x") is None
    accounts.end_session(engine, token)
    assert accounts.session_user(engine, token) is None

    token = accounts.start_session(engine, user)
    accounts.set_password(engine, "ana", "copper-meadow-kettle")
    assert accounts.session_user(engine, token) is None
    assert accounts.authenticate(engine, "ana", "copper-meadow-kettle")

    token = accounts.start_session(engine, user)
    accounts.set_disabled(engine, "ana", True)
    assert accounts.session_user(engine, token) is None
    with pytest.raises(Unauthorized):
        accounts.authenticate(engine, "ana", "copper-meadow-kettle")
    accounts.set_disabled(engine, "ana", False)
    assert accounts.authenticate(engine, "ana", "copper-meadow-kettle")


def test_session_tokens_are_stored_hashed(workspace):
    user = accounts.create_user(workspace.engine, "ana", "violet-harbor-engine")
    token = accounts.start_session(workspace.engine, user)
    with workspace.engine.connect() as conn:
        stored = conn.execute(sa.select(tables.user_sessions.c.token_hash)).scalar_one()
    assert token not in stored and len(stored) == 64


def test_secret_is_kept_private_in_the_home_and_reused(tmp_path):
    settings = Settings.load(home=tmp_path / "home", environ={})
    first = accounts.session_secret(settings)
    assert accounts.session_secret(settings) == first
    path = tmp_path / "home" / accounts.SECRET_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    configured = Settings.load(home=tmp_path / "home", environ={"ASSAY_SESSION_SECRET": "s3cret"})
    assert accounts.session_secret(configured) == b"s3cret"


def test_signing_and_csrf():
    key = b"k" * 32
    signed = accounts.sign(key, "value")
    assert accounts.unsign(key, signed) == "value"
    assert accounts.unsign(key, signed[:-1] + ("0" if signed[-1] != "0" else "1")) is None
    assert accounts.unsign(b"other", signed) is None
    token = accounts.csrf_token(key, "session")
    assert accounts.csrf_ok(key, "session", token)
    assert not accounts.csrf_ok(key, "other session", token)
    assert not accounts.csrf_ok(key, "session", None)


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("eleven-char", "at least 12"),  # 11 characters: long enough before
        ("Password1234", "common passwords"),  # case does not matter
        ("P@ssw0rd2024!", "common passwords"),  # l33t and digits around a listed word
        ("qwertyuiop12", "common passwords"),
        ("123456789012", "common passwords"),
        ("aaaaaaaaaaaa", "common passwords"),
        ("correct horse battery staple", "common passwords"),
        ("iloveyou1234", "common passwords"),
        ("Ana-likes-tea-a-lot", "username"),  # contains the username, in another case
    ],
)
def test_weak_passwords_are_refused(workspace, password, problem):
    with pytest.raises(InvalidInput, match=problem) as caught:
        accounts.create_user(workspace.engine, "ana", password)
    assert caught.value.field == "password"
    accounts.create_user(workspace.engine, "ben", "violet-harbor-engine")
    with pytest.raises(InvalidInput, match=problem):  # a new password is held to the same rules
        accounts.set_password(workspace.engine, "ben", password.replace("Ana", "Ben"))


def test_the_common_password_list_ships_with_the_package():
    common = accounts.common_passwords()
    assert len(common) > 5000 and "password" in common and "qwerty" in common
    assert all(p == p.casefold() for p in common)
    assert not accounts.is_common_password("amber-quarry-tulip-42")


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_the_sqlite_store_is_private_to_its_owner(tmp_path):
    """The store holds password hashes: owner-only, its WAL and shared-memory files too."""
    old = os.umask(0o022)  # the usual umask, which made the store 0644
    try:
        ws = Workspace.open(Settings.load(home=tmp_path / "home", environ={}))
        try:
            accounts.create_user(ws.engine, "ana", "violet-harbor-engine")
            with ws.engine.connect() as conn:  # the WAL files exist while a connection is open
                conn.execute(sa.select(tables.users.c.id)).all()
                files = [tmp_path / "home" / f"assay.db{s}" for s in ("", "-wal", "-shm")]
                assert all(f.exists() for f in files)
                assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {
                    f.name: 0o600 for f in files
                }
        finally:
            ws.close()
        # A store made world-readable before this loses the world's bits when it is opened.
        store = tmp_path / "home" / "assay.db"
        store.chmod(0o644)
        Workspace.open(Settings.load(home=tmp_path / "home", environ={})).close()
        assert stat.S_IMODE(store.stat().st_mode) == 0o640
    finally:
        os.umask(old)
