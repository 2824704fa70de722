"""A score request's items: their ids and supplied features, checked, and the record each scores with.

``parse_items`` reads the items of a request (a request-level fault raises; a bad ``features``
or ``context`` value is that item's own error) and the context each declares (what is not a
feature: a per-group threshold's group, see ``groups``); ``features_of`` merges what an item supplied over the features
stored for its id (ORES's "inject").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import repeat
from typing import Any

from assay.errors import AssayError, InvalidInput, NotFound
from assay.serving.features import MAX_ID_LENGTH, item_id_of
from assay.serving.served import ServedModel

_ITEM_KEYS = frozenset({"id", "features", "context"})
_USUAL_KEYS = frozenset({"id", "features"})
_USUAL_FEATURES = frozenset({dict, type(None)})


def parse_items(
    items: Sequence[Any],
) -> tuple[list[tuple[str, Mapping[str, Any] | AssayError | None]], dict[str, Mapping[str, Any]]]:
    """(id, supplied features | the item's error | None) per item, and each declared context by id;
    request-level errors raise.

    An item that is not an object, lacks a usable id, repeats an id or has unknown keys
    cannot be reported on by id, so it fails the request; a bad ``features`` or ``context``
    value is that item's own error.
    """
    if not isinstance(items, list | tuple):
        raise InvalidInput("items must be a list", field="items")
    usual = _usual_items(items)
    if usual is not None:
        return usual, {}
    out: list[tuple[str, Mapping[str, Any] | AssayError | None]] = []
    contexts: dict[str, Mapping[str, Any]] = {}
    seen: set[str] = set()
    for i, item in enumerate(items):
        # ``type(x) is dict`` first: JSON gives dicts, and the ABC check costs more than the rest.
        if type(item) is not dict and not isinstance(item, Mapping):
            raise InvalidInput(f"items[{i}] must be an object with an 'id'", field=f"items[{i}]")
        if not item.keys() <= _ITEM_KEYS:
            extra = sorted(k for k in item if k not in _ITEM_KEYS)[0]
            raise InvalidInput(
                f"items[{i}] has unknown field {extra!r}; items take 'id', 'features' and 'context'",
                field=f"items[{i}]",
            )
        raw_id = item.get("id")
        item_id = (
            raw_id
            if type(raw_id) is str and 0 < len(raw_id) <= MAX_ID_LENGTH
            else item_id_of(raw_id, f"items[{i}].id")
        )
        if item_id in seen:
            raise InvalidInput(
                f"item id {item_id!r} appears twice", field=f"items[{i}].id", code="duplicate_id"
            )
        seen.add(item_id)
        supplied = item.get("features")
        context = item.get("context")
        if supplied is not None and type(supplied) is not dict and not isinstance(supplied, Mapping):
            out.append((item_id, InvalidInput("features must be an object", field="features")))
        elif context is not None and not isinstance(context, Mapping):
            out.append((item_id, InvalidInput("context must be an object", field="context")))
        else:
            out.append((item_id, supplied))
            if context:
                contexts[item_id] = context
    return out, contexts


def _usual_items(items: Sequence[Any]) -> list[tuple[str, Mapping[str, Any] | AssayError | None]] | None:
    """The items of the usual request checked a column at a time, in C loops with no bytecode per
    item: objects with only an ``id`` (a string of an allowed length, each once) and ``features``
    (an object, or absent). None when anything differs: ``parse_items``'s loop then decides, and
    names the problem (it is the definition; this may only agree with it)."""
    if not items or set(map(type, items)) != {dict} or not set().union(*items) <= _USUAL_KEYS:
        return None
    ids: list[Any] = list(map(dict.get, items, repeat("id")))
    if set(map(type, ids)) != {str} or len(set(ids)) != len(ids):
        return None
    lengths = list(map(len, ids))
    if min(lengths) == 0 or max(lengths) > MAX_ID_LENGTH:
        return None
    supplied = list(map(dict.get, items, repeat("features")))
    if not set(map(type, supplied)) <= _USUAL_FEATURES:
        return None
    return list(zip(ids, supplied, strict=True))


def features_of(
    served: ServedModel, item_id: str, supplied: Mapping[str, Any] | None, stored: dict[str, Any] | None
) -> Mapping[str, Any]:
    """The record to encode: supplied features over stored ones (ORES's inject)."""
    if supplied is not None and supplied.keys() == served.name_set:  # every feature, nothing else
        return supplied
    if supplied is None:
        if stored is None:
            raise NotFound(
                f"no stored features for item {item_id!r} in model {served.name!r}; send its features "
                f"or load them with 'assay features load'",
                field="id",
                code="unknown_item",
            )
        return {name: stored[name] for name in served.names if name in stored}
    unknown = [k for k in supplied if k not in served.name_set]
    if unknown:
        raise served.loaded.schema.unknown_feature(unknown[0])
    if stored is None or served.name_set <= supplied.keys():
        return supplied
    return {**{name: stored[name] for name in served.names if name in stored}, **supplied}
