"""The spec's meaning: its hash ignores formatting, and the stored form reads back to the same spec."""

from __future__ import annotations

from pathlib import Path

from assay.modelling.spec import ModelSpec, OperatingPointSpec
from assay.modelling.spec_file import load_spec, parse_spec
from tests.modelling.test_spec_file import MINIMAL


def test_hash_depends_on_meaning_not_formatting(tmp_path: Path) -> None:
    a = tmp_path / "a.toml"
    b = tmp_path / "b.toml"
    a.write_text('name = "m"\n[data]\ntrain = "d.csv"\nid = "id"\nlabel = "y"\n')
    b.write_text('# comment\nname="m"\n\n[data]\nlabel="y"\nid="id"\ntrain=["d.csv"]\n')
    assert load_spec(a).hash == load_spec(b).hash
    c = parse_spec({**MINIMAL, "seed": 1}, base=tmp_path)
    assert c.hash != load_spec(a).hash


def test_operating_points_card_and_fairness_round_trip(tmp_path: Path) -> None:
    raw = {
        **MINIMAL,
        "features": {"sensitive": ["sex", "race"]},
        "operating_points": {
            "plain": "maximum recall @ precision >= 0.9",
            "named": {"query": "maximum recall @ precision >= 0.8", "class": "stub"},
        },
        "card": {"owner": "team", "out_of_scope": ["hiring"]},
        "fairness": {"min_group_size": 50, "intersections": [["sex", "race"]], "mitigation": "reweighing"},
    }
    spec = parse_spec(raw, base=tmp_path)
    assert spec.operating_points["named"] == OperatingPointSpec("maximum recall @ precision >= 0.8", "stub")
    stored = spec.to_dict()
    assert stored["operating_points"]["plain"] == "maximum recall @ precision >= 0.9"  # as before classes
    for again in (ModelSpec.from_dict(stored),):
        assert again.hash == spec.hash and again.card.out_of_scope == ["hiring"]
    # A spec without the new sections keeps the hash it had before they existed.
    assert "card" not in parse_spec(MINIMAL).to_dict() and "fairness" not in parse_spec(MINIMAL).to_dict()
