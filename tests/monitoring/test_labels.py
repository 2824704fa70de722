"""Ground-truth labels: each bad item refused with its reason, the rest stored, on both stores."""

from __future__ import annotations

import numpy as np
from sqlalchemy.engine import Engine

from assay.monitoring.labels import add_labels, read_labels
from assay.store.log_store import LogStore

CLASSES = {1: ["False", "True"], 2: ["False", "True"]}


def _log(log: LogStore, ids: list[str], version: int = 1) -> None:
    X = np.zeros((len(ids), 2))
    proba = np.tile([0.7, 0.3], (len(ids), 1))
    log.write("m", version, 10.0, ids, X, proba)


def test_bad_labels_are_refused_one_by_one(store: Engine, log_store: LogStore) -> None:
    _log(log_store, ["a", "b", "c", "d", "e", "7"])
    outcomes = add_labels(
        store,
        log_store,
        "m",
        [
            {"id": "a", "label": "True"},
            {"id": "b", "label": False},  # JSON false for the class "False"
            {"id": "zzz", "label": "True"},  # never scored by m
            {"id": "c", "label": "maybe"},  # not a class
            {"id": "a", "label": "False"},  # twice in the batch
            {"id": "d"},  # no label
            {"id": ["x"], "label": "True"},  # not an id
            "not an object",
            {"id": "e", "label": "True", "extra": 1},
            {"id": 7, "label": "True"},  # a whole number is an id
        ],
        source="test",
        classes_of=CLASSES.__getitem__,
    )
    codes = [o.code if not o.accepted else "ok" for o in outcomes]
    assert codes == [
        "ok",
        "ok",
        "unknown_item",
        "unknown_class",
        "duplicate_label",
        "missing_label",
        "invalid_id",
        "invalid_item",
        "invalid_item",
        "ok",
    ]
    assert "False, True" in (outcomes[3].message or "")
    assert read_labels(store, "m") == {"a": "True", "b": "False", "7": "True"}
    # A label is written once: the same item again is a duplicate, another model is unknown.
    again = add_labels(
        store, log_store, "m", [{"id": "a", "label": "False"}], source="t", classes_of=CLASSES.__getitem__
    )
    assert again[0].code == "duplicate_label"
    other = add_labels(
        store, log_store, "other", [{"id": "a", "label": "True"}], source="t", classes_of=CLASSES.__getitem__
    )
    assert other[0].code == "unknown_item"
    assert read_labels(store, "m")["a"] == "True"


def test_the_version_that_scored_an_item_last_decides_its_classes(store: Engine, log_store: LogStore) -> None:
    _log(log_store, ["x"], version=1)
    _log(log_store, ["x"], version=2)
    seen: list[int] = []

    def classes_of(version: int) -> list[str]:
        seen.append(version)
        return ["low", "high"] if version == 2 else ["False", "True"]

    out = add_labels(store, log_store, "m", [{"id": "x", "label": "high"}], source="t", classes_of=classes_of)
    assert out[0].accepted and seen == [2]


def test_many_labels_in_one_load(store: Engine, log_store: LogStore) -> None:
    ids = [str(k) for k in range(2500)]
    _log(log_store, ids)
    items = [{"id": i, "label": "True" if int(i) % 3 else "False"} for i in ids]
    outcomes = add_labels(store, log_store, "m", items, source="bulk", classes_of=CLASSES.__getitem__)
    assert all(o.accepted for o in outcomes) and len(read_labels(store, "m")) == 2500
