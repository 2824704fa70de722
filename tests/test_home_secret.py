import stat
from pathlib import Path

import pytest

from assay.errors import SettingsError
from assay.home_secret import home_secret


def test_the_secret_is_made_once_owner_only_and_read_back(tmp_path: Path) -> None:
    first = home_secret(tmp_path / "home", "s", None, "session_secret")
    assert len(first) == 64 and home_secret(tmp_path / "home", "s", None, "session_secret") == first
    assert stat.S_IMODE((tmp_path / "home" / "s").stat().st_mode) == 0o600
    assert home_secret(tmp_path / "home", "other", None, "alert_secret") != first


def test_a_configured_secret_wins_and_writes_nothing(tmp_path: Path) -> None:
    assert home_secret(tmp_path, "s", "configured", "alert_secret") == b"configured"
    assert not (tmp_path / "s").exists()


def test_an_emptied_file_is_refused_naming_the_setting(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("\n")
    with pytest.raises(SettingsError) as caught:
        home_secret(tmp_path, "s", None, "session_secret")
    assert caught.value.field == "session_secret" and "delete it" in caught.value.message
