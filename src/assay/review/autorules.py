"""Auto-label rules (``user_is_bot_or_sysop == true -> not damaging``): items they match need no review."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from assay.errors import InvalidInput

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}
_RULE = re.compile(
    r"^\s*(?P<feature>[\w.]+)\s*(?P<op>==|!=|>=|<=|>|<)\s*(?P<value>[^<>=!\s].*?)\s*(?:->|→)\s*(?P<label>.+?)\s*$"
)


@dataclass(frozen=True)
class AutoRule:
    """``feature op value -> label``: items matching it are labelled without review."""

    text: str
    feature: str
    op: str
    value: Any
    label: str

    def matches(self, features: dict[str, Any]) -> bool:
        actual = features.get(self.feature)
        if actual is None:
            return False
        try:
            return bool(_OPS[self.op](actual, self.value))
        except TypeError:
            return False  # a string compared with a number: no match rather than an error mid-campaign


def parse_rule(text: str, features: Sequence[str], classes: Sequence[str]) -> AutoRule:
    """Parse one rule, checking its feature and label against the model."""
    match = _RULE.match(text)
    form = "'<feature> <==|!=|>=|<=|>|<> <value> -> <label>', e.g. 'user_is_bot_or_sysop == true -> not damaging'"
    if match is None:
        raise InvalidInput(f"auto-label rule {text!r} does not have the form {form}", field="auto_rules")
    if match["feature"] not in features:
        raise InvalidInput(
            f"auto-label rule {text!r}: the model has no feature {match['feature']!r}", field="auto_rules"
        )
    label = match["label"].strip("'\"")
    if label not in classes:
        raise InvalidInput(
            f"auto-label rule {text!r}: label must be one of {', '.join(classes)}; got {label!r}",
            field="auto_rules",
        )
    return AutoRule(text.strip(), match["feature"], match["op"], _rule_value(match["value"]), label)


def _rule_value(raw: str) -> Any:
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        return raw[1:-1]
    try:
        number = float(raw)
    except ValueError:
        return raw
    return int(number) if number.is_integer() else number
