"""Promotion judged on a paired comparison: the alias's holder and the challenger on the same rows.

The registry checks gates; this module gives it what regression gates need and the registry
cannot make itself (it does not read data): both versions scored on the newer version's held-out
data (or given rows), compared with ``comparison.compare_versions``. A forced promotion whose
comparison cannot be made (the held-out files are gone) goes ahead on ``--force --reason``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from assay.errors import AssayError
from assay.modelling.comparison import Comparison, Rows, compare_versions, held_out_rows, spec_of, unseen_by
from assay.modelling.preparation import CampaignLabels
from assay.modelling.significance import DEFAULT_RESAMPLES
from assay.registry.contracts import VersionRecord
from assay.registry.refs import DEFAULT_ALIAS
from assay.registry.versions import Registry


@dataclass
class Promotion:
    results: list[dict[str, Any]]
    comparison: Comparison | None
    holder: VersionRecord | None


def newer(a: VersionRecord, b: VersionRecord) -> VersionRecord:
    return b if b.version > a.version else a


def challenge(
    registry: Registry,
    holder: VersionRecord,
    challenger: VersionRecord,
    *,
    rows: Rows | Callable[[], Rows] | None = None,
    campaign_labels: CampaignLabels | None = None,
    resamples: int = DEFAULT_RESAMPLES,
) -> Comparison:
    """``holder`` (a) against ``challenger`` (b) on ``rows``, by default the newer one's held-out
    data less the items the older one trained on."""
    if callable(rows):
        rows = rows()
    if rows is None:
        fresh = newer(holder, challenger)
        rows = held_out_rows(fresh, campaign_labels)
        older = challenger if fresh is holder else holder
        if older.version != fresh.version:
            rows = unseen_by(rows, older, spec_of(fresh).data.id, campaign_labels)
    return compare_versions(
        registry, holder, challenger, rows, resamples=resamples, seed=challenger.spec.get("seed", 0)
    )


def promote(
    registry: Registry,
    name: str,
    version: int,
    *,
    actor: str,
    alias: str = DEFAULT_ALIAS,
    reason: str = "",
    force: bool = False,
    rows: Rows | Callable[[], Rows] | None = None,
    campaign_labels: CampaignLabels | None = None,
    resamples: int = DEFAULT_RESAMPLES,
) -> Promotion:
    """Compare ``version`` with the alias's holder on the same rows, then ask the registry to move
    the alias (it refuses unless the gates pass or ``force`` is given with a reason)."""
    record = registry.get(name, version)
    holder_version = registry.aliases(name).get(alias)
    holder = registry.get(name, holder_version) if holder_version is not None else None
    comparison = None
    if holder is not None and holder.version != record.version:
        try:
            comparison = challenge(
                registry, holder, record, rows=rows, campaign_labels=campaign_labels, resamples=resamples
            )
        except AssayError:
            if not force:
                raise
    results = registry.promote(
        name,
        version,
        alias=alias,
        actor=actor,
        reason=reason,
        force=force,
        compared=comparison.to_dict() if comparison is not None else None,
    )
    return Promotion(results, comparison, holder)
