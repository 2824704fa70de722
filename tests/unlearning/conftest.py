"""A sharded (SISA) spec over the synthetic edits the other tests use."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import write_binary_spec

SISA = """\
[training.unlearning]
shards = {shards}
slices = {slices}
curve = {curve}

[gates]"""


def write_sharded_spec(folder: Path, *, shards: int = 4, slices: int = 3, curve: bool = False) -> Path:
    """The binary edits spec, LightGBM only, trained as ``shards`` shards of ``slices`` slices."""
    spec = write_binary_spec(folder, n_train=1600, n_test=500)
    text = spec.read_text().replace(
        'candidates = ["logistic_regression", "lightgbm"]', 'candidates = ["lightgbm"]'
    )
    text = text.replace("[gates]", SISA.format(shards=shards, slices=slices, curve=str(curve).lower()), 1)
    spec.write_text(text)
    return spec
