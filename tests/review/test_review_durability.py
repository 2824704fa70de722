"""Labels survive crashes, and concurrent reviewers never double up — on SQLite and PostgreSQL.

* Several reviewer processes claim and label against the same store at once;
  afterwards every item has exactly the labels it asked for, from different
  reviewers, and nothing failed.
* The same with worksets that expire at once: claims are taken back while
  their reviewers still work on them, and no counter drifts.
* Reviewers endorse judgments of one item at the same moment; exactly one is
  preferred afterwards, the one the rule names, and no endorsement failed.
* A real ``assay serve`` is killed with SIGKILL while reviewer processes are
  posting labels, then restarted; every label a reviewer was told was saved is
  in the store (and a judgment acknowledged before the kill), nothing is
  duplicated, and the campaign can be finished.

PostgreSQL runs when ASSAY_TEST_POSTGRES_URL is set (``.ci/run`` starts one).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from assay.errors import Conflict
from assay.modelling.spec_file import load_spec
from assay.modelling.training import train
from assay.review import campaigns, judgments, labelling, resolution, worksets
from assay.review.accounts import User, user_by_name
from assay.settings import Settings
from assay.store import tables
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
    """A store with a trained `damaging`, reviewers r0..r4 and campaign c1 (40 items, 2 labels each).

    c1 prefers its most endorsed judgments, so endorsing moves the preferred mark.
    """
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
        campaign(
            ws,
            items_file(tmp_path / "items", n=150),
            size=40,
            labels_per_item=LABELS_PER_ITEM,
            judgment_rule="most_endorsed",
        )
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
                sa.select(tables.campaign_items.c.item_id, tables.users.c.username, tables.labels.c.label)
                .join(tables.labels, tables.labels.c.campaign_item_id == tables.campaign_items.c.id)
                .join(tables.users, tables.users.c.id == tables.labels.c.user_id)
            ).all()
            claimed = conn.execute(
                sa.select(tables.campaign_items.c.item_id, tables.campaign_items.c.claimed)
            ).all()
            holding = Counter(
                conn.execute(
                    sa.select(tables.campaign_items.c.item_id)
                    .join(
                        tables.assignments,
                        tables.assignments.c.campaign_item_id == tables.campaign_items.c.id,
                    )
                    .where(tables.assignments.c.state.in_(["open", "done"]))
                ).scalars()
            )
    finally:
        ws.close()
    pairs = Counter((r.item_id, r.username) for r in rows)
    assert max(pairs.values(), default=1) == 1, "a reviewer labelled an item twice"
    per_item = Counter(r.item_id for r in rows)
    assert max(per_item.values(), default=0) <= LABELS_PER_ITEM, "an item got more labels than asked"
    assert all(c <= LABELS_PER_ITEM for _, c in claimed)
    # The counter the claims move agrees with the claims themselves (released ones give theirs back).
    assert {i: c for i, c in claimed if c} == dict(holding)
    stored = {(r.item_id, r.username): r.label for r in rows}
    for key, label in (acked or {}).items():
        assert stored.get(key) == label, f"acknowledged label {key} -> {label} is not in the store"
    return per_item


# --- several reviewer processes straight on the store ------------------------------------------


def _claim_and_label(
    home: str, env: dict[str, str], username: str, out: str, ttl_s: int, start: threading.Barrier
) -> None:
    """A reviewer process: take worksets and label until the pool is empty.

    With ``ttl_s=0`` every workset has expired when it is taken, so the next
    taker (anyone) takes its claims back: a label for an item taken back is
    refused as ``not_assigned``, and the process goes on.
    """
    ws = Workspace.open(Settings.load(home=home, environ=env))
    done = 0
    try:
        c = campaigns.get_campaign(ws.engine, "c1")
        user = user_by_name(ws.engine, username)
        start.wait(timeout=120)  # all start together, however long each took to import
        while (w := worksets.take_workset(ws.engine, c, user, size=3, ttl_s=ttl_s)) is not None:
            for item in w.items:
                if item.state == "open":
                    try:
                        labelling.submit_label(
                            ws.engine, c, user, item.item_id, _label_for(item.item_id), ttl_s=ttl_s
                        )
                    except Conflict as exc:
                        if ttl_s or exc.code != "not_assigned":
                            raise
                        continue
                    done += 1
        Path(out).write_text(str(done))
    finally:
        ws.close()


def _reviewer_processes(store: Store, tmp_path: Path, ttl_s: int) -> dict[str, int]:
    """Run a ``_claim_and_label`` process per reviewer to the end; returns labels per reviewer."""
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(len(REVIEWERS))
    procs = [
        ctx.Process(
            target=_claim_and_label,
            args=(str(store.home), store.env, name, str(tmp_path / f"{name}.out"), ttl_s, start),
        )
        for name in REVIEWERS
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return {name: int((tmp_path / f"{name}.out").read_text()) for name in REVIEWERS}


def test_concurrent_reviewer_processes_share_the_pool_exactly(store, tmp_path):
    per_reviewer = _reviewer_processes(store, tmp_path, ttl_s=600)
    per_item = _check_store(store)
    assert len(per_item) == 40 and set(per_item.values()) == {LABELS_PER_ITEM}
    assert sum(per_reviewer.values()) == 40 * LABELS_PER_ITEM
    assert sum(1 for n in per_reviewer.values() if n > 0) >= 2  # they really shared the work


def test_worksets_expiring_under_contention_never_double_up(store, tmp_path):
    # Every claim is taken back by the next taker while its reviewer works on it: the releases race
    # with claims and labels in other processes, and with each other.
    per_reviewer = _reviewer_processes(store, tmp_path, ttl_s=0)
    per_item = _check_store(store)
    assert sum(per_item.values()) == sum(per_reviewer.values()) > 0
    ws = Workspace.open(store.settings())
    try:
        with ws.engine.connect() as conn:
            states = Counter(conn.execute(sa.select(tables.assignments.c.state)).scalars())
    finally:
        ws.close()
    assert states["expired"] > 0 and states["open"] == 0
    assert states["done"] == sum(per_reviewer.values())


# --- concurrent endorsements ---------------------------------------------------------------------


def _endorse_at(
    start: threading.Barrier, engine: sa.Engine, judgment_id: int, user: User, stance: str
) -> None:
    start.wait(timeout=30)  # every thread endorses at the same moment
    judgments.endorse(engine, judgment_id, user, stance)


def test_concurrent_endorsements_leave_exactly_one_preferred_judgment(store):
    ws = Workspace.open(store.settings())
    try:
        c = campaigns.get_campaign(ws.engine, "c1")
        people = {name: user_by_name(ws.engine, name) for name in REVIEWERS}
        # r0, r1 and r2 judge the item; everyone endorses (or disputes) someone else's judgment at once.
        plan = [("r3", 0, "endorse"), ("r4", 1, "endorse"), ("r0", 2, "endorse"), ("r1", 2, "endorse")]
        plan.append(("r2", 0, "dispute"))  # net: j0 0, j1 1, j2 2
        for round_ in range(6):
            item_id = f"race-{round_}"
            made = [
                judgments.record_judgment(
                    ws.engine,
                    model="damaging",
                    item_id=item_id,
                    label=label,
                    classes=c.classes,
                    author=people[author],
                    campaign_id=c.id,
                )
                for author, label in (("r0", "True"), ("r1", "False"), ("r2", "True"))
            ]
            start = threading.Barrier(len(plan))
            with ThreadPoolExecutor(len(plan)) as pool:
                futures = [
                    pool.submit(_endorse_at, start, ws.engine, made[index].id, people[name], stance)
                    for name, index, stance in plan
                ]
                for future in futures:
                    future.result()  # an endorsement that failed fails the test with its error
            found = judgments.judgments_for(ws.engine, "damaging", item_id)
            assert [(j.id, j.preferred_by) for j in found if j.preferred] == [
                (made[2].id, judgments.RULE_MARK)
            ], round_
            assert sum(j.endorse_count + j.dispute_count for j in found) == len(plan)
    finally:
        ws.close()


def _label_at(start: threading.Barrier, engine, c, user, item_id: str, label: str) -> None:  # type: ignore[no-untyped-def]
    start.wait()
    labelling.submit_label(engine, c, user, item_id, label, ttl_s=600)


def test_two_labels_at_once_that_tie_always_requeue_the_item(store, tmp_path):
    """Two reviewers label the same items at the same moment, disagreeing: every tie is noticed."""
    ws = Workspace.open(store.settings())
    try:
        c = campaign(
            ws, items_file(tmp_path / "ties", n=60), name="ties", size=12, labels_per_item=2, extra_labels=1
        )
        r0, r1 = (user_by_name(ws.engine, name) for name in ("r0", "r1"))
        held = [worksets.take_workset(ws.engine, c, u, size=12, ttl_s=600) for u in (r0, r1)]
        items = [i.item_id for i in held[0].items]
        assert items == [i.item_id for i in held[1].items]
        for item_id in items:
            start = threading.Barrier(2)
            with ThreadPoolExecutor(2) as pool:
                futures = [
                    pool.submit(_label_at, start, ws.engine, c, r0, item_id, "True"),
                    pool.submit(_label_at, start, ws.engine, c, r1, item_id, "False"),
                ]
                for future in futures:
                    future.result()
        with ws.engine.connect() as conn:
            wanted = conn.execute(
                sa.select(tables.campaign_items.c.wanted).where(tables.campaign_items.c.campaign_id == c.id)
            ).scalars()
            assert list(wanted) == [3] * len(items)
        frame = resolution.resolved_frame(ws.engine, c)
        assert set(frame["status"]) == {"tie"} and all("requeued for label 3" in r for r in frame["reason"])
    finally:
        ws.close()


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


def _judge_over_http(url: str, username: str) -> dict[str, object]:
    """Record a judgment through the JSON API with a session; returns it as the server acknowledged it."""
    with httpx.Client(base_url=url, timeout=10) as client:
        r = client.post("/v1/session", json={"username": username, "password": PASSWORD})
        r.raise_for_status()
        body = {
            "model": "damaging",
            "item_id": "crash-1",
            "label": "False",
            "rationale": "said before the kill",
        }
        r = client.post("/v1/judgments", json=body, headers={"x-csrf-token": r.json()["csrf_token"]})
        assert r.status_code == 201, r.text
        return r.json()


def _check_judgment(store: Store, judged: dict[str, object]) -> None:
    ws = Workspace.open(store.settings())
    try:
        with ws.engine.connect() as conn:
            row = conn.execute(sa.select(tables.judgments).where(tables.judgments.c.id == judged["id"])).one()
    finally:
        ws.close()
    assert (row.item_id, row.label, row.rationale) == ("crash-1", "False", "said before the kill")


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
        judged = _judge_over_http(server.url, "r0")
        server.kill()  # SIGKILL with labels in flight
        before_restart = _acked(tmp_path)
        _check_store(store, before_restart)  # everything acknowledged before the crash is there
        _check_judgment(store, judged)
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
