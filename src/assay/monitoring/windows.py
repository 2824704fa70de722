"""Windows over the prediction log: by time (aligned to the clock) or by a number of rows.

A time window of 1d covers a UTC day, 6h a quarter of one: windows are aligned to multiples of
their length since the UNIX epoch, so the same rows fall in the same window whoever asks and
whenever. A count window is a run of consecutive rows in log order. Only closed windows are
judged by alerting (a time window once its end has passed, a count window once it is full);
reports show the open one too, marked as such.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from assay.errors import InvalidInput
from assay.modelling.spec import parse_duration

MAX_WINDOWS = 5000


@dataclass(frozen=True)
class Window:
    start: float  # UNIX seconds (count windows: the first row's time)
    end: float  # exclusive (count windows: the last row's time)
    lo: int  # rows [lo, hi) of the time-sorted frame
    hi: int
    closed: bool

    @property
    def n(self) -> int:
        return self.hi - self.lo


@dataclass(frozen=True)
class WindowSpec:
    """``seconds`` for time windows or ``rows`` for count windows (exactly one is set)."""

    seconds: float | None = None
    rows: int | None = None

    @classmethod
    def parse(cls, value: str | int) -> WindowSpec:
        """``"6h"``-style durations, or a row count (an int, or digits like ``"1000"``)."""
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 1:
                raise InvalidInput("a window of rows needs at least 1 row", field="window")
            return cls(rows=value)
        text = str(value).strip()
        if text.isdigit():
            return cls.parse(int(text))
        try:
            return cls(seconds=parse_duration(text))
        except ValueError as exc:
            raise InvalidInput(str(exc), field="window") from None

    @property
    def kind(self) -> str:
        return "time" if self.seconds is not None else "count"

    def __str__(self) -> str:
        if self.rows is not None:
            return f"{self.rows} rows"
        assert self.seconds is not None
        for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
            if self.seconds % size == 0:
                return f"{int(self.seconds // size)}{unit}"
        return f"{self.seconds:g}s"


def time_windows(at: np.ndarray, seconds: float, *, since: float | None, until: float) -> list[Window]:
    """Clock-aligned windows from ``since`` (default: the first row) to ``until``.

    ``at`` must be sorted. Windows without rows are kept (a gap in traffic is worth seeing).
    """
    if not len(at) and since is None:
        return []
    first = float(at[0]) if since is None else since
    start = math.floor(first / seconds) * seconds
    count = max(0, math.ceil((until - start) / seconds))
    if count > MAX_WINDOWS:
        raise InvalidInput(
            f"{count} windows of {seconds:g}s between {first:.0f} and {until:.0f}: more than {MAX_WINDOWS}; "
            "take longer windows or a shorter period",
            field="window",
        )
    edges = start + seconds * np.arange(count + 1)
    cuts = np.searchsorted(at, edges, side="left")
    return [
        Window(
            float(edges[i]), float(edges[i + 1]), int(cuts[i]), int(cuts[i + 1]), bool(edges[i + 1] <= until)
        )
        for i in range(count)
    ]


def count_windows(at: np.ndarray, rows: int) -> list[Window]:
    """Runs of ``rows`` consecutive rows; the last one, if short, is open."""
    n = len(at)
    if -(-n // rows) > MAX_WINDOWS:
        raise InvalidInput(
            f"{n} rows in windows of {rows} is more than {MAX_WINDOWS} windows; take longer windows",
            field="window",
        )
    return [
        Window(float(at[lo]), float(at[min(lo + rows, n) - 1]), lo, min(lo + rows, n), lo + rows <= n)
        for lo in range(0, n, rows)
    ]


def parse_time(text: str, *, now: float, field: str = "since") -> float:
    """UNIX seconds of a moment: an ISO date or time (UTC unless it says otherwise), a duration
    back from ``now`` (``7d``: a week ago) or a number of seconds since the epoch."""
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise InvalidInput(f"{text!r} is not a time", field=field)
        return seconds
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"{text!r} is not a time: give an ISO date or time (2026-01-31, 2026-01-31T12:00), "
            "a duration back from now (7d, 12h) or UNIX seconds",
            field=field,
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
