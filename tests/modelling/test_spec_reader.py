"""Typed access to a spec's tables: the checks every section reader relies on."""

from __future__ import annotations

import pytest

from assay.errors import SpecError
from assay.modelling.spec_reader import SpecReader

r = SpecReader("s.toml")


def test_an_integer_is_a_float_but_a_boolean_is_no_integer() -> None:
    assert r.get({"x": 3}, "t.x", float) == 3.0 and isinstance(r.get({"x": 3}, "t.x", float), float)
    with pytest.raises(SpecError, match=r"^s\.toml: t\.x: must be an integer; got True$") as info:
        r.get({"x": True}, "t.x", int)
    assert info.value.field == "t.x"


def test_missing_keys_take_their_default_unless_required() -> None:
    assert r.get({}, "t.x", int, default=7) == 7
    with pytest.raises(SpecError, match=r"t\.x: missing \(required\)"):
        r.get({}, "t.x", int, required=True)


def test_unknown_keys_are_named_with_the_allowed_ones() -> None:
    with pytest.raises(SpecError, match=r"t\.y: unknown key; allowed here: a, b"):
        r.keys({"a": 1, "y": 2}, "t.", {"b", "a"})


def test_paths_and_numbers() -> None:
    assert r.paths({"p": "a.csv"}, "d.p") == ["a.csv"]
    with pytest.raises(SpecError, match="non-empty list of paths"):
        r.paths({"p": []}, "d.p", required=True)
    assert r.numbers({"m": {"f1": 1}}, "g.m", ("f1",)) == {"f1": 1.0}
    with pytest.raises(SpecError, match=r"g\.m\.f1: must be a number; got True"):
        r.numbers({"m": {"f1": True}}, "g.m", ("f1",))
    with pytest.raises(SpecError, match=r"g\.m\.auc: unknown statistic"):
        r.numbers({"m": {"auc": 0.5}}, "g.m", ("f1",))
