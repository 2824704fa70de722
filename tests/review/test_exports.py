"""Label files assay exported are tracked, and forgetting rewrites them while they are assay's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from assay.review import exports, labelling, resolution, worksets
from tests.reviewing import campaign, items_file, users


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_forgetting_rewrites_an_export_as_written_and_only_lists_a_changed_one(
    trained_workspace, tmp_path, suffix
):
    ws = trained_workspace
    c = campaign(ws, items_file(tmp_path / "items"), size=4, labels_per_item=1)
    [ana] = users(ws, "ana")
    items = [i.item_id for i in worksets.take_workset(ws.engine, c, ana, size=4, ttl_s=600).items]
    for item_id in items:
        labelling.submit_label(ws.engine, c, ana, item_id, "True", "", ttl_s=600)
    mine, theirs = tmp_path / f"labels{suffix}", tmp_path / "out" / f"edited{suffix}"
    for path in (mine, theirs):
        assert resolution.export_labels(ws.engine, c, path) == 4
    edited = pd.read_csv(theirs) if suffix == ".csv" else pd.read_parquet(theirs)
    edited["note"] = "mine now"  # the user changed this one after assay wrote it
    edited.to_csv(theirs, index=False) if suffix == ".csv" else edited.to_parquet(theirs, index=False)
    gone = {items[1]}

    def forgotten(ids: np.ndarray) -> np.ndarray:
        return np.isin(ids, list(gone))

    found = exports.forget_in_exports(ws.engine, c.model, forgotten)
    assert found == [
        {"path": str(mine.resolve()), "ids": 1, "status": exports.REWRITTEN},
        {"path": str(theirs.resolve()), "ids": 1, "status": exports.CHANGED},
    ]
    left = pd.read_csv(mine, dtype=str) if suffix == ".csv" else pd.read_parquet(mine)
    assert sorted(left["id"].astype(str)) == sorted(set(items) - gone)
    assert items[1] in set(
        (pd.read_csv(theirs, dtype=str) if suffix == ".csv" else pd.read_parquet(theirs))["id"].astype(str)
    )
    # Run again (a resumed request): the rewritten file holds nothing forgotten, the changed one is listed.
    again = exports.forget_in_exports(ws.engine, c.model, forgotten)
    assert [e["status"] for e in again] == [exports.CHANGED]
    # A later forget still recognises the rewritten file as assay's own.
    gone.add(items[2])
    assert exports.forget_in_exports(ws.engine, c.model, forgotten)[0]["status"] == exports.REWRITTEN
    assert exports.forget_in_exports(ws.engine, "another-model", forgotten) == []
