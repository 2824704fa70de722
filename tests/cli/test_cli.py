"""The CLI as a user runs it: quickstart, show, thresholds, promote, history, export/import, errors."""

from __future__ import annotations

import errno
import re
import sqlite3
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from assay.cli import main
from assay.registry.versions import Registry
from tests.conftest import EDITQUALITY_COLUMNS, write_binary_spec


def run(home: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--home", str(home), *args], catch_exceptions=False)
    return result.exit_code, result.output


def test_quickstart_trains_on_shipped_data(tmp_path: Path) -> None:
    code, out = run(tmp_path / "home", "quickstart")
    assert code == 0, out
    assert "candidates (cross-validated" in out
    for name in ("logistic_regression", "lightgbm", "hist_gradient_boosting", "random_forest"):
        assert name in out
    assert "chosen:" in out and "malignant@1" in out and "card.html" in out
    assert "refit on all" in out and "hyperparameters: " in out
    assert (tmp_path / "home" / "artifacts" / "malignant" / "1" / "card.html").is_file()
    code, out = run(tmp_path / "home", "thresholds", "malignant", "maximum recall @ precision >= 0.9")
    assert code == 0 and "threshold" in out and "recall" in out


def test_show_thresholds_promote_history(trained_home: Path) -> None:
    code, out = run(trained_home, "models")
    assert code == 0 and "damaging" in out and "quality" in out
    code, out = run(trained_home, "show", "damaging")
    assert code == 0
    for words in (
        "damaging@1",
        "confusion matrix",
        "fairness by user_is_anon",
        "operating point likelybad",
        "lineage",
    ):
        assert words in out
    text = out
    code, out = run(trained_home, "show", "damaging@1", "--json")
    card = orjson.loads(out)
    (params_line,) = [line for line in text.splitlines() if line.startswith("hyperparameters: ")]
    assert card["params"] and all(f"{k}={v}" in params_line.split() for k, v in card["params"].items())
    assert card["version"] == 1 and card["aliases"]["production"] == 1
    code, out = run(trained_home, "thresholds", "damaging", "maximum recall @ precision >= 1.01")
    assert code == 2 and "no threshold satisfies" in out
    code, out = run(trained_home, "thresholds", "damaging", "maximum recal @ precision >= 0.5")
    assert code == 1 and "error" in out and "recal" in out
    code, out = run(trained_home, "thresholds", "quality", "maximum recall @ precision >= 0.5")
    assert code == 1 and "--label" in out
    code, out = run(
        trained_home, "thresholds", "quality", "maximum recall @ precision >= 0.5", "--label", "good"
    )
    assert code == 0
    code, out = run(trained_home, "promote", "damaging", "1", "--alias", "stable")
    assert code == 0 and "stable -> damaging@1" in out
    code, out = run(trained_home, "history", "damaging")
    assert code == 0 and "stable" in out


def test_export_import_between_homes(trained_home: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "m.assay"
    code, out = run(trained_home, "export", "damaging", str(bundle))
    assert code == 0
    published = re.search(r"sha256 ([0-9a-f]{64})", out)
    assert published is not None
    wrong = "0" * 64
    code, out = run(tmp_path / "other", "import", str(bundle), "--sha256", wrong)
    assert code == 1 and "Traceback" not in out
    code, out = run(tmp_path / "other", "import", str(bundle), "--sha256", published[1])
    assert code == 0 and "imported damaging@1" in out
    assert "`assay promote damaging 1`" in out  # no alias moved: the output says which to set
    code, out = run(tmp_path / "other", "show", "damaging@1")
    assert code == 0
    code, out = run(tmp_path / "other", "import", str(bundle))
    assert code == 0 and "already here as damaging@1" in out and "nothing imported" in out
    code, out = run(tmp_path / "other", "models")
    assert code == 0 and "1, 2" not in out  # one version, not a copy


def test_show_prints_the_real_accuracy_of_a_multiclass_model(trained_home: Path) -> None:
    code, out = run(trained_home, "show", "quality")
    assert code == 0, out
    ev = orjson.loads(run(trained_home, "show", "quality", "--json")[1])["evaluation"]
    matrix = np.array(ev["confusion_matrix"]["matrix"])
    accuracy = np.trace(matrix) / matrix.sum()  # the share of items classified correctly
    assert f"accuracy={accuracy:.3f}" in out
    assert f"log loss={ev['log_loss']:.4f}" in out
    header = next(line for line in out.splitlines() if line.startswith("label "))
    assert "accuracy" not in header  # the one-vs-rest "accuracy" of micro/macro is not shown as accuracy


def test_show_prints_fairness_at_every_operating_point(trained_home: Path) -> None:
    code, out = run(trained_home, "show", "damaging")
    assert code == 0
    assert "operating point likelybad (class True)" in out
    assert "fairness by user_is_anon (class True) at the decision" in out
    assert "fairness by user_is_anon at operating point likelybad (class True)" in out
    assert "fnr" in out and "brier" in out and "95% CI" in out


def test_errors_are_one_line_and_exit_non_zero(tmp_path: Path) -> None:
    home = tmp_path / "home"
    code, out = run(home, "train", str(tmp_path / "missing.toml"))
    assert code == 1 and out.startswith("error") and "spec file not found" in out and "Traceback" not in out
    spec = tmp_path / "s.toml"
    spec.write_text('name = "m"\ncolour = "red"\n[data]\ntrain = "x.csv"\nid = "id"\nlabel = "y"\n')
    code, out = run(home, "train", str(spec))
    assert code == 1 and "[colour]" in out and "unknown key" in out
    spec.write_text('name = "m"\n[data]\ntrain = "x.csv"\nid = "id"\nlabel = "y"\n')
    code, out = run(home, "train", str(spec))
    assert code == 1 and "x.csv: file not found" in out
    code, out = run(home, "show", "nosuch")
    assert code == 1 and "unknown model 'nosuch'" in out
    code, out = run(home, "promote", "nosuch", "1")
    assert code == 1


def test_train_and_show_report_the_search(tmp_path: Path) -> None:
    spec = write_binary_spec(tmp_path / "data", n_train=300, n_test=100)
    spec.write_text(
        spec.read_text().replace(
            'candidates = ["logistic_regression", "lightgbm"]',
            'candidates = ["logistic_regression"]\nsearch_budget_s = 600\nsearch_trials = 2',
        )
    )
    code, out = run(tmp_path / "home", "train", str(spec))
    assert code == 0, out
    assert "search: 2 of 2 trials" in out
    code, out = run(tmp_path / "home", "show", "damaging")
    assert code == 0 and "search: 2 of 2 trials\n" in out


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ("[training.params.random_forest]\nfoo = 1\n", "[training.params.random_forest.foo]"),
        (
            "[training.params.random_forest]\nn_estimators = -1\n",
            "[training.params.random_forest.n_estimators]",
        ),
        ("[training.params.lightgbm]\nnum_leavs = 8\n", "did you mean num_leaves"),
        ("[training.params]\nlightgbm = 5\n", "must be a table"),
    ],
)
def test_bad_hyperparameters_are_one_line(tmp_path: Path, params: str, words: str) -> None:
    spec = tmp_path / "s.toml"
    # The data file does not exist: hyperparameters are refused before any data is read.
    spec.write_text('name = "m"\n[data]\ntrain = "x.csv"\nid = "id"\nlabel = "y"\n' + params)
    code, out = run(tmp_path / "home", "train", str(spec))
    assert code == 1 and out.startswith("error") and words in out, out
    assert "x.csv" not in out


