"""Type and range checks over parsed JSON whose errors name the record and the field.

``Validator`` is the primitive the record checks (``registry.records``) are written with:
exact keys, JSON types (``true`` is no number), finite numbers in their ranges, enums and
digests, each failure one ``ArtifactError`` line such as ``card.json: decision_threshold must
be a number from 0 to 1, got 'abc'``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from assay.errors import ArtifactError

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# Rates computed in floating point land a rounding step outside [0, 1] (an average precision
# of 1.0000000000000002): ranges are checked with this much slack.
_SLACK = 1e-9
_MAX_NAME = 1000


_T = TypeVar("_T")


class Validator:
    """Type and range checks whose errors name the record and the field."""

    def __init__(self, name: str) -> None:
        self.name = name

    def fail(self, where: str, problem: str) -> ArtifactError:
        field = where or None
        return ArtifactError(f"{self.name}: {where + ' ' if where else ''}{problem}", field=field)

    def keys(
        self, value: Any, where: str, required: set[str], optional: Iterable[str] = ()
    ) -> dict[str, Any]:
        """``value`` as an object with every ``required`` key, and no key but those and ``optional``."""
        record = self.mapping(value, where)
        missing = sorted(required - record.keys())
        if missing:
            raise self.fail(where, f"lacks {', '.join(map(repr, missing))}")
        unknown = sorted(record.keys() - required - set(optional))
        if unknown:
            raise self.fail(where, f"has unknown key {_show(unknown[0])}")
        return record

    def get(self, value: Any, where: str, key: str) -> Any:
        record = self.mapping(value, where)
        if key not in record:
            raise self.fail(where, f"lacks {key!r}")
        return record[key]

    def mapping(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"must be an object, got {_show(value)}")
        return value

    def array(self, value: Any, where: str, *, length: int | None = None, min_length: int = 0) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(where, f"must be a list, got {_show(value)}")
        if length is not None and len(value) != length:
            raise self.fail(where, f"must have {length} entries, not {len(value)}")
        if len(value) < min_length:
            raise self.fail(where, f"must have at least {min_length} entries")
        return value

    def string(self, value: Any, where: str, *, empty_ok: bool = False) -> str:
        if not isinstance(value, str) or (not value and not empty_ok) or len(value) > 100_000:
            raise self.fail(where, f"must be a{'' if empty_ok else ' non-empty'} string, got {_show(value)}")
        return value

    def strings(
        self, value: Any, where: str, *, unique: bool = False, empty_ok: bool = False, min_length: int = 0
    ) -> list[str]:
        values = self.array(value, where, min_length=max(min_length, 0 if empty_ok else 1))
        for i, item in enumerate(values):
            if not isinstance(item, str) or not item or len(item) > _MAX_NAME:
                raise self.fail(f"{where}[{i}]", f"must be a non-empty string, got {_show(item)}")
        if unique and len(set(values)) != len(values):
            duplicate = next(s for i, s in enumerate(values) if s in values[:i])
            raise self.fail(where, f"names {duplicate!r} twice")
        return values

    def enum(self, value: Any, where: str, options: Iterable[str]) -> str:
        allowed = list(options)
        if not isinstance(value, str) or value not in allowed:
            raise self.fail(where, f"must be one of {', '.join(map(repr, allowed))}, got {_show(value)}")
        return value

    def boolean(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, f"must be true or false, got {_show(value)}")
        return value

    def integer(self, value: Any, where: str, lo: int | None = None) -> int:
        # type() rather than isinstance: JSON's true is no count.
        if type(value) is not int or (lo is not None and value < lo):
            bound = "" if lo is None else f" of at least {lo}"
            raise self.fail(where, f"must be a whole number{bound}, got {_show(value)}")
        return value

    def number(
        self, value: Any, where: str, lo: float = -math.inf, hi: float = math.inf, *, null: bool = False
    ) -> float | None:
        if value is None and null:
            return None
        if (
            type(value) not in (int, float)
            or not math.isfinite(value)
            or not lo - _SLACK <= value <= hi + _SLACK
        ):
            raise self.fail(
                where, f"must be {_range(lo, hi)}{' or null' if null else ''}, got {_show(value)}"
            )
        return float(value)

    def numbers(self, values: list[Any], where: str, lo: float = -math.inf) -> None:
        for i, value in enumerate(values):
            self.number(value, f"{where}[{i}]", lo)

    def integers(self, values: list[Any], where: str) -> None:
        # Threshold tables are long: one pass over the types, the messages only on failure.
        if not all(type(x) is int and x >= 0 for x in values):
            i = next(i for i, x in enumerate(values) if type(x) is not int or x < 0)
            self.integer(values[i], f"{where}[{i}]", 0)

    def unit_numbers(self, values: list[Any], where: str, *, null: bool) -> None:
        lo, hi = -_SLACK, 1.0 + _SLACK

        def ok(x: Any) -> bool:
            return (x is None and null) or (type(x) in (int, float) and lo <= x <= hi)

        # Threshold tables are long: their types, bounds and NaNs asked of the whole list in C
        # (a NaN makes the sum NaN); value by value only when that cannot tell.
        types = set(map(type, values))
        if types <= ({int, float, type(None)} if null else {int, float}):
            numbers = [x for x in values if x is not None] if type(None) in types else values
            if not numbers or (lo <= min(numbers) and max(numbers) <= hi and not math.isnan(sum(numbers))):
                return
        if not all(map(ok, values)):
            i = next(i for i, x in enumerate(values) if not ok(x))
            self.number(values[i], f"{where}[{i}]", 0.0, 1.0, null=null)

    def params(self, value: Any, where: str) -> None:
        """Hyperparameters: names to JSON scalars (finite numbers)."""
        for key, item in self.mapping(value, where).items():
            if item is None or isinstance(item, str | bool):
                continue
            self.number(item, f"{where}.{key}")

    def sha256(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not _SHA256_HEX.fullmatch(value):
            raise self.fail(where, f"must be a lowercase sha256 hex digest, got {_show(value)}")
        return value

    def columns(
        self, value: Any, where: str, integer: Mapping[str, bool], null: Mapping[str, bool] | None = None
    ) -> dict[str, Any]:
        """Parallel lists of equal length: whole counts where ``integer``, else values in [0, 1]."""
        table = self.keys(value, where, set(integer))
        length = None
        for column, whole in integer.items():
            values = self.array(table[column], f"{where}.{column}")
            if length is not None and len(values) != length:
                raise self.fail(f"{where}.{column}", f"has {len(values)} values, the other columns {length}")
            length = len(values)
            if whole:
                self.integers(values, f"{where}.{column}")
            else:
                self.unit_numbers(values, f"{where}.{column}", null=bool(null and null.get(column)))
        return table

    def nested(self, check: Callable[[Any, str], _T], value: Any, where: str) -> _T:
        return check(value, f"{self.name}: {where}")


def _range(lo: float, hi: float) -> str:
    if math.isinf(lo) and math.isinf(hi):
        return "a finite number"
    if math.isinf(hi):
        return f"a finite number of at least {lo:g}"
    return f"a number from {lo:g} to {hi:g}"


def _show(value: Any) -> str:
    """A value as JSON shows it, cut short: messages must stay one readable line."""
    if isinstance(value, bool) or value is None:
        text = {True: "true", False: "false", None: "null"}[value]
    elif isinstance(value, dict):
        text = "an object"
    elif isinstance(value, list):
        text = "a list"
    else:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
