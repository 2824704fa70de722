"""Writing versions: work folders locked while in use and cleaned up once their process is gone
(kill -9 included) at the next Workspace.open, and a card that always names the version it was
published as, however many trainings run at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import orjson
import pytest

from assay.modelling.spec_file import load_spec
from assay.modelling.training import train
from assay.registry.files import WorkDir
from assay.registry.versions import Registry
from assay.settings import Settings
from assay.workspace import Workspace
from tests.conftest import write_binary_spec

REPOSITORY = Path(__file__).resolve().parents[2]
HOUR = 3600


def _age(path: Path, seconds: float) -> Path:
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def test_stale_work_folders_are_removed_at_open_and_live_ones_kept(tmp_path: Path) -> None:
    settings = Settings.load(home=tmp_path / "home", environ={})
    Workspace.open(settings).close()
    model = settings.artifacts_path / "damaging"
    imports = settings.artifacts_path / ".import"
    model.mkdir()
    imports.mkdir()
    (model / "1").mkdir()  # a published version is never work
    _age(model / "1", 2 * HOUR)
    # Left by an older assay or by kill -9 before the lock existed: only old ones go.
    (model / ".staging-legacy").mkdir()
    (model / ".staging-legacy" / "model.json").write_text("{}")
    _age(model / ".staging-legacy", 2 * HOUR)
    (model / ".staging-fresh").mkdir()
    (imports / "tmpold").mkdir()
    _age(imports / "tmpold", 2 * HOUR)
    # A lock nobody holds: its process is gone, however recently it wrote.
    (model / ".staging-dead").mkdir()
    (model / ".staging-dead.lock").touch()
    (imports / "orphan.lock").touch()
    # Held by a live writer (this process): kept, however old.
    held = WorkDir(model, ".staging-")
    _age(held.path, 2 * HOUR)
    held_import = WorkDir(imports, "")
    try:
        Workspace.open(settings).close()
        assert sorted(p.name for p in model.iterdir()) == sorted(
            ["1", ".staging-fresh", held.path.name, held.path.name + ".lock"]
        )
        assert sorted(p.name for p in imports.iterdir()) == sorted(
            [held_import.path.name, held_import.path.name + ".lock"]
        )
    finally:
        held.discard()
        held_import.discard()
    assert sorted(p.name for p in model.iterdir()) == [".staging-fresh", "1"]


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from assay.settings import Settings
    from assay.workspace import Workspace

    ws = Workspace.open(Settings.load(home=Path(sys.argv[1]), environ={}))
    staging = ws.registry.staging_dir("damaging")
    (staging / "model.json").write_text("{}")
    print(staging, flush=True)
    time.sleep(600)
    """
)


def test_a_writer_killed_with_sigkill_is_cleaned_up_and_a_live_one_is_not(tmp_path: Path) -> None:
    home = tmp_path / "home"
    Workspace.open(Settings.load(home=home, environ={})).close()
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(home)], stdout=subprocess.PIPE, text=True, cwd=REPOSITORY
        )
        for _ in range(2)
    ]
    try:
        killed, live = (Path(w.stdout.readline().strip()) for w in writers)  # type: ignore[union-attr]
        writers[0].send_signal(signal.SIGKILL)
        writers[0].wait(timeout=60)
        Workspace.open(Settings.load(home=home, environ={})).close()
        assert not killed.exists() and not killed.with_name(killed.name + ".lock").exists()
        assert (live / "model.json").is_file()
    finally:
        for writer in writers:
            writer.kill()
            writer.wait(timeout=60)
            writer.stdout.close()  # type: ignore[union-attr]
    Workspace.open(Settings.load(home=home, environ={})).close()
    assert list((home / "artifacts" / "damaging").iterdir()) == []


TRAINER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from assay.cli import main
    from assay.modelling import publication

    # Hold the training inside the writing of its version, where a kill hurts most: the store's
    # transaction is open and the staging folder full.
    def card(facts, *rest):
        Path(sys.argv[3]).touch()
        time.sleep(600)

    publication.model_card = card
    main(["--home", sys.argv[1], "train", sys.argv[2]])
    """
)


def test_kill_9_of_assay_train_leaves_nothing_after_the_next_open(tmp_path: Path) -> None:
    spec = write_binary_spec(tmp_path / "data", n_train=300, n_test=100)
    spec.write_text(
        spec.read_text().replace('["logistic_regression", "lightgbm"]', '["logistic_regression"]')
    )
    home, marker = tmp_path / "home", tmp_path / "writing"
    trainer = subprocess.Popen(
        [sys.executable, "-c", TRAINER, str(home), str(spec), str(marker)],
        cwd=REPOSITORY,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert trainer.poll() is None and time.monotonic() < deadline, "training ended before writing"
            time.sleep(0.05)
        assert [p.name[:9] for p in (home / "artifacts" / "damaging").iterdir() if p.is_dir()] == [
            ".staging-"
        ]
    finally:
        trainer.send_signal(signal.SIGKILL)
        trainer.wait(timeout=60)
    ws = Workspace.open(Settings.load(home=home, environ={}))
    try:
        assert list((home / "artifacts" / "damaging").iterdir()) == []
        assert ws.registry.models() == []
        # The store is not left locked: the next training publishes version 1.
        assert train(load_spec(spec), ws.registry).record.version == 1
    finally:
        ws.close()


def test_concurrent_trainings_each_card_names_the_version_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two trainings that look up the next version number at the same moment (as two processes
    can) publish two versions, and each card names the version it was published as."""
    spec_path = write_binary_spec(tmp_path / "data", n_train=300, n_test=100)
    spec_path.write_text(
        spec_path.read_text().replace('["logistic_regression", "lightgbm"]', '["logistic_regression"]')
    )
    settings = Settings.load(home=tmp_path / "home", environ={})
    workspaces = [Workspace.open(settings) for _ in range(2)]
    together = threading.Barrier(2, timeout=120)
    met: set[int] = set()
    next_version = Registry.next_version

    def in_step(self: Registry, name: str) -> int:
        # Each training's first look-up waits for the other's: both see the same number.
        if threading.get_ident() not in met:
            met.add(threading.get_ident())
            together.wait()
        return next_version(self, name)

    monkeypatch.setattr(Registry, "next_version", in_step)
    records, errors = [], []

    def run(ws: Workspace) -> None:
        try:
            records.append(train(load_spec(spec_path), ws.registry).record)
        except BaseException as exc:  # reported below, with the thread's error
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(ws,)) for ws in workspaces]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    for ws in workspaces:
        ws.close()
    assert not errors, errors
    assert sorted(r.version for r in records) == [1, 2]
    for record in records:
        card = orjson.loads((record.directory / "card.json").read_bytes())
        assert card["version"] == record.version
        assert f"<small>version {record.version}</small>" in (record.directory / "card.html").read_text()
