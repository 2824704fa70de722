"""The data one training run works on: read, checked and encoded once.

``prepare`` reads the training data (labels from the files, or from a review
campaign's resolved labels), leaves out the rows of forgotten items, reads the
held-out data or splits it off (stratified, seeded), checks the labels, and learns
and applies the feature schema. The data's fingerprint says what was trained on:
the files', or, when rows were left out, one that also names the exclusion.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from assay.errors import DataError, SpecError
from assay.modelling.assessment import sensitive_groups
from assay.modelling.datasets import (
    LabelledData,
    check_held_out,
    check_labels,
    feature_kinds,
    fingerprint,
    id_strings,
    read_labelled,
    rows_where,
)
from assay.modelling.progress import Progress
from assay.modelling.spec import ModelSpec
from assay.registry.schema import FeatureSchema

CampaignLabels = Callable[[str], pd.DataFrame]
"""Reads a review campaign's resolved labels (``id`` and ``label`` columns) by campaign name."""


class Exclusion(Protocol):
    """The items no model may learn from any more (forgotten on request)."""

    through: int  # the last deletion request it includes (0: none)

    def mask(self, ids: np.ndarray) -> np.ndarray:
        """True for each id in ``ids`` (strings) that must be left out."""
        ...


@dataclass
class Prepared:
    """The data one training run works on: read, checked and encoded once."""

    schema: FeatureSchema
    classes: list[str]
    positive: str | None
    X: np.ndarray
    y: np.ndarray  # class indices
    X_test: np.ndarray
    y_test: np.ndarray  # class names
    test_frame: pd.DataFrame
    fingerprint: str  # of what was trained on: the files, less the rows left out
    source_fingerprint: str  # of the files as read
    ids: np.ndarray  # training rows' item ids (strings), in row order
    read_rows: int = 0  # training rows as read, before forgotten items were left out
    excluded_rows: int = 0  # rows left out because their items were forgotten
    exclusions_through: int = 0
    train_sensitive: dict[str, np.ndarray] = field(default_factory=dict)  # groups of each training row


def prepare(
    spec: ModelSpec, campaign_labels: CampaignLabels | None, say: Progress, exclusion: Exclusion | None = None
) -> Prepared:
    """Read the training and held-out data (or split it), leave out forgotten items, check the
    labels, learn and apply the schema."""
    d = spec.data
    say(f"reading {', '.join(d.train)}")
    labels = _campaign_labels(spec, campaign_labels, say)
    train_data = read_labelled(spec, d.train, labels)
    read_rows = len(train_data.ids)
    train_data, excluded = _without(train_data, exclusion)
    classes, positive = check_labels(train_data.labels, d.positive, source=train_data.source)
    kinds = feature_kinds(spec, train_data.frame, source=train_data.source)
    if d.test:
        test_data, excluded_test = _held_out(spec, train_data, classes, exclusion, say)
        excluded += excluded_test
    else:
        train_data, test_data = _split(train_data, spec)

    schema, X = FeatureSchema.learn_encoded(train_data.frame, kinds, source=train_data.source)
    source_fingerprint = fingerprint(d.train + d.test, labels)
    index = {c: i for i, c in enumerate(classes)}
    data = Prepared(
        schema=schema,
        classes=classes,
        positive=positive,
        X=X,
        y=np.array([index[v] for v in train_data.labels]),
        X_test=schema.encode_frame(test_data.frame, source=test_data.source),
        y_test=test_data.labels,
        test_frame=test_data.frame,
        fingerprint=_excluded_fingerprint(source_fingerprint, exclusion, excluded),
        source_fingerprint=source_fingerprint,
        ids=id_strings(train_data.ids),
        read_rows=read_rows,
        excluded_rows=excluded,
        exclusions_through=exclusion.through if exclusion is not None else 0,
        train_sensitive=sensitive_groups(spec, train_data.frame),
    )
    if excluded:
        say(f"{excluded} row(s) left out: their items were forgotten")
    counts = np.bincount(data.y, minlength=len(classes))
    if counts.min() < spec.training.folds:
        rare = classes[int(counts.argmin())]
        raise DataError(
            f"{train_data.source}: class {rare!r} has {counts.min()} rows, fewer than training.folds={spec.training.folds}"
        )
    say(
        f"{len(data.X)} training rows, {len(data.X_test)} held-out rows, {len(schema.features)} features, "
        f"classes {classes}"
    )
    return data


def _campaign_labels(
    spec: ModelSpec, campaign_labels: CampaignLabels | None, say: Progress
) -> pd.DataFrame | None:
    """The resolved labels of the spec's review campaign (``id`` and ``label``); None: the files'."""
    campaign = spec.data.campaign
    if not campaign:
        return None
    if campaign_labels is None:
        raise SpecError(f"data.campaign: {campaign!r} needs a campaign label source to train from")
    labels = campaign_labels(campaign)[["id", "label"]]
    say(f"{len(labels)} resolved labels from campaign {campaign!r}")
    return labels


def _held_out(
    spec: ModelSpec, train_data: LabelledData, classes: list[str], exclusion: Exclusion | None, say: Progress
) -> tuple[LabelledData, int]:
    """The spec's held-out files, less forgotten items' rows, checked against the training data;
    and how many rows were left out."""
    test_data, excluded = _without(read_labelled(spec, spec.data.test), exclusion)
    check_held_out(spec, train_data, test_data, classes)
    # By hashing: np.intersect1d sorts every id of both (seconds for a million).
    overlap = sorted(set(test_data.ids).intersection(train_data.ids))
    if overlap:
        # Real data sets do this (editquality has one such edit); it inflates held-out
        # numbers a little, so say so rather than refuse.
        say(f"warning: {len(overlap)} item id(s) are in both training and held-out data, e.g. {overlap[0]!r}")
    return test_data, excluded


def _excluded_fingerprint(source: str, exclusion: Exclusion | None, excluded: int) -> str:
    """The data's fingerprint: the files', or, when rows were left out, one that says so."""
    if not excluded or exclusion is None:
        return source
    return hashlib.sha256(f"{source}:excluded:{exclusion.through}:{excluded}".encode()).hexdigest()


def _without(data: LabelledData, exclusion: Exclusion | None) -> tuple[LabelledData, int]:
    """``data`` less the rows of forgotten items, and how many went."""
    if exclusion is None:
        return data, 0
    drop = exclusion.mask(data.ids)  # strings already: a text copy of a million ids costs
    n = int(drop.sum())
    if not n:
        return data, 0
    keep = ~drop
    frame = rows_where(data.frame, keep)
    return LabelledData(frame, data.ids[keep], data.labels[keep], data.source), n


def _split(data: LabelledData, spec: ModelSpec) -> tuple[LabelledData, LabelledData]:
    """A stratified, seeded held-out split of ``data``: (training part, held-out part)."""
    idx = np.arange(len(data.labels))
    try:
        tr, te = train_test_split(
            idx, test_size=spec.data.test_size, stratify=data.labels, random_state=spec.seed
        )
    except ValueError as exc:
        raise DataError(f"{data.source}: cannot make a stratified held-out split: {exc}") from exc
    tr, te = np.sort(tr), np.sort(te)

    def part(rows: np.ndarray, suffix: str) -> LabelledData:
        frame = data.frame.iloc[rows].reset_index(drop=True)
        return LabelledData(frame, data.ids[rows], data.labels[rows], f"{data.source} ({suffix})")

    return part(tr, "training split"), part(te, "held-out split")
