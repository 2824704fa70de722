"""A retraining run: the production version's spec re-run on the data as it is now, and the
challenger it trains promoted only if it passes its gates against the champion on the same rows.

One run: check its trigger (new labels, a monitoring alert; none when run by hand or on a
schedule), record the run, freeze the training data (``snapshot``), refuse data that has shrunk
below the spec's ``[retraining]`` floors, lost a class or changed its features, train the
challenger (published as a version, aliased ``candidate``), compare it with the champion on the
newer held-out data, and promote it when it is significantly better there and its gates pass. Every run is
recorded with its outcome and the decision in one line (``runs``).

Each step that changes the registry is atomic (a version is published in one rename and one
transaction, an alias moves in one transaction), so a run killed at any point leaves the
production alias where it was and no half-written version; its run stays ``running`` until the
next run of the model marks it ``interrupted``.
"""

from __future__ import annotations

import fcntl
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assay.engines.engine import open_engine
from assay.errors import AssayError, Conflict, DataError
from assay.modelling.comparison import Comparison, spec_of
from assay.modelling.datasets import feature_kinds
from assay.modelling.progress import Progress
from assay.modelling.promotion import challenge
from assay.modelling.significance import DEFAULT_RESAMPLES
from assay.modelling.spec import ModelSpec
from assay.modelling.training import train
from assay.monitoring.alerts import states
from assay.registry.contracts import VersionRecord
from assay.retraining import runs
from assay.retraining.snapshot import Snapshot, base_spec, count_later_labels, take_snapshot
from assay.unlearning.sharding import training_options
from assay.workspace import Workspace

TRAINED = ("promoted", "kept")  # outcomes of runs that trained a challenger


@dataclass(frozen=True)
class Triggers:
    """When a run goes ahead: always, or only with enough new labels or a monitor in alert."""

    min_new_labels: int = 0
    on_alert: bool = False
    name: str = "manual"


@dataclass
class Outcome:
    status: str  # skipped (no run recorded) | promoted | kept | refused | failed
    message: str
    run_id: int | None = None
    champion: VersionRecord | None = None
    challenger: VersionRecord | None = None
    comparison: Comparison | None = None


def retrain(
    ws: Workspace,
    model: str,
    *,
    actor: str,
    triggers: Triggers = Triggers(),
    resamples: int = DEFAULT_RESAMPLES,
    require_better: bool = True,
    progress: Progress | None = None,
) -> Outcome:
    """One retraining run of ``model``'s production version (see the module's docstring).

    By default the challenger must be significantly better than the champion on the same rows;
    ``require_better=False`` promotes one that is merely not significantly worse (the gates still
    apply either way).
    """
    say = progress or (lambda _m: None)
    champion = ws.registry.resolve(model)
    with _exclusive(ws.settings.home / "retraining" / champion.model):
        runs.mark_interrupted(ws.engine, model)
        trigger = _triggered(ws, champion, triggers)
        if trigger is None:
            return Outcome("skipped", _skip_reason(ws, champion, triggers))
        run_id = runs.start_run(ws.engine, model, trigger=trigger, actor=actor, champion=champion.version)
        return _run(
            ws, champion, run_id, actor=actor, resamples=resamples, require_better=require_better, say=say
        )


@contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """One run of a model at a time (per store folder): a second one is refused, not queued. The
    lock is the operating system's, so a killed run releases it."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Conflict(f"another retrain of {folder.name!r} is running") from None
        yield


def _run(
    ws: Workspace, champion: VersionRecord, run_id: int, *, actor: str, resamples: int, require_better: bool,
    say: Progress,
) -> Outcome:  # fmt: skip
    """Snapshot, checks and training of a recorded run, then its judgement."""
    folder = ws.settings.home / "retraining" / champion.model / f"run-{run_id}"
    snapshot: Snapshot | None = None
    try:
        spec = base_spec(champion, spec_of(champion))
        snapshot = take_snapshot(ws.engine, ws.log, ws.registry, champion, spec, folder)
        say(_describe(snapshot))
        _refuse_unusable(ws, champion, spec, snapshot)
        trained = snapshot.spec_for(spec)
        result = train(
            trained, ws.registry, progress=say, actor=actor,
            lineage_extra={"labels": dict(snapshot.facts)},
            engine=open_engine(ws.settings.engine, ws.settings.ray_address, ws.settings.train_jobs),
            **training_options(ws.engine, trained),
        )  # fmt: skip
    except AssayError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        status = "refused" if isinstance(exc, DataError) else "failed"
        message = f"retrain {status}: {exc.message}"
        runs.finish_run(ws.engine, run_id, status, message, labels=snapshot and dict(snapshot.facts))
        return Outcome(status, message, run_id)
    except Exception as exc:
        shutil.rmtree(folder, ignore_errors=True)
        runs.finish_run(ws.engine, run_id, "failed", f"retrain failed: {type(exc).__name__}: {exc}")
        raise
    return _judge(
        ws,
        champion,
        result.record,
        snapshot,
        run_id,
        actor=actor,
        resamples=resamples,
        require_better=require_better,
    )


def _judge(
    ws: Workspace, champion: VersionRecord, challenger: VersionRecord, snapshot: Snapshot, run_id: int,
    *, actor: str, resamples: int, require_better: bool,
) -> Outcome:  # fmt: skip
    """Compare the challenger with the champion on the same rows; promote it if it is significantly
    better (or, without ``require_better``, not significantly worse) and its gates pass."""
    facts: dict[str, Any] = {"challenger_version": challenger.version, "labels": dict(snapshot.facts)}

    def finish(status: str, message: str, comparison: Comparison | None, gates: Any = None) -> Outcome:
        record = {"comparison": comparison and comparison.to_dict(), "gates": gates}
        runs.finish_run(ws.engine, run_id, status, message, **facts, comparison=record)
        return Outcome(status, message, run_id, champion, challenger, comparison)

    try:
        comparison = challenge(ws.registry, champion, challenger, resamples=resamples)
    except AssayError as exc:
        return finish(
            "kept",
            f"kept {champion.ref}: {challenger.ref} could not be compared with it: {exc.message}",
            None,
        )
    verdict = comparison.verdict()
    if require_better and not verdict.startswith(f"{challenger.ref} is significantly better"):
        return finish("kept", f"kept {champion.ref}: {verdict}", comparison)
    reason = f"retrain run {run_id}: {verdict}; labels {snapshot.facts['fingerprint'][:12]}"
    try:
        gates = ws.registry.promote(
            challenger.model, challenger.version, actor=actor, reason=reason, compared=comparison.to_dict()
        )
    except AssayError as exc:  # the gates, or an alias that moved meanwhile
        return finish("kept", f"kept {champion.ref}: {exc.message}", comparison)
    return finish(
        "promoted",
        f"promoted {challenger.ref} over {champion.ref}: {verdict}; its gates pass",
        comparison,
        gates,
    )


def _triggered(ws: Workspace, champion: VersionRecord, triggers: Triggers) -> str | None:
    """The trigger that lets this run go ahead, or None."""
    if triggers.on_alert:
        alerting = [s["monitor"] for s in states(ws.engine, champion.model) if s["state"] == "alert"]
        if not alerting:
            return None
        return f"alert:{','.join(alerting)}"
    if triggers.min_new_labels > 0:
        new = _new_labels(ws, champion)
        return f"labels:{new}" if new >= triggers.min_new_labels else None
    return triggers.name


def _new_labels(ws: Workspace, champion: VersionRecord) -> int:
    """Labels gathered now (campaigns and the label API) beyond those the last run that trained
    learnt from, or, before any, those the champion learnt from: a run whose challenger was not
    promoted has had its look at the labels it used."""
    last = next(
        (r.labels for r in runs.list_runs(ws.engine, champion.model) if r.status in TRAINED and r.labels),
        None,
    )
    before = last or champion.lineage.get("labels")
    campaign = before["base_campaign"] if before else champion.spec["data"].get("campaign")
    used = 0
    if before:
        used = sum(n for name, n in before["campaigns"].items() if name != campaign) + before["api"]
    return count_later_labels(ws.engine, champion.model, campaign) - used


def _skip_reason(ws: Workspace, champion: VersionRecord, triggers: Triggers) -> str:
    if triggers.on_alert:
        return f"skipped: no monitor of {champion.model} is in alert"
    return f"skipped: {_new_labels(ws, champion)} new labels since {champion.ref}, fewer than {triggers.min_new_labels}"


def _describe(snapshot: Snapshot) -> str:
    f = snapshot.facts
    campaigns = ", ".join(f"{k} {v}" for k, v in f["campaigns"].items()) or "none"
    return (
        f"label snapshot {f['fingerprint'][:12]}: {f['rows']} training rows; campaign labels: {campaigns}; "
        f"label API: {f['api']}; relabelled {f['relabelled']}, added {f['added']} from the log, left out "
        f"{f['held_out']} held-out and {f['without_features']} without features"
    )


def _refuse_unusable(ws: Workspace, champion: VersionRecord, spec: ModelSpec, snapshot: Snapshot) -> None:
    """Refuse data that shrank below the floors, lost a class or changed its features (DataError)."""
    floor = spec.retraining
    rows, before = snapshot.facts["rows"], champion.lineage["train_rows"]
    if rows < floor.min_rows:
        raise DataError(f"{rows} training rows, fewer than retraining.min_rows = {floor.min_rows}")
    if rows < floor.min_share * before:
        raise DataError(
            f"{rows} training rows, fewer than retraining.min_share = {floor.min_share:g} of the "
            f"{before} {champion.ref} learnt from"
        )
    loaded = ws.registry.load(champion)
    lost = sorted(set(loaded.classes) - set(snapshot.labels.tolist()))
    if lost:
        raise DataError(f"class {lost[0]!r}, which {champion.ref} predicts, is gone from the training data")
    kinds = feature_kinds(spec, snapshot.frame, source=str(snapshot.path))
    before_kinds = {f.name: f.kind for f in loaded.schema.features}
    changed = [
        f"{n} is {before_kinds.get(n, 'new')} -> {kinds.get(n, 'gone')}"
        for n in sorted(set(kinds) | set(before_kinds))
        if kinds.get(n) != before_kinds.get(n)
    ]
    if changed:
        raise DataError(f"the data's features changed since {champion.ref}: {'; '.join(changed[:5])}")


def retrain_every(
    ws: Workspace, model: str, every_s: float, *, actor: str, triggers: Triggers, resamples: int,
    require_better: bool, report: Callable[[Outcome], None], rounds: int | None = None,
) -> None:  # fmt: skip
    """Run ``retrain`` every ``every_s`` seconds (``rounds`` times, or until stopped)."""
    done = 0
    while rounds is None or done < rounds:
        started = time.monotonic()
        report(
            retrain(
                ws, model, actor=actor, triggers=triggers, resamples=resamples, require_better=require_better
            )
        )
        done += 1
        if rounds is None or done < rounds:
            time.sleep(max(0.0, every_s - (time.monotonic() - started)))
