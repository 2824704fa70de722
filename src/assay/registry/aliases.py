"""Aliases: the names (``production``, ``candidate``, any other) that point at one version each.

Every move of an alias is recorded with who, when, why and the gate results, and announced on
the store's REGISTRY channel so that serving processes follow it. ``promotion_gates`` decides
whether a move may happen; ``move_alias`` makes it in one transaction.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from assay.errors import Conflict, GateFailed, InvalidInput
from assay.registry.contracts import VersionRecord
from assay.registry.gates import check_gates
from assay.store import db, notices, tables


def aliases_of(engine: Engine, name: str) -> dict[str, int]:
    """alias -> version for one model."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(tables.aliases).where(tables.aliases.c.model == name)).all()
    return {r.alias: r.version for r in rows}


def move_alias(
    engine: Engine,
    name: str,
    alias: str,
    version: int,
    *,
    actor: str,
    reason: str,
    forced: bool,
    gates: list[dict],
) -> None:
    """Point ``alias`` at ``version`` (creating it if need be) and record the move, in one transaction."""
    with engine.begin() as conn:
        current = conn.execute(
            sa.select(tables.aliases.c.version).where(
                tables.aliases.c.model == name, tables.aliases.c.alias == alias
            )
        ).scalar()
        if current is None:
            conn.execute(
                sa.insert(tables.aliases).values(
                    model=name, alias=alias, version=version, updated_at=db.now()
                )
            )
        else:
            conn.execute(
                sa.update(tables.aliases)
                .where(tables.aliases.c.model == name, tables.aliases.c.alias == alias)
                .values(version=version, updated_at=db.now())
            )
        conn.execute(
            sa.insert(tables.alias_events).values(
                model=name,
                alias=alias,
                from_version=current,
                to_version=version,
                actor=actor,
                reason=reason,
                forced=forced,
                gates=gates,
                at=db.now(),
            )
        )
        notices.publish(conn, notices.REGISTRY, {"model": name, "alias": alias, "version": version})


def alias_history(engine: Engine, name: str) -> list[dict[str, Any]]:
    """Every alias move of a model, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(tables.alias_events)
            .where(tables.alias_events.c.model == name)
            .order_by(tables.alias_events.c.id)
        ).all()
    return [
        {
            "alias": r.alias,
            "from_version": r.from_version,
            "to_version": r.to_version,
            "actor": r.actor,
            "reason": r.reason,
            "forced": r.forced,
            "gates": r.gates,
            "at": r.at.isoformat(),
        }
        for r in rows
    ]


def promotion_gates(
    record: VersionRecord,
    holder: VersionRecord | None,
    alias: str,
    *,
    reason: str,
    force: bool,
    compared: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    """The gate results of moving ``alias`` from ``holder`` to ``record``; raises when the move
    may not happen (gates failed without ``force``, a forced move without a reason, or a
    comparison of other versions than these two)."""
    if compared is not None and (compared["a"], compared["b"]) != (holder and holder.ref, record.ref):
        raise Conflict(
            f"the comparison is of {compared['a']} and {compared['b']}, but {alias!r} points at "
            f"{holder and holder.ref}: compare again"
        )
    results = check_gates(record, holder, compared)
    failed = [r for r in results if not r["passed"]]
    if failed and not force:
        raise GateFailed(
            f"{record.ref} does not pass its gates for {alias!r}: "
            + "; ".join(r["message"] for r in failed)
            + " (use --force with a reason to promote anyway)"
        )
    if force and not reason.strip():
        raise InvalidInput("a forced promotion needs a reason", field="reason")
    return results
