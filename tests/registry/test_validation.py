"""The record validator's long-list checks: asked of the whole list, answered as value by value."""

from __future__ import annotations

from typing import Any

import pytest

from assay.errors import ArtifactError
from assay.registry.validation import Validator


@pytest.mark.parametrize(
    ("values", "null", "bad"),
    [
        ([0.0, 0.5, 1, 1.0], False, None),
        ([], False, None),
        ([None, 0.25, None], True, None),
        ([None, None], True, None),
        ([0.5, None], False, 1),
        ([0.1, float("nan"), 0.2], False, 1),
        ([float("nan"), 0.2], True, 0),
        ([0.1, 0.2, 1.5], False, 2),
        ([-0.1, 0.2], True, 0),
        ([0.1, float("inf")], False, 1),
        ([0.1, True], False, 1),
        ([0.1, "0.5"], True, 1),
    ],
)
def test_unit_numbers_refuses_the_first_bad_value(values: list[Any], null: bool, bad: int | None) -> None:
    check = Validator("t.json")
    if bad is None:
        check.unit_numbers(values, "column", null=null)
        return
    with pytest.raises(ArtifactError, match=rf"column\[{bad}\] must be"):
        check.unit_numbers(values, "column", null=null)
