"""API tokens: who may write (precache, load feature tables, review API).

A token is shown once, when it is created; the store keeps only its SHA-256,
so a copy of the database does not hand out working tokens. A token is random
(256 bits), so a plain unsalted hash is enough: there is nothing to guess.
Revoking keeps the row (for the audit trail) and stamps ``revoked_at``.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from assay.errors import Conflict, InvalidInput, NotFound, Unauthorized
from assay.store import db, tables

PREFIX = "assay_"
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.@")


@dataclass(frozen=True)
class TokenInfo:
    """A token as stored: never the token itself."""

    name: str
    created_at: datetime
    revoked_at: datetime | None
    admin: bool = False  # may also make deletion requests

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(engine: Engine, name: str, *, admin: bool = False) -> str:
    """A new token named ``name``; the returned string is the only time it exists in clear."""
    if not name or len(name) > 200 or not set(name) <= _NAME_CHARS:
        raise InvalidInput(f"token name {name!r} must be 1-200 of letters, digits, '_-.@'", field="name")
    token = PREFIX + secrets.token_urlsafe(32)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.insert(tables.tokens).values(
                    name=name, token_hash=hash_token(token), created_at=db.now(), admin=admin
                )
            )
    except sa.exc.IntegrityError as exc:
        raise Conflict(f"a token named {name!r} already exists", field="name") from exc
    return token


def list_tokens(engine: Engine) -> list[TokenInfo]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(tables.tokens).order_by(tables.tokens.c.name)).all()
    return [TokenInfo(r.name, r.created_at, r.revoked_at, r.admin) for r in rows]


def revoke_token(engine: Engine, name: str) -> None:
    """Stop a token from working from now on (idempotent for a token already revoked)."""
    with engine.begin() as conn:
        row = conn.execute(sa.select(tables.tokens.c.revoked_at).where(tables.tokens.c.name == name)).first()
        if row is None:
            raise NotFound(f"no token named {name!r}", field="name", code="unknown_token")
        if row.revoked_at is None:
            conn.execute(
                sa.update(tables.tokens).where(tables.tokens.c.name == name).values(revoked_at=db.now())
            )


def verify_token(engine: Engine, token: str) -> TokenInfo:
    """The active token ``token`` is; ``Unauthorized`` when it is unknown or revoked."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(tables.tokens).where(tables.tokens.c.token_hash == hash_token(token))
        ).first()
    if row is None or row.revoked_at is not None:
        raise Unauthorized("the API token is unknown or revoked", field="Authorization", code="invalid_token")
    return TokenInfo(row.name, row.created_at, row.revoked_at, row.admin)


def bearer_token(authorization: str | None) -> str:
    """The token in an ``Authorization: Bearer <token>`` header; ``Unauthorized`` when there is none."""
    if not authorization:
        raise Unauthorized(
            "this endpoint writes: send 'Authorization: Bearer <token>' (see assay token create)",
            field="Authorization",
            code="token_required",
        )
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'", field="Authorization")
    return token.strip()