def test_settings_are_all_documented() -> None:
    result = CliRunner().invoke(main, ["settings"])
    from assay.settings import Settings

    for env, _default, help_text in Settings.describe():
        assert env in result.output and help_text
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [env for env, _d, _h in Settings.describe() if env not in readme]
    assert missing == [], f"settings missing from README: {missing}"


class _FullDisk:
    """A file whose writes fail as they do on a full disk (what the machine answers, simulated)."""

    def __init__(self, file: Any) -> None:
        self.file = file

    def write(self, data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()

    def close(self) -> None:
        self.file.close()


def _fill_disk_under(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """Every file opened for writing under ``root`` through pathlib refuses its writes."""
    real_open = Path.open

    def open_(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        file = real_open(self, mode, *args, **kwargs)
        if root in self.parents and any(m in mode for m in "wxa"):
            return _FullDisk(file)
        return file

    monkeypatch.setattr(Path, "open", open_)


def _files_under(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if not p.is_dir() and p.name != "assay.db" and "assay.db-" not in p.name
    )


def test_a_full_disk_during_train_is_one_line_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = write_binary_spec(tmp_path / "data", n_train=300, n_test=100)
    spec.write_text(
        spec.read_text().replace('["logistic_regression", "lightgbm"]', '["logistic_regression"]')
    )
    home = tmp_path / "home"
    _fill_disk_under(monkeypatch, home / "artifacts")
    code, out = run(home, "train", str(spec))
    assert code == 1 and "Traceback" not in out, out
    # Progress lines, then one line of error.
    assert re.search(r"\nerror: no space left on device while writing \S+/artifacts/damaging/\S+\n\Z", out), (
        out
    )
    assert _files_under(home / "artifacts") == []
    assert list((home / "artifacts" / "damaging").iterdir()) == []
    code, out = run(home, "models")
    assert out.strip() == "no models yet"


def test_a_full_disk_during_export_and_import_is_one_line_and_leaves_nothing(
    trained_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "out" / "m.assay"
    bundle.parent.mkdir()
    with monkeypatch.context() as patch:
        patch.setattr(zipfile.ZipFile, "writestr", lambda zf, name, data: _FullDisk(None).write(data))
        code, out = run(trained_home, "export", "damaging", str(bundle))
    assert code == 1 and out == f"error: no space left on device while writing {bundle}\n", out
    assert list(bundle.parent.iterdir()) == []

    assert run(trained_home, "export", "damaging", str(bundle))[0] == 0
    other = tmp_path / "other"
    _fill_disk_under(monkeypatch, other)
    code, out = run(other, "import", str(bundle))
    assert code == 1 and "Traceback" not in out, out
    assert re.search(r"^error: no space left on device while writing \S+/artifacts/\.import/\S+\n\Z", out), (
        out
    )
    assert _files_under(other) == []
    assert list((other / "artifacts" / ".import").iterdir()) == []


def test_a_full_store_is_one_line(trained_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*args: Any, **kwargs: Any) -> None:
        raise sa.exc.OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full"))

    monkeypatch.setattr(Registry, "set_alias", full)
    code, out = run(trained_home, "promote", "damaging", "1", "--alias", "stable")
    assert code == 1 and out == "error: no space left on device while writing the store\n", out


def test_score_and_show_a_version_with_per_group_thresholds(mitigated_home: Path) -> None:
    """``assay score`` reads the group from the file's column and decides each row at its threshold;
    ``assay show`` gives the trade-off at the decision and at every operating point."""
    import pandas as pd

    data = mitigated_home.parent / "data" / "edits.test.tsv"
    out = mitigated_home.parent / "scored.csv"
    code, text = run(
        mitigated_home,
        "score",
        "fairctx",
        "--input",
        str(data),
        "--no-header",
        "--no-log",
        "--output",
        str(out),
    )
    assert code == 0, text
    scored = pd.read_csv(out, dtype={"group": str})
    card = orjson.loads(next((mitigated_home / "artifacts" / "fairctx").rglob("card.json")).read_bytes())
    record = card["mitigation"]
    assert set(scored["group"]) == {"True", "False"}
    assert scored["threshold"].tolist() == [record["thresholds"][g] for g in scored["group"]]
    assert (scored["prediction"] == (scored["probability_true"] >= scored["threshold"])).all()
    # A group the version does not know refuses the file, naming row and column.
    rows = pd.read_csv(data, sep="\t", header=None, dtype=str)
    rows.iloc[3, EDITQUALITY_COLUMNS.index("user_is_anon")] = "yes-ish"
    bad = mitigated_home.parent / "bad.tsv"
    rows.to_csv(bad, sep="\t", header=False, index=False)
    code, text = run(
        mitigated_home,
        "score",
        "fairctx",
        "--input",
        str(bad),
        "--no-header",
        "--no-log",
        "--output",
        str(out),
    )
    assert code != 0 and "row 3: 'user_is_anon' has no group 'yes-ish'" in text, text
    code, text = run(mitigated_home, "show", "fairctx")
    assert code == 0, text
    assert "mitigation: thresholds (demographic_parity by user_is_anon)" in text
    for name in record["operating_points"]:
        assert re.search(rf"^\s*{name}\s+0\.\d+\s+per group", text, re.MULTILINE), text
    assert re.search(r"^\s*\(no known group\)\s+0\.\d+", text, re.MULTILINE)
