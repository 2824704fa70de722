"""ORES's threshold query language: ``(maximum|minimum) <stat> @ <stat> (>=|<=) <number>``.

A query names the operating point a product wants ("maximum recall @ precision
>= 0.9") and is answered from a version's threshold table (``evaluation``),
never by rescoring. Queries come from URLs, specs and forms, so parsing is a
single linear scan with a length cap: no input can make it backtrack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from assay.errors import InvalidInput, MalformedRequest
from assay.modelling.evaluation import QUERYABLE_STATS


@dataclass(frozen=True)
class ThresholdQuery:
    """``<optimise> <target> @ <constraint> <op> <value>``, e.g. maximum recall @ precision >= 0.9."""

    optimise: Literal["maximum", "minimum"]
    target: str
    constraint: str
    op: Literal[">=", "<="]
    value: float

    def __str__(self) -> str:
        return f"{self.optimise} {self.target} @ {self.constraint} {self.op} {self.value:g}"


_QUERY_FORM = "(maximum|minimum) <stat> @ <stat> (>=|<=) <number>"
# The longest valid query is about 60 characters; anything much longer is refused before it is
# read, and never echoed back whole.
MAX_QUERY_CHARS = 200
_COMPARISON_CHARS = frozenset("<>=!")


def _bad_query(query: str, problem: str) -> InvalidInput:
    return InvalidInput(
        f"invalid threshold query {query!r}: {problem}; the form is '{_QUERY_FORM}', "
        f"e.g. 'maximum recall @ precision >= 0.9'; allowed stats: {', '.join(QUERYABLE_STATS)}",
        field="threshold",
    )


def _split_query(query: str) -> tuple[str, str, str, str, str] | None:
    """(optimise, target, constraint, op, value) as written, or None when ``query`` lacks that shape.

    A single left-to-right scan: no regular expression, so no input can make it backtrack
    (``maximum `` followed by thousands of ``@`` took seconds with the pattern it replaces).
    """
    left, at, right = query.partition("@")
    words = left.split()
    if not at or len(words) != 2:
        return None
    optimise, target = words
    right = right.lstrip()
    end = 0
    while end < len(right) and not right[end].isspace() and right[end] not in _COMPARISON_CHARS:
        end += 1
    constraint, rest = right[:end], right[end:].lstrip()
    end = 0
    while end < len(rest) and rest[end] in _COMPARISON_CHARS:
        end += 1
    op, value = rest[:end], rest[end:].strip()
    if not constraint or not op or not value or any(c.isspace() for c in value):
        return None
    return optimise, target, constraint, op, value


def parse_threshold_query(query: str) -> ThresholdQuery:
    """Parse ORES's threshold query language; raises InvalidInput naming what is wrong.

    Linear in the query's length, and queries over ``MAX_QUERY_CHARS`` are refused unread
    (``MalformedRequest``, 400): the query arrives from anyone who can send a URL.
    """
    if not isinstance(query, str):
        raise _bad_query(str(query)[:MAX_QUERY_CHARS], "expected a string")
    if len(query) > MAX_QUERY_CHARS:
        raise MalformedRequest(
            f"the threshold query is {len(query):,} characters long; at most {MAX_QUERY_CHARS} are taken, "
            f"in the form '{_QUERY_FORM}'",
            field="threshold",
            code="query_too_long",
        )
    parts = _split_query(query)
    if parts is None:
        raise _bad_query(query, "it does not have that form")
    optimise, target, constraint, op, raw_value = parts
    if optimise.lower() not in ("maximum", "minimum"):
        raise _bad_query(query, f"it must start with 'maximum' or 'minimum', not {optimise!r}")
    target, constraint = target.lower(), constraint.lower()
    for role, stat in (("optimised", target), ("constraint", constraint)):
        if stat not in QUERYABLE_STATS:
            raise _bad_query(query, f"unknown {role} stat {stat!r}")
    if op not in (">=", "<="):
        raise _bad_query(query, f"the comparison must be '>=' or '<=', not {op!r}")
    try:
        value = float(raw_value)
    except ValueError:
        value = float("nan")
    if not np.isfinite(value):
        raise _bad_query(query, f"{raw_value!r} is not a finite number")
    return ThresholdQuery(optimise.lower(), target, constraint, op, value)  # type: ignore[arg-type]


def answer_threshold_query(table: dict[str, list[Any]], query: str | ThresholdQuery) -> dict[str, Any] | None:
    """The table row that best answers ``query``, or None when no threshold satisfies it.

    Rows whose constraint stat is undefined never satisfy the constraint, and
    rows whose target is undefined are never chosen. Ties on the target go to
    the HIGHEST threshold: the most conservative choice, flagging the fewest
    items for the same value of the optimised statistic (ORES kept whichever
    row it met first, which depended on iteration order).
    """
    q = parse_threshold_query(query) if isinstance(query, str) else query
    # float arrays turn the table's None into NaN, and NaN compares False.
    constraint = np.asarray(table[q.constraint], dtype=float)
    target = np.asarray(table[q.target], dtype=float)
    satisfied = (constraint >= q.value) if q.op == ">=" else (constraint <= q.value)
    candidates = np.flatnonzero(satisfied & ~np.isnan(target))
    if len(candidates) == 0:
        return None
    values = target[candidates]
    best = values.max() if q.optimise == "maximum" else values.min()
    tied = candidates[values == best]
    row = int(tied[np.argmax(np.asarray(table["threshold"], dtype=float)[tied])])
    return {column: values_[row] for column, values_ in table.items()}
