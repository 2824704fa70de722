"""The record of retraining runs: one row per run, whatever became of it.

A run is inserted as ``running`` before it reads any data and finished with one update that names
its outcome (``promoted``, ``kept``, ``refused``, ``failed``) and the decision in one line. A
process killed half-way cannot finish its row; the next run of the model marks such rows
``interrupted`` once the process that wrote them is gone (``mark_interrupted``).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from assay.store import db, tables

STATUSES = ("running", "promoted", "kept", "refused", "failed", "interrupted")
_runs = tables.retrain_runs


@dataclass(frozen=True)
class Run:
    id: int
    model: str
    trigger: str
    status: str
    champion_version: int | None
    challenger_version: int | None
    message: str
    labels: dict[str, Any] | None
    comparison: dict[str, Any] | None
    actor: str
    started_at: datetime
    finished_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "trigger": self.trigger,
            "status": self.status,
            "champion_version": self.champion_version,
            "challenger_version": self.challenger_version,
            "message": self.message,
            "labels": self.labels,
            "comparison": self.comparison,
            "actor": self.actor,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


def start_run(engine: Engine, model: str, *, trigger: str, actor: str, champion: int | None) -> int:
    """Insert a ``running`` row for this process; returns its id."""
    with engine.begin() as conn:
        key = conn.execute(
            sa.insert(_runs).values(
                model=model,
                trigger=trigger[:200],
                status="running",
                champion_version=champion,
                message="",
                actor=actor[:200],
                host=socket.gethostname()[:255],
                pid=os.getpid(),
                started_at=db.now(),
            )
        ).inserted_primary_key
    assert key is not None
    return int(key[0])


def finish_run(engine: Engine, run_id: int, status: str, message: str, **facts: Any) -> None:
    """Record a run's outcome (``facts``: challenger_version, labels, comparison)."""
    if status not in STATUSES or status == "running":
        raise ValueError(f"a run cannot finish as {status!r}")
    with engine.begin() as conn:
        conn.execute(
            sa.update(_runs)
            .where(_runs.c.id == run_id)
            .values(status=status, message=message, finished_at=db.now(), **facts)
        )


def mark_interrupted(engine: Engine, model: str) -> int:
    """Mark ``running`` rows of ``model`` written on this host by processes that are gone."""
    host = socket.gethostname()[:255]
    with engine.begin() as conn:
        rows = conn.execute(
            sa.select(_runs.c.id, _runs.c.pid).where(
                _runs.c.model == model, _runs.c.status == "running", _runs.c.host == host
            )
        ).all()
        gone = [r.id for r in rows if not _alive(r.pid)]
        if gone:
            conn.execute(
                sa.update(_runs)
                .where(_runs.c.id.in_(gone))
                .values(status="interrupted", message="the process stopped before the run finished")
            )
    return len(gone)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def list_runs(engine: Engine, model: str | None = None, *, limit: int = 100) -> list[Run]:
    """The latest runs, newest first (of one model, or of all)."""
    query = sa.select(_runs).order_by(_runs.c.id.desc()).limit(limit)
    if model is not None:
        query = query.where(_runs.c.model == model)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [
        Run(
            id=r.id,
            model=r.model,
            trigger=r.trigger,
            status=r.status,
            champion_version=r.champion_version,
            challenger_version=r.challenger_version,
            message=r.message,
            labels=r.labels,
            comparison=r.comparison,
            actor=r.actor,
            started_at=r.started_at,
            finished_at=r.finished_at,
        )
        for r in rows
    ]
