"""The data a training run works on: forgotten items left out, campaign labels, overlaps and refusals."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from assay.errors import DataError, SpecError
from assay.modelling.preparation import prepare
from assay.modelling.spec import ModelSpec
from assay.modelling.spec_file import load_spec
from tests.conftest import write_binary_spec


@dataclasses.dataclass
class Forgotten:
    """An exclusion as training sees one: the ids it names, up to deletion request ``through``."""

    ids: set[str]
    through: int = 1

    def mask(self, ids: np.ndarray) -> np.ndarray:
        return np.isin(ids, sorted(self.ids))


@pytest.fixture
def spec(tmp_path: Path) -> ModelSpec:
    # Training rows have ids 100000-100299, held-out rows 100300-100399.
    return load_spec(write_binary_spec(tmp_path, n_train=300, n_test=100))


def test_forgotten_items_leave_both_sets_and_the_fingerprint_says_so(spec: ModelSpec) -> None:
    plain = prepare(spec, None, lambda _m: None)
    messages: list[str] = []
    forgotten = Forgotten({"100000", "100001", "100002", "100300"})
    data = prepare(spec, None, messages.append, forgotten)
    assert (len(plain.X) - len(data.X), len(plain.X_test) - len(data.X_test)) == (3, 1)
    assert data.excluded_rows == 4 and data.exclusions_through == 1
    assert "100000" not in data.ids and len(data.ids) == len(data.X)
    assert "4 row(s) left out: their items were forgotten" in messages
    assert data.source_fingerprint == plain.fingerprint != data.fingerprint
    # A later request list that leaves out the same rows is another training set on record.
    assert prepare(
        spec, None, lambda _m: None, dataclasses.replace(forgotten, through=2)
    ).fingerprint not in (
        data.fingerprint,
        plain.fingerprint,
    )
    # Naming no item of the data changes nothing.
    unrelated = prepare(spec, None, lambda _m: None, Forgotten({"elsewhere"}, through=7))
    assert unrelated.fingerprint == plain.fingerprint and unrelated.excluded_rows == 0


def test_labels_from_a_campaign_need_a_source(spec: ModelSpec) -> None:
    spec.data.campaign = "triage"
    with pytest.raises(SpecError, match=r"data\.campaign: 'triage' needs a campaign label source"):
        prepare(spec, None, lambda _m: None)


def test_items_in_both_sets_are_warned_of(spec: ModelSpec) -> None:
    spec.data.test = spec.data.train
    messages: list[str] = []
    prepare(spec, None, messages.append)
    assert any(
        m.startswith("warning: 300 item id(s) are in both training and held-out data") for m in messages
    )


def test_a_class_rarer_than_the_folds_is_refused(spec: ModelSpec) -> None:
    spec.training.folds = 1000
    with pytest.raises(DataError, match=r"rows, fewer than training\.folds=1000"):
        prepare(spec, None, lambda _m: None)


def test_a_split_too_small_to_stratify_is_refused(spec: ModelSpec) -> None:
    spec.data.test, spec.data.test_size = [], 0.001
    with pytest.raises(DataError, match="cannot make a stratified held-out split"):
        prepare(spec, None, lambda _m: None)
