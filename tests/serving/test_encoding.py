"""The three encoders agree: the plain-row and column fast paths never differ from the schema.

``FeatureSchema.encode_record`` is the reference (it names every problem); the
serving fast paths may decline a record (None) but must never encode one
differently, nor accept one the schema refuses.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from assay.errors import AssayError
from assay.registry.schema import Feature, FeatureSchema
from assay.serving.encoding import Encoder

CATEGORIES = ["a", "b", "c", "10", "True"]


@st.composite
def schemas(draw: st.DrawFn) -> FeatureSchema:
    kinds = draw(st.lists(st.sampled_from(["numeric", "boolean", "categorical"]), min_size=1, max_size=4))
    features = []
    for j, kind in enumerate(kinds):
        categories = (
            draw(st.lists(st.sampled_from(CATEGORIES), min_size=1, unique=True))
            if kind == "categorical"
            else []
        )
        features.append(Feature(name=f"f{j}", kind=kind, categories=categories, nullable=draw(st.booleans())))
    return FeatureSchema(features)


def values(feature: Feature) -> st.SearchStrategy[Any]:
    """Mostly what the feature takes, sometimes what a careless or hostile client sends."""
    plain: st.SearchStrategy[Any]
    if feature.kind == "numeric":
        plain = st.integers(-(2**60), 2**60) | st.floats(allow_nan=False, allow_infinity=False)
    elif feature.kind == "boolean":
        plain = st.booleans()
    else:
        plain = st.sampled_from(feature.categories)
    odd = st.sampled_from([None, math.nan, math.inf, -math.inf, "1", "true", "zzz", 0, 1, 2.5, True, [], {}])
    return st.one_of(plain, plain, plain, odd, st.sampled_from(CATEGORIES))


@st.composite
def records(draw: st.DrawFn, schema: FeatureSchema) -> dict[str, Any]:
    record = {f.name: draw(values(f)) for f in schema.features}
    if draw(st.integers(0, 9)) == 0:
        record.pop(draw(st.sampled_from(schema.names)))
    if draw(st.integers(0, 9)) == 0:
        record["extra"] = 1
    return record


def reference(schema: FeatureSchema, record: dict[str, Any]) -> np.ndarray | AssayError:
    try:
        return schema.encode_record(record)
    except AssayError as exc:
        return exc


def same_row(a: Any, b: np.ndarray) -> bool:
    return bool(np.array_equal(np.asarray(a, dtype=np.float64), b, equal_nan=True))


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_fast_paths_agree_with_the_schema(data: st.DataObject) -> None:
    schema = data.draw(schemas())
    encoder = Encoder.of(schema)
    batch = data.draw(st.lists(records(schema), min_size=1, max_size=12))
    expected = [reference(schema, r) for r in batch]

    for record, want in zip(batch, expected, strict=True):
        row = encoder.plain_row(record)
        if row is not None:
            assert not isinstance(want, AssayError), f"plain path accepted {record!r}: {want}"
            assert same_row(row, want)

    X = encoder.columns(batch)
    if X is not None:
        for k, want in enumerate(expected):
            assert not isinstance(want, AssayError), f"column path accepted {batch[k]!r}: {want}"
            assert same_row(X[k], want)

    X, errors = encoder.encode(batch)
    for k, want in enumerate(expected):
        if isinstance(want, AssayError):
            assert errors[k] is not None and errors[k].code == want.code and errors[k].field == want.field
        else:
            assert errors[k] is None
            assert same_row(X[k], want)


def as_array(values: list[Any]) -> np.ndarray | list[Any]:
    """A column as a typed protocol tensor would give it, when its values have one numpy type."""
    kinds = set(map(type, values))
    if kinds == {bool}:
        return np.array(values, dtype=np.bool_)
    if kinds <= {int} and all(-(2**63) <= v < 2**63 for v in values):
        return np.array(values, dtype=np.int64)
    if kinds <= {int, float} and float in kinds:
        return np.array(values, dtype=np.float64)
    return values


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_the_column_entry_agrees_with_the_schema(data: st.DataObject) -> None:
    schema = data.draw(schemas())
    encoder = Encoder.of(schema)
    plain = {f.name: values(f) for f in schema.features}
    n = data.draw(st.integers(0, 20))
    lists = {name: [data.draw(strategy) for _ in range(n)] for name, strategy in plain.items()}
    typed = data.draw(st.booleans())
    columns = {name: as_array(v) if typed else v for name, v in lists.items()}
    records = [{name: lists[name][k] for name in schema.names} for k in range(n)]

    X, errors = encoder.encode_columns(columns, n)
    assert X.shape == (n, len(schema.names))
    for k, record in enumerate(records):
        want = reference(schema, record)
        if isinstance(want, AssayError):
            assert errors[k] is not None and errors[k].code == want.code and errors[k].field == want.field
        else:
            assert errors[k] is None, f"{record!r}: {errors[k]}"
            assert same_row(X[k], want)
