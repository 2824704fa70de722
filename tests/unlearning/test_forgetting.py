from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

import assay
from assay.errors import ArtifactError, InvalidInput, NotFound
from assay.modelling.plots import figures_of
from assay.modelling.spec import ModelSpec
from assay.modelling.training import train
from assay.registry.ensemble import read_sharded
from assay.review.judgments import record_judgment
from assay.serving.cache import MemoryCache, score_key
from assay.serving.features import FeatureTable
from assay.store import db, tables
from assay.store.log_store import open_log_store
from assay.unlearning import forgetting, requests
from assay.unlearning.exclusions import ExclusionList
from assay.unlearning.sharding import assign, sharded_refit
from assay.workspace import Workspace
from tests.unlearning.conftest import training_ids


def _forgetting(ws: Workspace, **kwargs) -> forgetting.Forgetting:
    kwargs.setdefault("log", ws.log)
    return forgetting.Forgetting(engine=ws.engine, registry=ws.registry, **kwargs)


def test_forgetting_retrains_only_the_shards_that_held_the_ids_and_equals_a_fresh_training(sharded_workspace):
    ws = sharded_workspace
    old = ws.registry.get("damaging", 1)
    old_texts = read_sharded(old.directory, old.manifest).texts
    old_importance = ws.registry.card(old)["importance"]
    old_figures = figures_of((old.directory / "card.html").read_text())
    ids = training_ids(old.directory.parents[2].parent / "data")
    gone = [ids[3], ids[500]]
    request = forgetting.forget(_forgetting(ws), ["damaging"], [*gone, "no-such-item"], actor="dpo")

    assert request.status == "done" and len(request.id_hashes) == 3 and len(request.unknown) == 1
    [entry] = request.versions
    shards, _ = assign(np.array(gone), 4, 3, seed=0)
    assert entry["mode"] == "shards" and entry["retrained_shards"] == sorted(set(shards.tolist()))
    assert entry["replacement"] == 2 and entry["artifacts_deleted"] is True
    assert ws.registry.aliases("damaging") == {"production": 2, "candidate": 2}
    with pytest.raises(NotFound, match="retired"):
        ws.registry.get("damaging", 1)
    with pytest.raises(NotFound, match="retired"):
        ws.registry.promote("damaging", 1, actor="someone", force=True, reason="bring it back")
    assert not old.directory.exists()

    new = ws.registry.get("damaging", 2)
    assert new.lineage["unlearning"]["forgot"]["request"] == request.id
    assert new.lineage["train_rows"] == old.lineage["train_rows"] - 2
    new_texts = read_sharded(new.directory, new.manifest).texts
    for s in range(4):
        assert (new_texts[s] == old_texts[s]) == (s not in entry["retrained_shards"])
    assert ws.registry.card(new)["unlearning"]["fast"] is True
    # The replacement keeps its predecessor's permutation importance, and its card says so.
    assert ws.registry.card(new)["unlearning"]["inherited_from"] == old.ref
    assert ws.registry.card(new)["importance"] == old_importance
    html = (new.directory / "card.html").read_text()
    assert f'data-inherited="importance">Measured on\n    {old.ref}' in html
    # Its figures are its predecessor's (drawing them costs more than the retraining), and it says so.
    assert f'data-figures-from="{old.ref}"' in html
    assert figures_of(html) == old_figures and len(old_figures) >= 10

    verification = forgetting.verify(_forgetting(ws), request.id)
    assert verification["equal"] is True and verification["versions"][0]["rows"] == 400
    assert requests.get_request(ws.engine, request.id).verification["equal"] is True


def test_the_audit_and_exclusion_list_keep_no_id(sharded_workspace):
    ws = sharded_workspace
    ids = training_ids(ws.settings.home.parent / "data")
    forgetting.forget(_forgetting(ws), ["damaging"], [ids[7]], actor="dpo")
    with ws.engine.connect() as conn:
        stored = [
            json.dumps([list(map(str, r)) for r in conn.execute(sa.select(t)).all()])
            for t in (
                tables.forget_requests,
                tables.forgotten_ids,
                tables.retired_versions,
                tables.alias_events,
            )
        ]
    assert not any(ids[7] in text for text in stored)
    assert ExclusionList(ws.engine, "damaging").mask(np.array([ids[7], ids[8]])).tolist() == [True, False]


