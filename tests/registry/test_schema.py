"""Column kinds: ``infer_kind`` answers what asking ``_parse_bool_or_none`` of every value would."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from assay.registry.schema import _parse_bool_or_none, infer_kind


def kind_value_by_value(column: pd.Series) -> str:
    """The definition, one value at a time (slow on big columns, which is why infer_kind is not this)."""
    values = column.dropna()
    if values.empty:
        return "numeric"
    if pd.api.types.is_bool_dtype(values) or all(_parse_bool_or_none(v) is not None for v in values):
        return "boolean"
    if pd.api.types.is_numeric_dtype(values):
        return "numeric"
    if pd.to_numeric(values, errors="coerce").notna().mean() >= 0.9:
        return "numeric"
    return "categorical"


VALUES: dict[str, st.SearchStrategy[Any]] = {
    "ints": st.integers(-3, 3),
    "floats": st.sampled_from([0.0, 1.0, 0.5, -2.0, float("nan")]),
    "bools": st.booleans(),
    "objects": st.one_of(
        st.sampled_from(["yes", "no", "true", "False", "1", "0", "maybe", "", " y ", "2.5"]),
        st.integers(-1, 2),
        st.sampled_from([0.0, 1.0, 3.5, True, False, None]),
    ),
}


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(VALUES)).flatmap(lambda k: st.tuples(st.just(k), st.lists(VALUES[k], max_size=30)))
)
def test_infer_kind_equals_the_value_by_value_definition(case: tuple[str, list[Any]]) -> None:
    kind, values = case
    column = pd.Series(values, dtype=object) if kind == "objects" else pd.Series(values)
    assert infer_kind(column) == kind_value_by_value(column)


def test_numeric_columns_of_zeros_and_ones_are_boolean_and_others_numeric() -> None:
    assert infer_kind(pd.Series([0, 1, 1, 0])) == "boolean"
    assert infer_kind(pd.Series([0.0, 1.0, np.nan])) == "boolean"
    assert infer_kind(pd.Series([0, 1, 2])) == "numeric"
    assert infer_kind(pd.Series(["no", "YES", None], dtype=object)) == "boolean"
    assert infer_kind(pd.Series(["no", "YES", "perhaps"], dtype=object)) == "categorical"
