"""People who review: users with a role, argon2 password hashes, sessions, CSRF tokens.

Passwords are kept only as argon2id hashes, and a new one must be long enough
(``MIN_PASSWORD_LENGTH``), not contain the username, and not be a common
password: one on the list in ``common_passwords.txt`` (well-known passwords,
keyboard walks, runs and repeats), compared case-insensitively, also once the
digits and symbols around it are taken off and l33t spelling is undone, so
``P@ssw0rd2024!`` counts as ``password``. A session is a random token: the
browser holds it in a signed, HttpOnly cookie and the store holds only its
SHA-256, so logging out (or deleting the row) ends it everywhere and a copy of
the database hands out no working sessions. CSRF tokens are derived from the
session token with the workspace secret, so there is nothing extra to store.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.engine import Engine

from assay.errors import Conflict, InvalidInput, NotFound, Unauthorized
from assay.home_secret import home_secret
from assay.settings import Settings
from assay.store import db, tables

ROLES: tuple[str, ...] = ("admin", "reviewer")
DEFAULT_ROLE = "reviewer"  # the least privileged: an admin account is made on purpose only
MIN_PASSWORD_LENGTH = 12
COMMON_PASSWORDS_FILE = "common_passwords.txt"
SESSION_TTL = timedelta(days=7)
SECRET_FILE = "session_secret"
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.@")

_hasher = PasswordHasher()  # argon2id with the library's RFC 9106 defaults


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the username is unknown, so a login takes as long either way."""
    return _hasher.hash("not a real password")


@dataclass(frozen=True)
class User:
    """An account as the rest of assay sees it (never the hash)."""

    id: int
    username: str
    pseudonym: str
    role: str
    created_at: datetime
    disabled: bool

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _user(row: sa.Row) -> User:
    return User(
        id=row.id,
        username=row.username,
        pseudonym=row.pseudonym,
        role=row.role,
        created_at=row.created_at,
        disabled=row.disabled_at is not None,
    )


@functools.cache
def common_passwords() -> frozenset[str]:
    """The list of common passwords shipped with assay, case-folded."""
    text = resources.files("assay.review").joinpath(COMMON_PASSWORDS_FILE).read_text("utf-8")
    return frozenset(line.casefold() for line in text.splitlines() if line)


# Digits and symbols people put around a word ("Summer2024!"), and l33t spellings of letters.
_AROUND = string.digits + string.punctuation + string.whitespace
_UNLEET = str.maketrans(
    {"@": "a", "4": "a", "3": "e", "1": "i", "!": "i", "0": "o", "$": "s", "5": "s", "7": "t"}
)


def is_common_password(password: str) -> bool:
    """Whether ``password`` is on the common list, case-insensitively, also without what is around it."""
    folded = password.casefold()
    core = folded.strip(_AROUND)
    candidates = {
        folded,
        folded.translate(_UNLEET),
        core,
        core.translate(_UNLEET),
        # "@dmin2024": the leading symbol is a letter in disguise, the trailing digits are not.
        folded.rstrip(_AROUND).translate(_UNLEET).strip(_AROUND),
    }
    candidates.discard("")  # digits and symbols only: judged whole (the list has runs and repeats)
    return not candidates.isdisjoint(common_passwords())


