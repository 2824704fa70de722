"""The review tests' workspace (a trained home) and a file of items to make campaigns from."""

import pytest

from tests.reviewing import items_file


@pytest.fixture
def ws(trained_workspace):
    return trained_workspace


@pytest.fixture
def source(tmp_path):
    return items_file(tmp_path / "items")
