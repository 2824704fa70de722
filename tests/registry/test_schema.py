"""Column kinds and encoding: ``infer_kind`` and ``encode_frame`` answer what asking each value would."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from assay.errors import DataError
from assay.registry.schema import Feature, FeatureSchema, _parse_bool_or_none, infer_kind, is_missing


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


def encoded_value_by_value(schema: FeatureSchema, column: pd.Series) -> list[float]:
    """The definition of a column's encoding, one value at a time."""
    feature = schema.features[0]
    out = []
    for v in column:
        if feature.kind == "categorical":
            out.append(np.nan if is_missing(v) else schema._codes[0].get(str(v), np.nan))
        else:
            parsed = _parse_bool_or_none(v)
            out.append(np.nan if parsed is None else float(parsed))
    return out


TEXTS = st.sampled_from(["yes", "no", "True", " f ", "1", "0", "a", "b", "2.5", None])


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["categorical", "boolean"]),
    st.sampled_from(["str", "object", "float"]),
    st.lists(TEXTS, min_size=1, max_size=30),
    st.lists(TEXTS, min_size=1, max_size=30),
)
def test_encoding_by_distinct_value_equals_the_value_by_value_definition(
    kind: str, dtype: str, learnt: list[Any], values: list[Any]
) -> None:
    def column(texts: list[Any]) -> pd.Series:
        if dtype == "float":  # numbers: what Parquet files give
            return pd.Series([{"1": 1.0, "0": -0.0, "2.5": 2.5}.get(t, np.nan) for t in texts])
        return pd.Series(texts, dtype=dtype)

    train, frame = column(learnt), pd.DataFrame({"x": column(values)})
    if kind == "categorical":
        schema = FeatureSchema.learn(pd.DataFrame({"x": train}), {"x": "categorical"}, source="t")
    else:
        schema = FeatureSchema([Feature("x", "boolean")])
    expected = encoded_value_by_value(schema, frame["x"])
    if kind == "boolean" and any(
        np.isnan(e) and not is_missing(v) for e, v in zip(expected, frame["x"], strict=True)
    ):
        with pytest.raises(DataError, match="is boolean but row"):
            schema.encode_frame(frame, source="t")
        return
    np.testing.assert_array_equal(schema.encode_frame(frame, source="t")[:, 0], expected)


def test_learning_encodes_the_training_data_as_encoding_it_again_would() -> None:
    frame = pd.DataFrame({"c": pd.Series(["b", "a", None, "b"], dtype="str"), "n": ["1", "2.5", None, "3"]})
    schema, X = FeatureSchema.learn_encoded(frame, {"c": "categorical", "n": "numeric"}, source="t")
    assert schema.features[0].categories == ["a", "b"]
    np.testing.assert_array_equal(X, schema.encode_frame(frame, source="t"))


# Text pandas and Arrow could read differently: signed zeros, blanks, words, huge whole numbers.
# fmt: off
TRICKY = [
    "0", "1", "-0", "-0.0", "0.0", "+1", ".5", "5.", "1E5", "1e400", "-1e-400", "nan", "inf", "-Infinity",
    "0x10", "1_000", "1,5", "yes", "00012", "9007199254740993", "18446744073709551617",
    "-9223372036854775809", "0.1234567890123456789012345", "4.9e-324",
]
# fmt: on
NUMBER_TEXTS = st.one_of(
    st.sampled_from([*TRICKY, " 1.5", "2 ", "", None]),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(-(2**70), 2**70).map(str),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(NUMBER_TEXTS, min_size=1, max_size=20))
@example(["-0", "1"]).via("integers: pandas reads -0 as 0")
@example(["-0", "1.5"]).via("floats: pandas keeps -0.0")
@example(["-0.0", "2", None]).via("missing values make floats")
@example(["1.25", "-3", "1e5"]).via("Arrow reads it all")
def test_text_read_by_arrow_is_read_as_pandas_reads_it(texts: list[Any]) -> None:
    """Arrow-backed text (large CSV files) is parsed by Arrow; the kind, the numbers (bit for bit)
    and the refusals are those of pandas' reading of the same text (object columns)."""
    arrow, plain = (pd.Series(texts, dtype=t) for t in (pd.StringDtype("pyarrow", na_value=np.nan), object))
    assert infer_kind(arrow) == infer_kind(plain)
    schema = FeatureSchema([Feature("x", "numeric")])
    try:
        expected = schema.encode_frame(pd.DataFrame({"x": plain}), source="t")
    except DataError as exc:
        with pytest.raises(DataError) as caught:
            schema.encode_frame(pd.DataFrame({"x": arrow}), source="t")
        assert str(caught.value) == str(exc)
        return
    got = schema.encode_frame(pd.DataFrame({"x": arrow}), source="t")
    assert got.tobytes() == expected.tobytes()
