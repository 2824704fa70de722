"""The review CLI as an admin runs it: users, campaign creation with every selection, show, export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from assay.cli import main
from assay.settings import Settings
from assay.store import tables
from assay.workspace import Workspace
from tests.reviewing import PASSWORD, items_file, scorer_for


def run(home: Path, *args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--home", str(home), *args], input=stdin, catch_exceptions=False)
    return result.exit_code, result.output


def create(home: Path, name: str, source: Path, *options: str) -> str:
    code, out = run(
        home, "campaign", "create", name, "--model", "damaging", "--source", str(source), "--id-column", "rev_id",
        "--created-by", "root", *options,
    )  # fmt: skip
    assert code == 0, out
    return out


def shown(home: Path, name: str) -> dict[str, Any]:
    code, out = run(home, "campaign", "show", name, "--json")
    assert code == 0, out
    return orjson.loads(out)["campaign"]


def stored_items(home: Path, name: str) -> list[sa.Row]:
    """The campaign's items in the order they are handed out, as the store holds them."""
    ws = Workspace.open(Settings.load(home=home, environ={}))
    try:
        with ws.engine.connect() as conn:
            return conn.execute(
                sa.select(tables.campaign_items)
                .join(tables.campaigns, tables.campaigns.c.id == tables.campaign_items.c.campaign_id)
                .where(tables.campaigns.c.name == name)
                .order_by(tables.campaign_items.c.position)
            ).all()
    finally:
        ws.close()


def scored(home: Path, source: Path) -> pd.DataFrame:
    """Every item of ``source`` scored by the scoring service, to check selections against."""
    ws = Workspace.open(Settings.load(home=home, environ={}))
    try:
        return scorer_for(ws).score_frame("damaging", pd.read_csv(source), id_column="rev_id")
    finally:
        ws.close()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return items_file(tmp_path / "items")


def test_users_campaigns_and_export(trained_home, source, tmp_path):
    code, out = run(
        trained_home, "user", "create", "root", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n"
    )
    assert code == 0 and "created admin root" in out
    assert "root" in run(trained_home, "user", "list")[1]
    out = create(trained_home, "cli", source, "--size", "6", "--auto-rule", "user_is_anon == false -> False")
    assert "campaign cli: 6 items" in out
    assert "cli" in run(trained_home, "campaign", "list")[1]
    assert "Krippendorff's alpha (nominal): -" in run(trained_home, "campaign", "show", "cli")[1]
    code, out = run(
        trained_home, "labels", "export", "cli", "--output", str(tmp_path / "labels.parquet"), "--all"
    )
    assert code == 0 and "wrote 6 rows" in out
    code, out = run(trained_home, "campaign", "show", "nope")
    assert code == 1 and "no campaign named 'nope'" in out


def test_flagged_campaign_at_an_operating_point_or_a_query(trained_home, source):
    everything = scored(trained_home, source)
    out = create(
        trained_home, "flag", source, "--select", "flagged", "--threshold", "likelybad", "--size", "1000"
    )
    made = shown(trained_home, "flag")
    threshold = made["selection"]["threshold"]
    expected = int((everything["probability_True"] >= threshold).sum())
    assert made["selection"]["method"] == "flagged" and made["selection"]["class"] == "True"
    assert made["item_count"] == made["selection"]["flagged"] == expected > 0
    assert f"campaign flag: {expected} items" in out
    assert all(i.probabilities["True"] >= threshold for i in stored_items(trained_home, "flag"))
    # The same operating point as a query, with the class named: the same threshold, capped by --size.
    create(
        trained_home, "flag-q", source, "--select", "flagged", "--threshold", "maximum recall @ precision >= 0.6",
        "--flag-class", "True", "--size", "5",
    )  # fmt: skip
    capped = shown(trained_home, "flag-q")
    assert capped["selection"]["threshold"] == pytest.approx(threshold) and capped["item_count"] == 5
    code, out = run(
        trained_home, "campaign", "create", "no-threshold", "--model", "damaging", "--source", str(source),
        "--id-column", "rev_id", "--select", "flagged",
    )  # fmt: skip
    assert code == 1 and "needs an operating point or a threshold query" in out


def test_uncertain_campaign_takes_the_least_sure_first(trained_home, source):
    create(trained_home, "unsure", source, "--select", "uncertain", "--size", "12")
    assert shown(trained_home, "unsure")["selection"]["method"] == "uncertain"
    margins = [abs(i.probabilities["True"] - 0.5) for i in stored_items(trained_home, "unsure")]
    assert len(margins) == 12 and margins == sorted(margins)
    everything = scored(trained_home, source)
    assert max(margins) <= np.sort(np.abs(everything["probability_True"] - 0.5))[11] + 1e-12


def test_list_campaign_from_a_file_with_reviewers_blind_and_a_link(trained_home, source, tmp_path):
    for name in ("ana", "ben"):
        assert run(trained_home, "user", "create", name, "--password-stdin", stdin=PASSWORD + "\n")[0] == 0
    ids = tmp_path / "ids.txt"
    ids.write_text("100005\n100002\n\n100009\n100005\n")
    create(
        trained_home, "listed", source, "--select", "list", "--ids", f"@{ids}", "--reviewer", "ana",
        "--reviewer", "ben", "--blind", "--link", "https://example.org/?diff={id}", "--labels-per-item", "2",
    )  # fmt: skip
    made = shown(trained_home, "listed")
    assert (made["reviewers"], made["blind"], made["link_template"], made["labels_per_item"]) == (
        ["ana", "ben"],
        True,
        "https://example.org/?diff={id}",
        2,
    )
    assert [i.item_id for i in stored_items(trained_home, "listed")] == ["100005", "100002", "100009"]
    code, out = run(
        trained_home, "campaign", "create", "ghosts", "--model", "damaging", "--source", str(source),
        "--id-column", "rev_id", "--select", "list", "--ids", "100005", "--reviewer", "ghost",
    )  # fmt: skip
    assert code == 1 and "no user named 'ghost'" in out


def test_user_create_refuses_a_weak_password(trained_home):
    for weak, problem in [
        ("pw-123456", "at least 12 characters"),
        ("Password2026!", "common passwords"),
        ("dee-the-reviewer", "must not contain the username"),
    ]:
        code, out = run(trained_home, "user", "create", "dee", "--password-stdin", stdin=weak + "\n")
        assert code == 1 and problem in out, out
    code, out = run(trained_home, "user", "create", "dee", "--password-stdin", stdin=PASSWORD + "\n")
    assert code == 0 and "created reviewer dee" in out


def test_campaign_create_takes_the_tie_cap_guidelines_and_class_descriptions(trained_home, tmp_path):
    source = items_file(tmp_path / "items", n=30)
    create(
        trained_home, "guided", source, "--size", "5", "--labels-per-item", "2", "--extra-labels", "1",
        "--guidelines", "Vandalism is damaging.", "--class-description", "True=the edit harms the article",
    )  # fmt: skip
    made = shown(trained_home, "guided")
    assert made["extra_labels"] == 1 and made["guidelines"] == "Vandalism is damaging."
    assert made["class_descriptions"] == {"True": "the edit harms the article"}
    code, out = run(
        trained_home, "campaign", "create", "bad", "--model", "damaging", "--source", str(source),
        "--id-column", "rev_id", "--class-description", "no equals sign",
    )  # fmt: skip
    assert code == 2 and "CLASS=TEXT" in out
