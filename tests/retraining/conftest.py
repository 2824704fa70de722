"""A workspace with a model in production, for the retraining tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from assay.modelling.spec_file import load_spec
from assay.modelling.training import train
from assay.workspace import Workspace
from tests.conftest import write_binary_spec


@pytest.fixture
def served(workspace: Workspace, tmp_path: Path) -> tuple[Workspace, Path]:
    """``damaging@1`` in production, trained on 600 rows, held out on 400 (ids 100000-100999)."""
    spec = write_binary_spec(tmp_path / "data", n_train=600, n_test=400)
    train(load_spec(spec), workspace.registry)
    return workspace, spec
