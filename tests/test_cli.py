"""The CLI as a user runs it: quickstart, show, thresholds, promote, history, export/import, errors."""

from __future__ import annotations

from pathlib import Path

import orjson
from click.testing import CliRunner

from assay.cli import main


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
    assert (tmp_path / "home" / "artifacts" / "malignant" / "1" / "card.html").is_file()
    code, out = run(tmp_path / "home", "thresholds", "malignant", "maximum recall @ precision >= 0.9")
    assert code == 0 and "threshold" in out and "recall" in out


def test_show_thresholds_promote_history(trained_home: Path) -> None:
    code, out = run(trained_home, "models")
    assert code == 0 and "damaging" in out and "quality" in out
    code, out = run(trained_home, "show", "damaging")
    assert code == 0
    for words in ("damaging@1", "confusion matrix", "fairness by user_is_anon", "operating point likelybad", "lineage"):
        assert words in out
    code, out = run(trained_home, "show", "damaging@1", "--json")
    card = orjson.loads(out)
    assert card["version"] == 1 and card["aliases"]["production"] == 1
    code, out = run(trained_home, "thresholds", "damaging", "maximum recall @ precision >= 1.01")
    assert code == 2 and "no threshold satisfies" in out
    code, out = run(trained_home, "thresholds", "damaging", "maximum recal @ precision >= 0.5")
    assert code == 1 and "error" in out and "recal" in out
    code, out = run(trained_home, "thresholds", "quality", "maximum recall @ precision >= 0.5")
    assert code == 1 and "--label" in out
    code, out = run(trained_home, "thresholds", "quality", "maximum recall @ precision >= 0.5", "--label", "good")
    assert code == 0
    code, out = run(trained_home, "promote", "damaging", "1", "--alias", "stable")
    assert code == 0 and "stable -> damaging@1" in out
    code, out = run(trained_home, "history", "damaging")
    assert code == 0 and "stable" in out


def test_export_import_between_homes(trained_home: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "m.assay"
    assert run(trained_home, "export", "damaging", str(bundle))[0] == 0
    code, out = run(tmp_path / "other", "import", str(bundle))
    assert code == 0 and "imported as damaging@1" in out
    code, out = run(tmp_path / "other", "show", "damaging@1")
    assert code == 0


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


def test_settings_are_all_documented() -> None:
    result = CliRunner().invoke(main, ["settings"])
    from assay.settings import Settings

    for env, _default, help_text in Settings.describe():
        assert env in result.output and help_text
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [env for env, _d, _h in Settings.describe() if env not in readme]
    assert missing == [], f"settings missing from README: {missing}"
