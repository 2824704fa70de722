"""Whole-run progress: every step says which of how many, the time gone and what is left."""

from __future__ import annotations

from assay.modelling.progress import RunProgress, duration


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_steps_say_their_place_the_time_gone_and_an_estimate() -> None:
    clock, lines = Clock(), []
    run = RunProgress(lines.append, clock)
    run.stage("fold", 4)
    for seconds in (2.0, 4.0, 3.0, 3.0):
        clock.now += seconds
        run.step("lightgbm")
    assert lines == [
        "  fold 1 of 4 (lightgbm) | 2.0s gone, about 6.0s left",
        "  fold 2 of 4 (lightgbm) | 6.0s gone, about 6.0s left",
        "  fold 3 of 4 (lightgbm) | 9.0s gone, about 3.0s left",
        "  fold 4 of 4 (lightgbm) | 12s gone",
    ]


def test_a_new_stage_estimates_from_its_own_steps_and_one_step_stages_say_start_and_end() -> None:
    clock, lines = Clock(), []
    run = RunProgress(lines.append, clock)
    run.stage("fold", 1)
    clock.now += 50
    run.step()
    run("best candidate: lightgbm")
    since = run.begin("refitting lightgbm")
    clock.now += 7
    run.end("refitted", since)
    run.stage("feature", 3)
    clock.now += 1
    run.step("words_added")
    assert lines[1:] == [
        "best candidate: lightgbm | 50s gone",
        "refitting lightgbm | 50s gone",
        "  refitted in 7.0s | 57s gone",
        "  feature 1 of 3 (words_added) | 58s gone, about 2.0s left",
    ]


def test_durations_read_short() -> None:
    assert [duration(s) for s in (0.04, 9.9, 10.2, 65, 3725)] == ["0.0s", "9.9s", "10s", "1m05s", "1h02m"]
