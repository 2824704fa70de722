"""Typed access to a parsed spec's tables: every mistake is a ``SpecError`` naming the file and the key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from assay.errors import SpecError


class SpecReader:
    """Typed access to a parsed TOML mapping with errors that name the file and key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, message: str) -> SpecError:
        return SpecError(f"{self.source}: {key}: {message}", field=key)

    def keys(self, table: Mapping[str, Any], prefix: str, allowed: set[str]) -> None:
        for key in table:
            if key not in allowed:
                raise self.fail(f"{prefix}{key}", f"unknown key; allowed here: {', '.join(sorted(allowed))}")

    def get(
        self, table: Mapping[str, Any], key: str, kind: Any, *, required: bool = False, default: Any = None
    ) -> Any:
        short = key.rsplit(".", 1)[-1]
        if short not in table:
            if required:
                raise self.fail(key, "missing (required)")
            return default
        value = table[short]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is int and isinstance(value, bool):
            raise self.fail(key, f"must be an integer; got {value!r}")
        if not isinstance(value, kind):
            names = " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__
            raise self.fail(key, f"must be {names}; got {type(value).__name__} {value!r}")
        return value

    def table(self, table: Mapping[str, Any], key: str, *, required: bool = False) -> dict[str, Any]:
        value = self.get(table, key, object, required=required, default={})
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table; got {type(value).__name__} {value!r}")
        return value

    def strings(self, table: Mapping[str, Any], key: str) -> list[str]:
        value = self.get(table, key, list, default=[])
        if not all(isinstance(v, str) for v in value):
            raise self.fail(key, "must be a list of strings")
        return list(value)

    def paths(self, table: Mapping[str, Any], key: str, *, required: bool = False) -> list[str]:
        value = self.get(table, key, (str, list), required=required, default=[])
        paths = [value] if isinstance(value, str) else value
        if not all(isinstance(v, str) for v in paths) or (required and not paths):
            raise self.fail(key, "must be a path or a non-empty list of paths")
        return list(paths)

    def numbers(self, table: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> dict[str, float]:
        out = {}
        for stat, value in self.table(table, key).items():
            if stat not in allowed:
                raise self.fail(f"{key}.{stat}", f"unknown statistic; allowed: {', '.join(allowed)}")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.fail(f"{key}.{stat}", f"must be a number; got {value!r}")
            out[stat] = float(value)
        return out