@pytest.mark.parametrize("backend", ["store", "parquet"])
def test_every_store_loses_the_items_rows_and_only_theirs(sharded_workspace, backend):
    ws = sharded_workspace
    log = open_log_store(dataclasses.replace(ws.settings, log_backend=backend), ws.engine)
    loaded = ws.registry.load(ws.registry.get("damaging", 1))
    test_frame = loaded  # the schema encodes rows for the log
    d, k = len(loaded.schema.features), len(loaded.classes)
    keep, gone = "keep-1", "gone-1"
    log.write("damaging", 1, 1.0e9, [keep, gone, keep], np.zeros((3, d)), np.full((3, k), 0.5))
    frame = log.read("damaging", 1, width=(d, k), with_ids=True)
    assert frame.ids == [keep, gone, keep]
    features = {f.name: 1 for f in test_frame.schema.features}
    FeatureTable(ws.engine).load_records(
        "damaging", [{"id": keep, "features": features}, {"id": gone, "features": features}], loaded.schema
    )
    for item in (keep, gone):
        record_judgment(ws.engine, model="damaging", item_id=item, label="True", classes=loaded.classes,
                        rationale="vandalism", token_name="tests")  # fmt: skip
    with ws.engine.begin() as conn:
        conn.execute(sa.insert(tables.monitor_labels), [
            {"model": "damaging", "item_id": i, "label": "True", "source": "tests", "created_at": db.now()} for i in (keep, gone)
        ])  # fmt: skip
    cache = MemoryCache(100)
    cache.set_many({score_key("damaging", 1, gone): {"x": 1}, score_key("damaging", 1, keep): {"x": 1}})

    request = forgetting.forget(_forgetting(ws, cache=cache, log=log), ["damaging"], [gone], actor="dpo")
    assert request.stores["damaging"] == {
        "campaign_items": 0, "labels": 0, "assignments": 0, "judgments": 1, "endorsements": 0,
        "feature_rows": 1, "monitor_labels": 1, "prediction_log": 1,
    }  # fmt: skip
    assert request.unknown == [] and request.versions == []  # in the stores, not in any training data
    assert log.read("damaging", 1, width=(d, k), with_ids=True).ids == [keep, keep]
    assert set(FeatureTable(ws.engine).lookup("damaging", [keep, gone])) == {keep}
    with ws.engine.connect() as conn:
        assert conn.execute(sa.select(tables.judgments.c.item_id)).scalars().all() == [keep]
        assert conn.execute(sa.select(tables.monitor_labels.c.item_id)).scalars().all() == [keep]
    assert cache.get_many([score_key("damaging", 1, gone), score_key("damaging", 1, keep)])[0] is None
    assert ws.registry.aliases("damaging")["production"] == 1  # version 1 never held the item


def test_forgotten_rows_leave_no_bytes_in_the_database_file(sharded_workspace):
    # Connections as a build of SQLite without SECURE_DELETE makes them (most builds but
    # Debian's): deleted rows stay in the file's free space unless the forget asks otherwise.
    ws = sharded_workspace
    sa.event.listen(ws.engine, "connect", lambda dbapi_conn, _: dbapi_conn.execute("PRAGMA secure_delete=0"))
    ws.engine.dispose()
    path = Path(ws.engine.url.database)
    loaded = ws.registry.load(ws.registry.get("damaging", 1))
    d, k = len(loaded.schema.features), len(loaded.classes)
    gone, keep = "forget-me-7f3a9c", "keep-me-2b8d41"
    ws.log.write("damaging", 1, 1.0e9, [gone, keep, gone], np.zeros((3, d)), np.full((3, k), 0.5))
    ws.log.write("damaging", 1, 1.0e9 + 1, [gone], np.zeros((1, d)), np.full((1, k), 0.5))
    record_judgment(ws.engine, model="damaging", item_id=gone, label="True", classes=loaded.classes,
                    rationale="vandalism", token_name="tests")  # fmt: skip

    def file_bytes() -> bytes:
        with ws.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return path.read_bytes()

    assert gone.encode() in file_bytes()
    forgetting.forget(_forgetting(ws), ["damaging"], [gone], actor="dpo")
    after = file_bytes()
    assert gone.encode() not in after
    assert keep.encode() in after  # the chunk it shared was rewritten, not lost
    with ws.engine.connect() as conn:  # the pooled connection is back as it was
        assert conn.exec_driver_sql("PRAGMA secure_delete").scalar() == 0


