"""A request's items: the usual request's column-at-a-time check agrees with the per-item loop."""

from __future__ import annotations

from typing import Any

import pytest

from assay.errors import AssayError
from assay.serving import items as items_module
from assay.serving.features import MAX_ID_LENGTH
from assay.serving.items import parse_items

FEATURES = {"words_added": 3, "user_is_anon": True}
CASES: dict[str, list[Any]] = {
    "usual": [{"id": str(i), "features": dict(FEATURES)} for i in range(50)],
    "id only": [{"id": "a"}, {"id": "b", "features": None}],
    "int id": [{"id": 1, "features": FEATURES}, {"id": "2"}],
    "repeated id": [{"id": "a"}, {"id": "b"}, {"id": "a"}],
    "repeated after conversion": [{"id": 1}, {"id": "1"}],
    "empty id": [{"id": "a"}, {"id": ""}],
    "longest id": [{"id": "x" * MAX_ID_LENGTH}],
    "too long id": [{"id": "a"}, {"id": "x" * (MAX_ID_LENGTH + 1)}],
    "no id": [{"features": FEATURES}],
    "null id": [{"id": None}],
    "features not an object": [{"id": "a", "features": [1, 2]}, {"id": "b", "features": FEATURES}],
    "unknown key": [{"id": "a", "feature": FEATURES}],
    "context": [{"id": "a", "features": FEATURES, "context": {"group": "x"}}],
    "bad context": [{"id": "a", "context": 3}],
    "not an object": [{"id": "a"}, 3],
    "empty": [],
}


def outcome(items: list[Any]) -> Any:
    try:
        parsed, contexts = parse_items(items)
    except AssayError as exc:
        return ("raised", exc.code, exc.field, str(exc))
    return [(i, f.to_dict() if isinstance(f, AssayError) else f) for i, f in parsed], contexts


@pytest.mark.parametrize("name", CASES)
def test_the_usual_items_check_agrees_with_the_loop(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = outcome(CASES[name])
    monkeypatch.setattr(items_module, "_usual_items", lambda items: None)
    assert fast == outcome(CASES[name])


def test_the_usual_request_takes_the_column_check() -> None:
    assert items_module._usual_items(CASES["usual"]) is not None
    assert items_module._usual_items(CASES["context"]) is None
