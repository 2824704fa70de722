"""Labels survive crashes, and concurrent reviewers never double up — on SQLite and PostgreSQL.

* Several reviewer processes claim and label against the same store at once;
  afterwards every item has exactly the labels it asked for, from different
  reviewers, and nothing failed.
* A real ``assay serve`` is killed with SIGKILL while reviewer processes are
  posting labels, then restarted; every label a reviewer was told was saved is
  in the store, nothing is duplicated, and the campaign can be finished.

PostgreSQL runs when ASSAY_TEST_POSTGRES_URL is set (``.ci/run`` starts one).
"""

from __future__ import annotations

import multiprocessing
import os
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from assay import db, reviews
from assay.accounts import user_by_name
from assay.settings import Settings
from assay.spec import load_spec
from assay.training import train
from assay.workspace import Workspace
from tests.conftest import write_binary_spec
from tests.reviewing import PASSWORD, Server, campaign, items_file, users

REVIEWERS = [f"r{i}" for i in range(5)]
LABELS_PER_ITEM = 2


@dataclass
class Store:
    home: Path
    env: dict[str, str]  # what a process needs to reach the same store

    def settings(self) -> Settings:
        return Settings.load(home=self.home, environ=self.env)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A store with a trained `damaging`, reviewers r0..r4 and campaign c1 (40 items, 2 labels each)."""
    if request.param == "sqlite":
        result = Store(request.getfixturevalue("trained_home"), {})
    else:
        url = request.getfixturevalue("postgres_url")
        result = Store(tmp_path / "pg-home", {"ASSAY_DATABASE_URL": url})
        ws = Workspace.open(result.settings())
        try:
            train(load_spec(write_binary_spec(tmp_path / "data")), ws.registry)
        finally:
            ws.close()
    ws = Workspace.open(result.settings())
    try:
        users(ws, *REVIEWERS)
        campaign(ws, items_file(tmp_path / "items", n=150), size=40, labels_per_item=LABELS_PER_ITEM)
    finally:
        ws.close()
    yield result


def _label_for(item_id: str) -> str:
    # Deterministic, so a resent label after a crash is the same label.
    return "True" if zlib.crc32(item_id.encode()) % 3 == 0 else "False"


def _check_store(store: Store, acked: dict[tuple[str, str], str] | None = None) -> Counter[str]:
    """The store's invariants; returns labels per item."""
    ws = Workspace.open(store.settings())
    try:
        with ws.engine.connect() as conn:
            rows = conn.execute(
                sa.select(db.campaign_items.c.item_id, db.users.c.username, db.labels.c.label)
                .join(db.labels, db.labels.c.campaign_item_id == db.campaign_items.c.id)
                .join(db.users, db.users.c.id == db.labels.c.user_id)
            ).all()
            claimed = conn.execute(sa.select(db.campaign_items.c.item_id, db.campaign_items.c.claimed)).all()
    finally:
        ws.close()
    pairs = Counter((r.item_id, r.username) for r in rows)
    assert max(pairs.values(), default=1) == 1, "a reviewer labelled an item twice"
    per_item = Counter(r.item_id for r in rows)
    assert max(per_item.values(), default=0) <= LABELS_PER_ITEM, "an item got more labels than asked"
    assert all(c <= LABELS_PER_ITEM for _, c in claimed)
    stored = {(r.item_id, r.username): r.label for r in rows}
    for key, label in (acked or {}).items():
        assert stored.get(key) == label, f"acknowledged label {key} -> {label} is not in the store"
    return per_item


# --- several reviewer processes straight on the store ------------------------------------------


def _claim_and_label(home: str, env: dict[str, str], username: str, out: str) -> None:
    """A reviewer process: take worksets and label until the pool is empty."""
    ws = Workspace.open(Settings.load(home=home, environ=env))
    done = 0
    try:
        c = reviews.get_campaign(ws.engine, "c1")
        user = user_by_name(ws.engine, username)
        while (w := reviews.take_workset(ws.engine, c, user, size=3, ttl_s=600)) is not None:
            for item in w.items:
                if item.state == "open":
                    reviews.submit_label(
                        ws.engine, c, user, item.item_id, _label_for(item.item_id), ttl_s=600
                    )
                    done += 1
        Path(out).write_text(str(done))
    finally:
        ws.close()


