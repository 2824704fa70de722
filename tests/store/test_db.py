"""The store: migrations build exactly the declared tables, on SQLite and on PostgreSQL; a shared
(PostgreSQL) store is migrated by `assay db upgrade`, never on connect."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner

from assay.cli import main
from assay.errors import StoreOutOfDate
from assay.store import db, tables


def _check_store(url: str) -> None:
    engine = db.connect(url)
    try:
        db.upgrade(engine)  # a second upgrade is a no-op
        with engine.connect() as conn:
            context = MigrationContext.configure(conn)
            # Every table and column the code declares exists as the migrations made it.
            assert compare_metadata(context, tables.metadata) == []
            assert context.get_current_revision() is not None
    finally:
        engine.dispose()


def test_sqlite_store_matches_the_declared_schema(tmp_path: Path) -> None:
    _check_store(f"sqlite:///{tmp_path / 'nested' / 'assay.db'}")
    assert (tmp_path / "nested" / "assay.db").is_file()


def test_sqlite_store_is_wal_and_durable(tmp_path: Path) -> None:
    engine = db.connect(f"sqlite:///{tmp_path / 'a.db'}")
    with engine.connect() as conn:
        assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(sa.text("PRAGMA synchronous")).scalar() == 2  # FULL
    engine.dispose()


@pytest.mark.parametrize("before", ["0", "1", "FAST"])
def test_secure_delete_holds_for_its_block_and_is_put_back(tmp_path: Path, before: str) -> None:
    engine = db.connect(f"sqlite:///{tmp_path / 'assay.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql(f"PRAGMA secure_delete={before}")
        setting = conn.exec_driver_sql("PRAGMA secure_delete").scalar()
        for mode, reads in (("on", 1), ("fast", 2), ("off", 0)):
            with db.secure_delete(conn, mode):
                assert conn.exec_driver_sql("PRAGMA secure_delete").scalar() == reads
            assert conn.exec_driver_sql("PRAGMA secure_delete").scalar() == setting
        with pytest.raises(RuntimeError), db.secure_delete(conn, "fast"):
            raise RuntimeError("a failed deletion")
        assert conn.exec_driver_sql("PRAGMA secure_delete").scalar() == setting
    engine.dispose()


@pytest.mark.postgres
def test_secure_delete_leaves_postgres_alone(postgres_url: str) -> None:
    engine = db.connect(postgres_url)
    with engine.begin() as conn, db.secure_delete(conn, "on"):  # no PRAGMA sent: it would fail
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1
    engine.dispose()


@pytest.mark.postgres
def test_postgres_store_matches_the_declared_schema(postgres_url: str) -> None:
    _check_store(postgres_url)


def test_upgrade_gives_back_the_slots_unsure_labels_held(tmp_path: Path) -> None:
    """A campaign stalled by "unsure" labels (they used to hold a slot) has those items free after 0005."""
    from alembic import command

    engine = db.create_engine(f"sqlite:///{tmp_path / 'old.db'}")  # not connect: it upgrades
    cfg = db._alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004")
    now = "2026-01-01 00:00:00"
    with engine.begin() as conn:
        run = conn.exec_driver_sql
        run(
            "INSERT INTO campaigns (id, name, description, model, model_version, classes, labels_per_item, "
            "reviewers, blind, selection, auto_rules, judgment_rule, status, item_count, created_by, created_at) "
            f"VALUES (1, 'c', '', 'm', 1, '[\"a\", \"b\"]', 2, '[]', 0, '{{}}', '[]', 'admin', 'open', 1, 'x', '{now}')"
        )
        run(
            "INSERT INTO campaign_items (id, campaign_id, position, item_id, features, claimed, available) "
            "VALUES (1, 1, 0, 'i1', '{}', 2, 0)"
        )
        for uid, name in ((1, "u1"), (2, "u2")):
            run(
                "INSERT INTO users (id, username, pseudonym, password_hash, role, created_at) "
                f"VALUES ({uid}, '{name}', 'p{uid}', 'h', 'reviewer', '{now}')"
            )
        run(
            f"INSERT INTO worksets (id, campaign_id, user_id, created_at, expires_at) VALUES (1, 1, 1, '{now}', '{now}')"
        )
        for uid, slot, label in ((1, 1, "a"), (2, 2, "unsure")):
            run(
                "INSERT INTO assignments (workset_id, campaign_id, campaign_item_id, user_id, slot, state, claimed_at) "
                f"VALUES (1, 1, 1, {uid}, {slot}, 'done', '{now}')"
            )
            run(
                "INSERT INTO labels (campaign_id, campaign_item_id, user_id, label, comment, model_version, "
                f"created_at, updated_at) VALUES (1, 1, {uid}, '{label}', '', 1, '{now}', '{now}')"
            )
    db.upgrade(engine)
    with engine.connect() as conn:
        item = conn.execute(sa.select(tables.campaign_items)).one()
        states = dict(conn.execute(sa.select(tables.assignments.c.user_id, tables.assignments.c.state)).all())
    engine.dispose()
    assert (item.wanted, item.claimed, item.available) == (2, 1, True)
    assert states == {1: "done", 2: "unsure"}


def test_the_head_read_from_the_files_is_alembics(tmp_path: Path) -> None:
    from alembic.script import ScriptDirectory

    assert (
        db.head_revision() == ScriptDirectory.from_config(db._alembic_config("sqlite://")).get_current_head()
    )


def test_a_store_behind_the_head_is_migrated(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    db.connect(url).dispose()
    engine = db.create_engine(url)
    try:
        with engine.begin() as conn:  # as a store made by an assay three migrations older says
            conn.execute(sa.text("UPDATE alembic_version SET version_num = '0007'"))
            conn.execute(sa.text("DROP TABLE notices"))
            conn.execute(sa.text("DROP TABLE label_exports"))
            conn.execute(sa.text("ALTER TABLE forgotten_ids DROP COLUMN scheme"))
        assert db.current_revision(engine) == "0007"
        assert db.upgrade(engine) is True
        assert db.current_revision(engine) == db.head_revision()
        assert {"notices", "label_exports"} <= set(sa.inspect(engine).get_table_names())
        assert "scheme" in {c["name"] for c in sa.inspect(engine).get_columns("forgotten_ids")}
    finally:
        engine.dispose()


def test_a_new_sqlite_home_upgrades_itself(tmp_path: Path) -> None:
    # The embedded store belongs to one host: the first command on a fresh home needs no step.
    engine = db.connect(f"sqlite:///{tmp_path / 'fresh.db'}")
    try:
        assert db.current_revision(engine) == db.head_revision()
        assert db.upgrade(engine) is False  # nothing left to do
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_postgres_store_is_not_migrated_on_connect(empty_postgres_url: str) -> None:
    with pytest.raises(StoreOutOfDate) as caught:
        db.connect(empty_postgres_url)
    message = caught.value.message
    assert "assay db upgrade" in message and "none (empty)" in message and "\n" not in message
    assert "assay:assay@" not in message  # the password stays out of the message
    engine = db.create_engine(empty_postgres_url)
    try:
        assert db.current_revision(engine) is None  # refusing wrote nothing
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_hosts_upgrading_at_once_take_turns(empty_postgres_url: str) -> None:
    engines = [db.create_engine(empty_postgres_url) for _ in range(4)]
    try:
        with ThreadPoolExecutor(4) as pool:
            changed = list(pool.map(db.upgrade, engines))
        assert sorted(changed) == [False, False, False, True]  # one migrated, the others found it done
        db.connect(empty_postgres_url).dispose()
    finally:
        for engine in engines:
            engine.dispose()


@pytest.mark.postgres
def test_assay_db_upgrade_and_status(empty_postgres_url: str, tmp_path: Path) -> None:
    env = {"ASSAY_DATABASE_URL": empty_postgres_url}
    runner = CliRunner()
    home = ["--home", str(tmp_path / "home")]
    result = runner.invoke(main, [*home, "db", "status"], env=env)
    assert result.exit_code == 1 and "store: none (empty)" in result.output
    result = runner.invoke(main, [*home, "models"], env=env)
    assert result.exit_code == 1 and "run `assay db upgrade`" in result.output
    result = runner.invoke(main, [*home, "db", "upgrade"], env=env)
    assert result.exit_code == 0 and f"to {db.head_revision()}" in result.output
    result = runner.invoke(main, [*home, "db", "upgrade"], env=env)
    assert result.exit_code == 0 and "up to date" in result.output
    result = runner.invoke(main, [*home, "db", "status"], env=env)
    assert result.exit_code == 0
