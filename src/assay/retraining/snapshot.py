"""The label snapshot: the training data of a retraining run, as the data is now, frozen in one file.

A retrained challenger learns from its spec's own training files read again (with its campaign's
resolved labels, if it names one), plus every label that arrived since: resolved labels of the
model's other review campaigns and labels received through the label API or ``assay labels
load``. A later label of an item in the files replaces the file's label; a label of an item the
files lack brings the item's features from the prediction log (the last time the model scored
it). Labels of held-out items are left out (they would leak into training), and so are labels
of items whose features were never seen. The result is written to one Parquet file, so the run
trains on exactly what it fingerprinted, however the sources move meanwhile.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine

from assay.modelling.datasets import read_labelled
from assay.modelling.spec import ModelSpec
from assay.monitoring.frames import decoded, frame_of
from assay.monitoring.labels import read_labels
from assay.registry.contracts import LabelSnapshot, VersionRecord
from assay.registry.versions import Registry
from assay.review.campaigns import list_campaigns
from assay.review.resolution import resolved_labels
from assay.store.log_store import LogStore

SNAPSHOT_FILE = "train.parquet"


@dataclass
class Snapshot:
    """A run's training rows: the file they were written to, and what they are."""

    path: Path
    frame: pd.DataFrame
    labels: np.ndarray
    facts: LabelSnapshot

    def spec_for(self, spec: ModelSpec) -> ModelSpec:
        """``spec`` reading this snapshot instead of its own files (its labels are already in it)."""
        return replace(spec, data=replace(spec.data, train=[str(self.path)], campaign=None))


def base_spec(champion: VersionRecord, spec: ModelSpec) -> ModelSpec:
    """The champion's spec with its own data sources, not a snapshot an earlier run wrote."""
    before = champion.lineage.get("labels")
    if before is None:
        return spec
    return replace(
        spec, data=replace(spec.data, train=list(before["base_train"]), campaign=before["base_campaign"])
    )


def later_labels(
    engine: Engine, model: str, *, skip_campaign: str | None
) -> tuple[dict[str, str], dict[str, Any]]:
    """Item id -> label from the model's campaigns (oldest first) and then the label API, with
    where each count came from; a later source wins an item."""
    labels: dict[str, str] = {}
    campaigns: dict[str, int] = {}
    for campaign in sorted(list_campaigns(engine), key=lambda c: c.id):
        if campaign.model != model or campaign.name == skip_campaign:
            continue
        frame = resolved_labels(engine, campaign)
        campaigns[campaign.name] = len(frame)
        labels.update(zip(frame["id"].astype(str), frame["label"].astype(str), strict=True))
    api = read_labels(engine, model)
    labels.update(api)
    return labels, {"campaigns": campaigns, "api": len(api)}


def count_later_labels(engine: Engine, model: str, skip_campaign: str | None) -> int:
    """How many labels ``later_labels`` would gather (for the new-labels trigger)."""
    _labels, sources = later_labels(engine, model, skip_campaign=skip_campaign)
    return sum(sources["campaigns"].values()) + sources["api"]


def take_snapshot(
    engine: Engine, log: LogStore, registry: Registry, champion: VersionRecord, spec: ModelSpec, folder: Path
) -> Snapshot:
    """Read ``spec``'s data as it is now, fold the later labels in, and write the rows to ``folder``."""
    d = spec.data
    campaign = resolved_labels(engine, d.campaign)[["id", "label"]] if d.campaign else None
    data = read_labelled(spec, d.train, campaign)
    later, sources = later_labels(engine, spec.name, skip_campaign=d.campaign)
    held_out = set(read_labelled(spec, d.test).ids.tolist()) if d.test else set()
    usable = {i: label for i, label in later.items() if i not in held_out}
    frame = data.frame.copy()
    ids = frame[d.id].astype(str)
    known = ids.isin(usable)
    new_labels = ids[known].map(usable)
    relabelled = int((frame.loc[known, d.label].astype(str) != new_labels).sum())
    frame.loc[known, d.label] = new_labels
    missing = sorted(set(usable) - set(ids))
    added = _logged_rows(log, registry, spec.name, missing, frame.columns, d.id)
    if not added.empty:
        added[d.label] = added[d.id].map(usable)
        frame = pd.concat([frame, added], ignore_index=True)
    frame = _as_text(frame)
    labels = frame[d.label].astype(str).to_numpy()
    facts: LabelSnapshot = {
        "fingerprint": _fingerprint(frame[d.id].astype(str), labels),
        "retrained_from": champion.ref,
        "base_train": list(d.train),
        "base_campaign": d.campaign,
        "rows": len(frame),
        "campaigns": {
            **({d.campaign: len(campaign)} if campaign is not None and d.campaign else {}),
            **sources["campaigns"],
        },
        "api": sources["api"],
        "relabelled": relabelled,
        "added": len(added),
        "held_out": len(later) - len(usable),
        "without_features": len(missing) - len(added),
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / SNAPSHOT_FILE
    tmp = folder / (SNAPSHOT_FILE + ".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    return Snapshot(path, frame, labels, facts)


def _logged_rows(
    log: LogStore, registry: Registry, model: str, wanted: list[str], columns: pd.Index, id_column: str
) -> pd.DataFrame:
    """The raw feature values of ``wanted`` items as the model last scored them (any version)."""
    if not wanted:
        return pd.DataFrame(columns=columns)
    want = set(wanted)
    found: list[pd.DataFrame] = []
    for version in sorted(log.versions(model)):
        loaded = registry.load(registry.get(model, version))
        rows = decoded(loaded, frame_of(loaded, log, with_ids=True))
        found.append(rows[rows["id"].isin(want)])
    if not found:
        return pd.DataFrame(columns=columns)
    rows = pd.concat(found, ignore_index=True).sort_values("at").drop_duplicates("id", keep="last")
    out = pd.DataFrame(
        {c: rows[c].to_numpy() if c in rows.columns else None for c in columns}, columns=columns
    )
    out[id_column] = rows["id"].to_numpy()
    return out


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Every value as the text a data file holds (as ``read_table`` reads CSV), missing as None."""
    out = pd.DataFrame(index=frame.index)
    for column in frame.columns:
        values = frame[column].astype(object)
        out[column] = [None if _missing(v) else _text(v) for v in values]
    return out


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


def _text(value: Any) -> str:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))  # 12.0 from the log is the 12 a file held
    return str(value)


def _fingerprint(ids: pd.Series, labels: np.ndarray) -> str:
    digest = hashlib.sha256()
    for item, label in sorted(zip(ids.tolist(), labels.tolist(), strict=True)):
        digest.update(f"{item}\t{label}\n".encode())
    return digest.hexdigest()
