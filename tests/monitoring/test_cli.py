"""The monitoring commands: log import/export/stats, labels load, monitor report/check/status."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
from click.testing import CliRunner

from assay.cli import main
from tests.conftest import edits_frame


def run(home: Path, *args: str) -> str:
    result = CliRunner().invoke(main, ["--home", str(home), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def fail(home: Path, *args: str) -> str:
    result = CliRunner().invoke(main, ["--home", str(home), *args])
    assert result.exit_code == 1, result.output
    return result.output


@pytest.fixture
def traffic(tmp_path: Path) -> Path:
    """Four days of edits a minute apart, words_added tripled on the last two."""
    frame = edits_frame(4 * 1440, seed=20)
    frame.loc[2 * 1440 :, "words_added"] *= 3
    frame["at"] = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(np.arange(len(frame)), unit="min")
    path = tmp_path / "traffic.csv"
    frame.to_csv(path, index=False)
    return path


def test_log_import_report_check_status_export(trained_home: Path, traffic: Path, tmp_path: Path) -> None:
    out = run(trained_home, "log", "import", "damaging", str(traffic), "--time-column", "at")
    assert "logged 5760 rows" in out
    assert "damaging@1\t5760" in run(trained_home, "log", "stats")

    html, js = tmp_path / "r.html", tmp_path / "r.json"
    out = run(
        trained_home, "monitor", "report", "damaging", "--since", "2026-01-01", "--until", "2026-01-05",
        "--window", "1d", "--psi", "-o", str(html), "--json", str(js),
    )  # fmt: skip
    assert "4 windows of 1d (4 with at least 500 rows judged)" in out
    assert "features flagged: words_added (2 windows)" in out and f"report: {html}" in out
    analysis = orjson.loads(js.read_bytes())
    assert [w["drift"]["drifted_features"] for w in analysis["windows"]][:2] == [[], []]
    assert all("words_added" in w["drift"]["drifted_features"] for w in analysis["windows"][2:])
    assert all(c["psi"] is not None for c in analysis["windows"][0]["drift"]["features"])
    page = html.read_text()
    assert page.count("<svg") >= 3 and "Score distribution now vs reference" in page

    out = run(trained_home, "monitor", "check")
    assert "window(s) judged" in out and "feature:words_added: ok -> warning" in out
    status = run(trained_home, "monitor", "status")
    assert "feature:words_added" in status and "warning" in status
    js_status = orjson.loads(run(trained_home, "monitor", "status", "damaging", "--json"))
    assert {m["monitor"] for m in js_status["monitors"]} >= {"data_drift", "prediction_drift"}
    assert "no window has closed" in run(trained_home, "monitor", "check", "damaging")  # judged once

    exported = tmp_path / "log.parquet"
    assert "wrote 5760 logged scores" in run(trained_home, "log", "export", "damaging@1", "-o", str(exported))
    frame = pd.read_parquet(exported)
    source = pd.read_csv(traffic)
    assert frame["id"].tolist() == source["rev_id"].astype(str).tolist()
    assert frame["words_added"].tolist() == source["words_added"].tolist()
    assert frame["user_is_anon"].tolist() == source["user_is_anon"].tolist()
    assert set(frame["prediction"]) <= {"True", "False"}
    since = run(
        trained_home, "log", "export", "damaging", "-o", str(tmp_path / "x.csv"), "--since", "2026-01-04"
    )
    assert "wrote 1440 logged scores" in since


def test_labels_load_reports_what_it_refused(trained_home: Path, traffic: Path, tmp_path: Path) -> None:
    run(trained_home, "log", "import", "damaging", str(traffic), "--time-column", "at")
    source = pd.read_csv(traffic)
    labels = pd.DataFrame({"id": source["rev_id"].astype(str), "label": source["reverted"].astype(str)})
    extra = pd.DataFrame(
        {
            "id": ["nope", str(source["rev_id"][0]), str(source["rev_id"][1])],
            "label": ["True", "True", "maybe"],
        }
    )
    path = tmp_path / "labels.csv"
    pd.concat([labels.iloc[:100], extra]).to_csv(path, index=False)
    out = run(trained_home, "labels", "load", str(path), "--model", "damaging")
    assert "100 label(s) stored, 3 refused (duplicate_label: 2, unknown_item: 1)" in out
    assert "row 101" in out  # the refused rows are named by their line in the file
    by_column = tmp_path / "by_model.csv"
    pd.DataFrame(
        {"model": ["nope", "damaging"], "id": ["1", str(source["rev_id"][500])], "label": ["True", "False"]}
    ).to_csv(by_column, index=False)
    assert "1 label(s) stored, 1 refused (unknown_model: 1)" in run(
        trained_home, "labels", "load", str(by_column)
    )
    assert "--model" in fail(trained_home, "labels", "load", str(path))
    out = run(
        trained_home,
        "monitor",
        "report",
        "damaging",
        "--since",
        "2026-01-01",
        "--until",
        "2026-01-05",
        "-o",
        str(tmp_path / "r.html"),
    )
    assert "performance from 101 labelled rows" in out


def test_report_needs_a_profile_and_sane_times(trained_home: Path) -> None:
    assert "not a time" in fail(trained_home, "monitor", "report", "damaging", "--since", "last tuesday")
    assert "is not a duration" in fail(trained_home, "monitor", "report", "damaging", "--window", "fortnight")
    assert "unknown model" in fail(trained_home, "monitor", "report", "nope")