def test_concurrent_reviewer_processes_share_the_pool_exactly(store, tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(
            target=_claim_and_label, args=(str(store.home), store.env, name, str(tmp_path / f"{name}.out"))
        )
        for name in REVIEWERS
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    per_reviewer = {name: int((tmp_path / f"{name}.out").read_text()) for name in REVIEWERS}
    per_item = _check_store(store)
    assert len(per_item) == 40 and set(per_item.values()) == {LABELS_PER_ITEM}
    assert sum(per_reviewer.values()) == 40 * LABELS_PER_ITEM
    assert sum(1 for n in per_reviewer.values() if n > 0) >= 2  # they really shared the work


# --- a real server, killed -9 mid-campaign -------------------------------------------------------


def _reviewer_over_http(url: str, username: str, acks: str, stop: str) -> None:
    """Label through the JSON API; write each acknowledged label to ``acks`` (after the answer)."""
    client = httpx.Client(base_url=url, timeout=10)
    headers: dict[str, str] = {}
    with open(acks, "a", buffering=1) as log:
        while not os.path.exists(stop):
            try:
                if not headers:
                    r = client.post("/v1/session", json={"username": username, "password": PASSWORD})
                    r.raise_for_status()
                    headers = {"x-csrf-token": r.json()["csrf_token"]}
                r = client.post("/v1/campaigns/c1/workset", headers=headers)
                r.raise_for_status()
                workset = r.json()["workset"]
                if workset is None:
                    return
                for item in workset["items"]:
                    if item["state"] != "open":
                        continue
                    label = _label_for(item["item_id"])
                    r = client.post(
                        "/v1/campaigns/c1/labels",
                        headers=headers,
                        json={"item_id": item["item_id"], "label": label},
                    )
                    if r.status_code in (200, 201):
                        log.write(f"{item['item_id']}\t{label}\n")
                        os.fsync(log.fileno())
                    time.sleep(0.01)  # a person is slower; this keeps requests in flight at the kill
            except (httpx.TransportError, httpx.HTTPStatusError):
                time.sleep(0.2)  # the server is down (or restarting): try again


def _acked(tmp_path: Path) -> dict[tuple[str, str], str]:
    out = {}
    for name in REVIEWERS:
        path = tmp_path / f"{name}.acks"
        if path.exists():
            for line in path.read_text().splitlines():
                item_id, label = line.split("\t")
                out[(item_id, name)] = label
    return out


def test_kill_9_mid_campaign_loses_nothing_acknowledged(store, tmp_path):
    server = Server(store.home, tmp_path / "server.log", env={**store.env, "ASSAY_WORKSET_SIZE": "4"}).start()
    stop = tmp_path / "stop"
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(
            target=_reviewer_over_http, args=(server.url, name, str(tmp_path / f"{name}.acks"), str(stop))
        )
        for name in REVIEWERS
    ]
    try:
        for p in procs:
            p.start()
        deadline = time.monotonic() + 120
        while len(_acked(tmp_path)) < 25 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_acked(tmp_path)) >= 25, "the reviewers did not get going"
        server.kill()  # SIGKILL with labels in flight
        before_restart = _acked(tmp_path)
        _check_store(store, before_restart)  # everything acknowledged before the crash is there
        server.start()
        for p in procs:
            p.join(timeout=300)
        assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    finally:
        stop.touch()
        for p in procs:
            if p.is_alive():
                p.kill()
        server.stop()
    acked = _acked(tmp_path)
    per_item = _check_store(store, acked)
    assert len(per_item) == 40 and set(per_item.values()) == {LABELS_PER_ITEM}, "the campaign did not finish"
    # A label committed just before the kill may never have been acknowledged; none may be missing.
    assert 40 * LABELS_PER_ITEM - len(REVIEWERS) <= len(acked) <= 40 * LABELS_PER_ITEM