def test_every_later_training_leaves_forgotten_items_out(sharded_workspace):
    ws = sharded_workspace
    ids = training_ids(ws.settings.home.parent / "data")
    forgetting.forget(_forgetting(ws, legal_hold=True), ["damaging"], ids[:3], actor="dpo")
    assert ws.registry.get("damaging", 1, retired_ok=True).directory.exists()  # legal hold keeps its files
    spec = ModelSpec.from_dict(ws.registry.get("damaging", 2).spec)
    exclusion = ExclusionList(ws.engine, "damaging")
    record = train(spec, ws.registry, exclusion=exclusion, refit=sharded_refit).record
    assert record.lineage["unlearning"]["excluded_rows"] == 3
    assert record.lineage["train_rows"] == 1197


def test_bad_requests_are_refused_before_anything_is_written(sharded_workspace):
    ws = sharded_workspace
    f = _forgetting(ws)
    for ids, problem in (([], "at least one"), (["x" * 201], "1-200"), ([True], "string or an integer"),
                         (["a\nb"], "printable"), ([str(i) for i in range(100_001)], "at most")):  # fmt: skip
        with pytest.raises(InvalidInput, match=problem):
            forgetting.forget(f, ["damaging"], ids, actor="dpo")
    with pytest.raises(NotFound, match="unknown model"):
        forgetting.forget(f, ["nope"], ["1"], actor="dpo")
    assert requests.list_requests(ws.engine) == []


def test_an_unsharded_model_is_retrained_in_full_and_says_so(trained_workspace):
    ws = trained_workspace
    data = ws.settings.home.parent / "data"
    first = (data / "edits.train.tsv").read_text().splitlines()[0].split("\t")[0]
    request = forgetting.forget(_forgetting(ws), ["damaging"], [first], actor="dpo")
    [entry] = request.versions
    assert entry["mode"] == "full" and entry["replacement"] == 2
    new = ws.registry.get("damaging", 2)
    card = ws.registry.card(new)
    assert card["unlearning"]["fast"] is False and "in full" in card["unlearning"]["note"]
    assert new.lineage["unlearning"]["forgot"]["mode"] == "full"


def test_a_forget_killed_mid_way_leaves_no_alias_on_held_data_and_resumes(sharded_workspace):
    ws = sharded_workspace
    ids = training_ids(ws.settings.home.parent / "data")
    env = {**os.environ, "PYTHONPATH": str(Path(assay.__file__).resolve().parents[1])}
    command = [sys.executable, "-c", "from assay.cli import main; main()", "--home", str(ws.settings.home)]
    process = subprocess.Popen([*command, "forget", "--model", "damaging", ids[11]], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while not requests.list_requests(ws.engine) and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)  # the request is recorded; its replacement is training
    process.wait()
    [request] = requests.list_requests(ws.engine)
    assert request.status == "running" and request.versions[0]["version"] == 1
    assert 1 not in ws.registry.aliases("damaging").values()  # nothing serves the version that held it
    with pytest.raises(NotFound, match="retired"):
        ws.registry.load(ws.registry.get("damaging", 1))

    done = subprocess.run(
        [*command, "forget", "resume"], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    request = requests.get_request(ws.engine, request.id)
    assert request.status == "done"
    replacement = request.versions[0]["replacement"]
    assert ws.registry.aliases("damaging") == {"production": replacement, "candidate": replacement}
    assert forgetting.verify(_forgetting(ws), request.id)["equal"] is True


def test_a_tampered_checkpoint_stops_the_forget_without_serving_the_old_version(sharded_workspace):
    ws = sharded_workspace
    ids = training_ids(ws.settings.home.parent / "data")
    old = ws.registry.get("damaging", 1)
    for path in old.directory.glob("shard-*.slice-*.txt"):
        path.write_text(path.read_text().replace("num_leaves=", "num_leaves=1", 1))
    with pytest.raises(ArtifactError, match="hash mismatch"):
        forgetting.forget(_forgetting(ws), ["damaging"], [ids[30]], actor="dpo")
    [request] = requests.list_requests(ws.engine)
    assert request.status == "running" and "hash mismatch" in request.error
    assert ws.registry.aliases("damaging") == {}  # retired at once; nothing replaced it yet
