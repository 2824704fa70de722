"""A sharded (SISA) spec over the synthetic edits the other tests use, and a home trained on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from assay.unlearning.sharding import sharded_refit
from assay.workspace import Workspace
from tests.conftest import (
    EDITQUALITY_COLUMNS,
    copied_workspace,
    lightgbm_only,
    trained_root,
    write_binary_spec,
)

SISA = """\
[training.unlearning]
shards = {shards}
slices = {slices}
curve = {curve}

[gates]"""


def write_sharded_spec(folder: Path, *, shards: int = 4, slices: int = 3, curve: bool = False) -> Path:
    """The binary edits spec, LightGBM only, trained as ``shards`` shards of ``slices`` slices."""
    spec = lightgbm_only(write_binary_spec(folder, n_train=1200, n_test=400))
    text = spec.read_text()
    text = text.replace("[gates]", SISA.format(shards=shards, slices=slices, curve=str(curve).lower()), 1)
    spec.write_text(text)
    return spec


def training_ids(data: Path) -> list[str]:
    """The item ids of the sharded spec's training file, in order."""
    frame = pd.read_csv(data / "edits.train.tsv", sep="\t", header=None, names=EDITQUALITY_COLUMNS)
    return frame["rev_id"].astype(str).tolist()


@pytest.fixture(scope="session")
def sharded_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with `damaging` trained as 4 shards of 3 slices (version 1, production)."""
    root = tmp_path_factory.mktemp("sharded")
    return trained_root(root, write_sharded_spec(root / "data"), refit=sharded_refit)


@pytest.fixture
def sharded_workspace(sharded_template: Path, tmp_path: Path) -> Iterator[Workspace]:
    """A private copy of the sharded home (its data in ``home.parent / 'data'``)."""
    with copied_workspace(sharded_template, tmp_path) as ws:
        yield ws
