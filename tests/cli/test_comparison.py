"""`assay compare` and `assay promote` as a user runs them: statistics side by side with paired
tests, the report written, and a worse challenger refused with the comparison's numbers."""

from __future__ import annotations

from pathlib import Path

import orjson

from tests.cli.test_cli import run
from tests.modelling.test_comparison import WEAK_FEATURES, write_variant


def test_compare_then_promote(trained_home: Path, tmp_path: Path) -> None:
    code, out = run(trained_home, "train", str(write_variant(trained_home, "weak", features=WEAK_FEATURES)))
    assert code == 0, out
    code, out = run(
        trained_home,
        "compare",
        "damaging@1",
        "damaging@2",
        "--resamples",
        "300",
        "-o",
        str(tmp_path / "c.html"),
    )
    assert code == 0, out
    for words in ("damaging@1 vs damaging@2 on 500 labelled rows of held-out data of damaging@2", "95% interval",
                  "McNemar", "Nadeau-Bengio", "verdict: damaging@2 is significantly worse", "report: "):  # fmt: skip
        assert words in out
    assert "<svg" in (tmp_path / "c.html").read_text()
    code, out = run(trained_home, "compare", "damaging", "damaging@candidate", "--json", "--resamples", "100",
                    "--data", str(trained_home.parent / "data" / "edits.test.tsv"))  # fmt: skip
    facts = orjson.loads(out)
    assert (
        code == 0
        and facts["a"] == "damaging@1"
        and facts["n"] == 500
        and facts["source"].endswith("edits.test.tsv")
    )
    code, out = run(trained_home, "promote", "damaging", "2")
    assert code == 1 and "significantly worse" in out and "--force" in out
    code, out = run(trained_home, "promote", "damaging", "2", "--force", "--reason", "try it")
    assert code == 0 and "FAIL  blessing gate: roc_auc" in out and "production -> damaging@2 (forced)" in out
    code, out = run(trained_home, "compare", "damaging@1", "quality@1")
    assert code == 1 and "two versions of one model" in out
