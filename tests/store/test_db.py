"""The store: migrations build exactly the declared tables, on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from assay.store import db


def _check_store(url: str) -> None:
    engine = db.connect(url)
    try:
        db.upgrade(engine)  # a second upgrade is a no-op
        with engine.connect() as conn:
            context = MigrationContext.configure(conn)
            # Every table and column the code declares exists as the migrations made it.
            assert compare_metadata(context, db.metadata) == []
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


@pytest.mark.postgres
def test_postgres_store_matches_the_declared_schema(postgres_url: str) -> None:
    _check_store(postgres_url)
