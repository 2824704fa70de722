"""The exclusion list: vectorized keyed hashes, entries of the scheme before still matched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
from alembic import command

from assay.store import db, tables
from assay.unlearning import exclusions
from assay.unlearning.exclusions import ExclusionList


def _store(tmp_path: Path) -> sa.engine.Engine:
    return db.connect(f"sqlite:///{tmp_path / 'assay.db'}")


def test_listed_ids_are_matched_and_only_they(tmp_path):
    engine = _store(tmp_path)
    key = exclusions.salt(engine)
    ids = np.array([str(i) for i in range(50_000)] + ["é-ü", "x" * 200], dtype=object)
    with engine.begin() as conn:
        assert exclusions.add(conn, "m", key, ["17", "é-ü", "not-in-data"], 1) == 3
        assert exclusions.add(conn, "m", key, ["17", "49999"], 2) == 1  # 17 keeps request 1
        exclusions.add(conn, "other", key, ["18"], 3)
    listed = ExclusionList(engine, "m")
    assert len(listed) == 4 and listed.through == 2
    assert set(ids[listed.mask(ids)]) == {"17", "é-ü", "49999"}
    assert set(ids[ExclusionList(engine, "m", through=1).mask(ids)]) == {"17", "é-ü"}
    # A numpy text array (not objects) and ids given as numbers read as their text.
    assert ExclusionList(engine, "m").mask(np.array(["49999", "18"])).tolist() == [True, False]
    assert ExclusionList(engine, "m").mask(np.array([17, 18])).tolist() == [True, False]
    assert not ExclusionList(engine, "nothing-forgotten").mask(ids).any()


def test_the_list_keeps_hashes_of_the_scheme_it_names(tmp_path):
    engine = _store(tmp_path)
    key = exclusions.salt(engine)
    with engine.begin() as conn:
        exclusions.add(conn, "m", key, ["17"], 1)
        row = conn.execute(sa.select(tables.forgotten_ids)).one()
    assert row.scheme == exclusions.SIPHASH
    assert row.id_hash == exclusions.list_hashes(key, ["17"])[0] and len(row.id_hash) == 32
    # Another salt gives other hashes: nothing can be matched without the workspace's salt.
    assert exclusions.list_hashes(b"\0" * 32, ["17"]) != exclusions.list_hashes(key, ["17"])


def test_the_hash_is_stable_across_versions_of_its_library():
    # Listed hashes outlive upgrades: pandas' hash_array (SipHash-2-4, then its fixed 64-bit
    # mixing) must keep giving these values for these keys, or forgotten items would return.
    assert exclusions.list_hashes(bytes(range(32)), ["123456", "é"]) == [
        "6f9e547d71caa84ae06c32e8da556502",
        "4d0e64e6b68ba2c30268ac6a1baedb21",
    ]


def test_a_match_of_the_first_hash_alone_is_no_match(tmp_path):
    engine = _store(tmp_path)
    key = exclusions.salt(engine)
    [listed] = exclusions.list_hashes(key, ["17"])
    forged = listed[:16] + ("0" if listed[16] != "0" else "1") + listed[17:]
    with engine.begin() as conn:
        conn.execute(
            sa.insert(tables.forgotten_ids).values(
                model="m", id_hash=forged, scheme=exclusions.SIPHASH, request_id=1
            )
        )
    assert not ExclusionList(engine, "m").mask(np.array(["17"])).any()


def test_entries_listed_before_the_scheme_was_recorded_still_match(tmp_path):
    """A store at the migration before keeps its BLAKE2b entries; upgraded, they match as
    they did, beside entries listed since."""
    url = f"sqlite:///{tmp_path / 'assay.db'}"
    engine = db.create_engine(url)
    cfg = db._alembic_config(url)
    command.upgrade(cfg, "0009")
    key = exclusions.salt(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO forgotten_ids (model, id_hash, request_id) VALUES ('m', :h, 1)"),
            {"h": exclusions.id_hash(key, "old-item")},
        )
    engine.dispose()
    engine = db.connect(url)  # migrates to the newest
    with engine.begin() as conn:
        exclusions.add(conn, "m", key, ["new-item"], 2)
    ids = pd.Series(["old-item", "new-item", "kept"]).to_numpy(dtype=object)
    listed = ExclusionList(engine, "m")
    assert listed.mask(ids).tolist() == [True, True, False]
    assert ExclusionList(engine, "m", through=1).mask(ids).tolist() == [True, False, False]
