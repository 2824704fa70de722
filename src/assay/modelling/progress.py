"""Whole-run progress of a training: which step of how many, the time gone, an estimate of what is left.

A training is a sequence of stages whose sizes are known when each starts: the
cross-validation folds of every candidate (and of every search trial), the refit, the held-out
evaluation, permutation importance (one step per feature) and compilation. ``RunProgress``
prints one line per finished step, on the caller's ``say`` (stderr in the command line), and is
itself a ``say`` that adds the time gone to every other line of the run::

    fold 7 of 20 (lightgbm 2/5): average_precision=0.3312, fit 1.2s | 14s gone, about 26s left

The estimate of a stage's remaining time is its mean time per step so far times the steps
left: folds of different families cost differently, so it is rough until every family has been
seen, and says "about". Stages of one step print when they start and when they end, so no step
of a run is silent for longer than one step takes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Progress = Callable[[str], None]


def duration(seconds: float) -> str:
    """``4.2s``, ``42s``, ``3m05s`` or ``1h02m``: short, and exact enough for an estimate."""
    if seconds < 9.95:
        return f"{max(seconds, 0.0):.1f}s"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class RunProgress:
    """Counts the steps of the current stage and says each with the run's time and an estimate."""

    def __init__(self, say: Progress, clock: Callable[[], float] = time.monotonic) -> None:
        self.say = say
        self.clock = clock
        self.started = clock()
        self._stage = ""
        self._total = 0
        self._done = 0
        self._stage_started = self.started

    def __call__(self, message: str) -> None:
        """Progress a line of the run (reading, refitting, registering) with the time gone."""
        self.say(f"{message} | {self.gone()} gone")

    def gone(self) -> str:
        return duration(self.clock() - self.started)

    def stage(self, name: str, total: int) -> None:
        """Begin a stage of ``total`` steps called ``name`` ("fold", "trial fold", "feature")."""
        self._stage, self._total, self._done = name, max(total, 0), 0
        self._stage_started = self.clock()

    def step(self, detail: str = "") -> None:
        """One step of the stage is done: say which, the time gone and the estimate."""
        self._done += 1
        spent = self.clock() - self._stage_started
        left = self._total - self._done
        estimate = f", about {duration(spent / self._done * left)} left" if left > 0 else ""
        detail = f" ({detail})" if detail else ""
        self.say(f"  {self._stage} {self._done} of {self._total}{detail} | {self.gone()} gone{estimate}")

    def begin(self, what: str) -> float:
        """A one-step stage starts: say so (with the time gone); returns its start for ``end``."""
        self.say(f"{what} | {self.gone()} gone")
        return self.clock()

    def end(self, what: str, since: float) -> None:
        self.say(f"  {what} in {duration(self.clock() - since)} | {self.gone()} gone")


def run_progress(say: Progress) -> RunProgress:
    """``say`` itself when it already counts a run, else a run that starts counting now."""
    return say if isinstance(say, RunProgress) else RunProgress(say)
