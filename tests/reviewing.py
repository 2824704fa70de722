"""Helpers shared by the review tests: a scorer over a workspace, item files, users, campaigns."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from assay.review import accounts, labelling, worksets
from assay.review.accounts import User
from assay.review.campaigns import Campaign, CampaignOptions, create_campaign
from assay.serving.cache import MemoryCache
from assay.serving.features import FeatureTable
from assay.serving.scoring import Scorer
from assay.store import tables
from assay.workspace import Workspace
from tests.conftest import edits_frame

PASSWORD = "amber-quarry-tulip-42"  # long and on no list of common passwords


def scorer_for(ws: Workspace) -> Scorer:
    return Scorer(ws.registry, FeatureTable(ws.engine), MemoryCache(10_000))


def items_file(folder: Path, n: int = 300, seed: int = 7, name: str = "items.csv") -> Path:
    """A CSV of edits to review: ``rev_id`` plus the damaging model's feature columns."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    frame = edits_frame(n, seed=seed).drop(columns=["reverted"])
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


def users(ws: Workspace, *names: str, role: str = "reviewer") -> list[User]:
    return [accounts.create_user(ws.engine, name, PASSWORD, role) for name in names]


def campaign(ws: Workspace, source: Path, name: str = "c1", **options: Any) -> Campaign:
    options.setdefault("id_column", "rev_id")
    opts = CampaignOptions(name=name, model="damaging", source=str(source), **options)
    return create_campaign(ws, scorer_for(ws), opts, created_by="admin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``assay serve`` on a free port in its own process: the real server, killable at will."""

    def __init__(
        self, home: Path, log: Path, env: dict[str, str] | None = None, args: Sequence[str] = ()
    ) -> None:
        self.home, self.log, self.args = home, log, list(args)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60) -> Server:
        command = [
            sys.executable,
            "-c",
            "from assay.cli import main; main()",
            "--home",
            str(self.home),
            "serve",
        ]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [*command, "--port", str(self.port), *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server did not get ready: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler, no flush — what a crash or an OOM kill does."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


TTL = 3600  # seconds a workset is held in the review tests


def label_all(ws, c, user, choose=lambda item: item.prediction):
    """Take worksets until none is left, labelling every item with ``choose(item)``; returns item -> label."""
    given = {}
    while (w := worksets.take_workset(ws.engine, c, user, size=7, ttl_s=TTL)) is not None:
        for item in w.items:
            label = choose(item)
            assert labelling.submit_label(ws.engine, c, user, item.item_id, label, ttl_s=TTL) == "saved"
            given[item.item_id] = label
    return given


def campaign_rows(ws, c):
    """The campaign's item rows, in the order reviewers are given them."""
    with ws.engine.connect() as conn:
        return conn.execute(
            sa.select(tables.campaign_items)
            .where(tables.campaign_items.c.campaign_id == c.id)
            .order_by(tables.campaign_items.c.position)
        ).all()
