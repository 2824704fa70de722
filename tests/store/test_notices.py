"""Notices reach every watcher of a store: polled on SQLite, NOTIFYed on PostgreSQL, resynced
after the store's connection is lost."""

from __future__ import annotations

import queue
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from assay.store import db, notices
from assay.store.notices import Notice, NoticeWatcher


def _collect(watcher: NoticeWatcher, topic: str) -> queue.Queue[tuple[list[Notice], bool]]:
    got: queue.Queue[tuple[list[Notice], bool]] = queue.Queue()
    watcher.subscribe(topic, lambda batch, *, resync: got.put((batch, resync)))
    return got


def _publish(engine: Engine, topic: str, payload: dict) -> float:
    with engine.begin() as conn:
        notices.publish(conn, topic, payload)
    return time.monotonic()


def test_sqlite_watchers_poll_for_new_notices(tmp_path: Path) -> None:
    engine = db.connect(f"sqlite:///{tmp_path / 'a.db'}")
    _publish(engine, notices.FEATURES, {"model": "m", "ids": ["before"]})  # before start: not delivered
    watchers = [NoticeWatcher(engine, poll_s=0.05) for _ in range(2)]
    inboxes = [_collect(w, notices.FEATURES) for w in watchers]
    registry_inbox = _collect(watchers[0], notices.REGISTRY)
    try:
        for w in watchers:
            w.start()
        _publish(engine, notices.FEATURES, {"model": "m", "ids": ["1", "2"]})
        _publish(engine, notices.REGISTRY, {"model": "m", "alias": "production", "version": 2})
        for inbox in inboxes:
            batch, resync = inbox.get(timeout=5)
            assert not resync and [n.payload for n in batch] == [{"model": "m", "ids": ["1", "2"]}]
        batch, _ = registry_inbox.get(timeout=5)
        assert batch[0].payload["alias"] == "production"
        assert all(inbox.empty() for inbox in inboxes)
    finally:
        for w in watchers:
            w.stop()
        engine.dispose()


def test_a_failing_handler_does_not_stop_the_others(tmp_path: Path) -> None:
    engine = db.connect(f"sqlite:///{tmp_path / 'a.db'}")
    watcher = NoticeWatcher(engine, poll_s=0.05)

    def broken(batch: list[Notice], *, resync: bool) -> None:
        raise RuntimeError("boom")

    watcher.subscribe(notices.FEATURES, broken)
    inbox = _collect(watcher, notices.FEATURES)
    watcher.start()
    try:
        for i in range(2):
            _publish(engine, notices.FEATURES, {"model": "m", "ids": [str(i)]})
            assert inbox.get(timeout=5)[0][0].payload["ids"] == [str(i)]
    finally:
        watcher.stop()
        engine.dispose()


@pytest.mark.postgres
def test_postgres_notifies_watchers_at_once(postgres_url: str) -> None:
    engine = db.connect(postgres_url)
    # A poll far longer than the test: only NOTIFY can deliver in time.
    watchers = [NoticeWatcher(engine, poll_s=60) for _ in range(2)]
    inboxes = [_collect(w, notices.REGISTRY) for w in watchers]
    try:
        for w in watchers:
            w.start()
        time.sleep(0.5)  # the LISTEN connections are up
        sent = _publish(engine, notices.REGISTRY, {"model": "m", "alias": "production", "version": 3})
        for inbox in inboxes:
            batch, resync = inbox.get(timeout=5)
            assert not resync and batch[0].payload["version"] == 3
        assert time.monotonic() - sent < 5
    finally:
        for w in watchers:
            w.stop()
        engine.dispose()


@pytest.mark.postgres
def test_a_lost_listener_reconnects_and_resyncs(postgres_url: str) -> None:
    engine = db.connect(postgres_url)
    watcher = NoticeWatcher(engine, poll_s=0.1)
    inbox = _collect(watcher, notices.REGISTRY)
    try:
        watcher.start()
        time.sleep(0.5)
        with engine.begin() as conn:  # what a PostgreSQL restart or a network cut does to the listener
            killed = conn.execute(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
                )
            ).scalar()
        assert killed == 1
        batch, resync = inbox.get(timeout=10)
        assert resync and batch == []  # start over from the store: notices may have been missed
        time.sleep(0.5)
        _publish(engine, notices.REGISTRY, {"model": "m", "alias": "production", "version": 4})
        batch, resync = inbox.get(timeout=5)
        assert not resync and batch[0].payload["version"] == 4
    finally:
        watcher.stop()
        engine.dispose()