def check_password(password: str, username: str = "") -> None:
    """Refuse a password that is short, contains the username or is a common one (``InvalidInput``)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"a password needs at least {MIN_PASSWORD_LENGTH} characters", field="password")
    if username and username.casefold() in password.casefold():
        raise InvalidInput("a password must not contain the username", field="password")
    if is_common_password(password):
        raise InvalidInput(
            "that password is on the list of common passwords (ignoring case, and digits or symbols "
            "around a word); choose a less guessable one",
            field="password",
        )


def create_user(engine: Engine, username: str, password: str, role: str = DEFAULT_ROLE) -> User:
    """A new account; its pseudonym (what exports show instead of the name) is random."""
    if not username or len(username) > 100 or not set(username) <= _NAME_CHARS:
        raise InvalidInput(
            f"username {username!r} must be 1-100 of letters, digits, '_', '-', '.', '@'", field="username"
        )
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}; got {role!r}", field="role")
    check_password(password, username)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.insert(tables.users).values(
                    username=username,
                    pseudonym="rv-" + secrets.token_hex(5),
                    password_hash=_hasher.hash(password),
                    role=role,
                    created_at=db.now(),
                )
            )
    except sa.exc.IntegrityError as exc:
        raise Conflict(f"a user named {username!r} already exists", field="username") from exc
    return user_by_name(engine, username)


def user_by_name(engine: Engine, username: str) -> User:
    with engine.connect() as conn:
        row = conn.execute(sa.select(tables.users).where(tables.users.c.username == username)).first()
    if row is None:
        raise NotFound(f"no user named {username!r}", field="username", code="unknown_user")
    return _user(row)


def list_users(engine: Engine) -> list[User]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(tables.users).order_by(tables.users.c.username)).all()
    return [_user(r) for r in rows]


def set_password(engine: Engine, username: str, password: str) -> None:
    check_password(password, username)
    with engine.begin() as conn:
        done = conn.execute(
            sa.update(tables.users)
            .where(tables.users.c.username == username)
            .values(password_hash=_hasher.hash(password))
        ).rowcount
        if not done:
            raise NotFound(f"no user named {username!r}", field="username", code="unknown_user")
        # A new password ends every session the old one opened.
        user_ids = sa.select(tables.users.c.id).where(tables.users.c.username == username).scalar_subquery()
        conn.execute(sa.delete(tables.user_sessions).where(tables.user_sessions.c.user_id == user_ids))


def set_disabled(engine: Engine, username: str, disabled: bool) -> None:
    """Disable (or re-enable) an account; a disabled account cannot log in and its sessions end."""
    with engine.begin() as conn:
        row = conn.execute(sa.select(tables.users.c.id).where(tables.users.c.username == username)).first()
        if row is None:
            raise NotFound(f"no user named {username!r}", field="username", code="unknown_user")
        conn.execute(
            sa.update(tables.users)
            .where(tables.users.c.id == row.id)
            .values(disabled_at=db.now() if disabled else None)
        )
        if disabled:
            conn.execute(sa.delete(tables.user_sessions).where(tables.user_sessions.c.user_id == row.id))


def authenticate(engine: Engine, username: str, password: str) -> User:
    """The user these credentials belong to; ``Unauthorized`` (one message for every failure) otherwise."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(tables.users).where(tables.users.c.username == username)).first()
    failure = Unauthorized("wrong username or password", code="bad_credentials")
    try:
        _hasher.verify(row.password_hash if row is not None else _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        raise failure from None
    if row is None or row.disabled_at is not None:
        raise failure
    if _hasher.check_needs_rehash(row.password_hash):
        with engine.begin() as conn:
            conn.execute(
                sa.update(tables.users)
                .where(tables.users.c.id == row.id)
                .values(password_hash=_hasher.hash(password))
            )
    return _user(row)


# --- sessions -----------------------------------------------------------------


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def start_session(engine: Engine, user: User) -> str:
    """A new session for ``user``; the returned token goes (signed) into the cookie only."""
    token = secrets.token_urlsafe(32)
    now = db.now()
    with engine.begin() as conn:
        conn.execute(sa.delete(tables.user_sessions).where(tables.user_sessions.c.expires_at < now))
        conn.execute(
            sa.insert(tables.user_sessions).values(
                token_hash=_digest(token), user_id=user.id, created_at=now, expires_at=now + SESSION_TTL
            )
        )
    return token


def session_user(engine: Engine, token: str) -> User | None:
    """The user a live session token belongs to, or None (expired, ended, unknown, disabled)."""
    query = (
        sa.select(tables.users)
        .join(tables.user_sessions, tables.user_sessions.c.user_id == tables.users.c.id)
        .where(
            tables.user_sessions.c.token_hash == _digest(token),
            tables.user_sessions.c.expires_at > db.now(),
            tables.users.c.disabled_at.is_(None),
        )
    )
    with engine.connect() as conn:
        row = conn.execute(query).first()
    return None if row is None else _user(row)


def end_session(engine: Engine, token: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.delete(tables.user_sessions).where(tables.user_sessions.c.token_hash == _digest(token))
        )


# --- signing ------------------------------------------------------------------


def session_secret(settings: Settings) -> bytes:
    """The secret that signs cookies: the setting, else a random one kept (0600) in the home.

    Keeping it in the home means sessions survive a restart and every worker
    process of one server signs alike.
    """
    return home_secret(settings.home, SECRET_FILE, settings.session_secret, "session_secret")


def _mac(secret: bytes, purpose: str, value: str) -> str:
    return hmac.new(secret, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


def sign(secret: bytes, value: str) -> str:
    """``value`` with a MAC appended, for a cookie."""
    return f"{value}.{_mac(secret, 'cookie', value)}"


def unsign(secret: bytes, signed: str) -> str | None:
    """The value of a cookie ``sign`` made with this secret, or None when it was tampered with."""
    value, _, mac = signed.rpartition(".")
    if not value or not hmac.compare_digest(mac, _mac(secret, "cookie", value)):
        return None
    return value


def csrf_token(secret: bytes, key: str) -> str:
    """The CSRF token for forms of the session (or pre-login nonce) ``key``."""
    return _mac(secret, "csrf", key)


def csrf_ok(secret: bytes, key: str, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(str(token), csrf_token(secret, key))
