"""References to models and versions: safe names, ``name@3`` / ``name@alias`` and the default alias.

Model and alias names end up in paths, URLs and SQL keys, so every name a user gives passes
``check_name`` before anything else reads it.
"""

from __future__ import annotations

from assay.errors import InvalidInput

DEFAULT_ALIAS = "production"
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def check_name(name: str, what: str = "model name") -> str:
    """Model and alias names end up in paths and URLs: keep them to a safe alphabet."""
    if not name or not set(name) <= _NAME_CHARS or name.startswith(".") or len(name) > 100:
        raise InvalidInput(f"{what} {name!r} must be 1-100 of letters, digits, '_', '-', '.'", field=what)
    return name


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``name``, ``name@3`` or ``name@alias`` -> (name, version-or-alias or None)."""
    name, _, which = ref.partition("@")
    return check_name(name), (which or None)


def version_number(which: str) -> int | None:
    """The version a reference's suffix names, or None when it names an alias.

    Only plain ASCII digits count (``str.isdigit`` also accepts "²"), and a number too long to be a
    version is an alias that will not be found rather than an overflow in the store.
    """
    if which.isascii() and which.isdigit() and len(which) <= 9:
        return int(which)
    return None
