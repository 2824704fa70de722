"""Deletion requests and their audit trail.

A request records who asked, when, the salted hash of each id (never the id), which of them
were found nowhere, how many rows each store lost, which versions were replaced and retired
and how, which data files the user owns still hold the ids, how long it took and what the
verification found. Nothing deleted is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from assay.errors import NotFound
from assay.store import db, tables

RUNNING, DONE, FAILED = "running", "done", "failed"


@dataclass(frozen=True)
class ForgetRequest:
    id: int
    actor: str
    models: list[str]
    status: str
    id_hashes: list[str]
    unknown: list[str]
    stores: dict[str, dict[str, int]]  # model -> store -> rows deleted
    versions: list[dict[str, Any]]  # one entry per version that held the data
    # {"path", "ids"}: user files still holding ids; {"path", "ids", "status"}: label files assay
    # exported, rewritten without the ids or (changed since) only listed
    files: list[dict[str, Any]]
    verification: dict[str, Any] | None
    error: str | None
    requested_at: datetime
    finished_at: datetime | None
    seconds: float | None

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["requested_at"] = self.requested_at.isoformat()
        out["finished_at"] = self.finished_at.isoformat() if self.finished_at else None
        return out


def open_request(
    conn: Connection,
    *,
    actor: str,
    models: list[str],
    id_hashes: list[str],
    unknown: list[str],
    files: list[dict[str, Any]],
) -> int:
    """Record a new request (status running) in the caller's transaction; its id."""
    key = conn.execute(
        sa.insert(tables.forget_requests).values(
            actor=actor,
            models=models,
            status=RUNNING,
            id_hashes=id_hashes,
            unknown=unknown,
            stores={},
            versions=[],
            files=files,
            requested_at=db.now(),
        )
    ).inserted_primary_key
    assert key is not None
    return int(key[0])


def update(engine: Engine | Connection, request_id: int, **values: Any) -> None:
    """Set fields of a request (its own transaction, or the caller's connection)."""
    query = (
        sa.update(tables.forget_requests).where(tables.forget_requests.c.id == request_id).values(**values)
    )
    if isinstance(engine, Connection):
        engine.execute(query)
        return
    with engine.begin() as conn:
        conn.execute(query)


def get_request(engine: Engine, request_id: int) -> ForgetRequest:
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(tables.forget_requests).where(tables.forget_requests.c.id == request_id)
        ).first()
    if row is None:
        raise NotFound(f"no deletion request {request_id}", field="request", code="unknown_request")
    return _request(row)


def list_requests(engine: Engine, *, status: str | None = None) -> list[ForgetRequest]:
    """Every request, oldest first (only those with ``status`` when given)."""
    query = sa.select(tables.forget_requests).order_by(tables.forget_requests.c.id)
    if status is not None:
        query = query.where(tables.forget_requests.c.status == status)
    with engine.connect() as conn:
        return [_request(r) for r in conn.execute(query).all()]


def _request(row: Any) -> ForgetRequest:
    return ForgetRequest(
        id=row.id,
        actor=row.actor,
        models=list(row.models),
        status=row.status,
        id_hashes=list(row.id_hashes),
        unknown=list(row.unknown),
        stores=dict(row.stores),
        versions=list(row.versions),
        files=list(row.files),
        verification=row.verification,
        error=row.error,
        requested_at=row.requested_at,
        finished_at=row.finished_at,
        seconds=row.seconds,
    )
