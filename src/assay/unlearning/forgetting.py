"""Forgetting items on request, everywhere assay holds them.

``forget`` runs in three steps, so that a forget killed at any point can be resumed and never
leaves an alias on a version that still holds forgotten data:

1. Read only: which versions' data hold the ids (training or held-out rows), which data files
   the user owns hold them, and which ids are found nowhere.
2. One transaction: the request is recorded (salted id hashes only), the ids join the model's
   exclusion list, their rows go from every store (review items with their assignments and
   labels, judgments with their endorsements and comments, feature rows, monitoring labels,
   the prediction log), and every version that held them is retired: its aliases are removed
   at once, so from this commit on nothing serves a model that holds the data. Cached scores
   are dropped after the commit.
3. ``carry_out`` (and ``resume``, which is the same): each retired version that held aliases is
   replaced by a version trained without the ids — a sharded one retrains only the shards that
   held them, from the slice the first joined; any other is retrained in full — which takes
   over the aliases; then the retired versions' files are deleted unless legal hold keeps them.
   Every step records its progress in the request, so a resumed one skips what is done.

``verify`` trains each replacement again from scratch on the data without the ids and checks
that its held-out predictions are equal, bit for bit.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from assay.engines.engine import Engine as WorkEngine
from assay.errors import AssayError, Conflict, InvalidInput
from assay.heap import frozen_heap
from assay.modelling.candidates import CANDIDATES
from assay.modelling.datasets import read_once, read_table
from assay.modelling.plots import figures_of
from assay.modelling.preparation import CampaignLabels, Prepared, prepare
from assay.modelling.progress import Progress
from assay.modelling.publication import Refitted, plain_refit, reference_row, register
from assay.modelling.selection import CandidateResult, compare
from assay.modelling.spec import ModelSpec
from assay.monitoring.labels import forget_labels
from assay.registry.artifacts import load_model, save_model
from assay.registry.contracts import VersionRecord
from assay.registry.ensemble import is_sharded, read_sharded
from assay.registry.versions import Registry
from assay.review.erasure import forget_items as forget_review_items
from assay.review.exports import forget_in_exports
from assay.serving.cache import ScoreCache, score_key
from assay.serving.features import delete_rows
from assay.store import db, tables
from assay.store.log_store import LogStore
from assay.unlearning import exclusions, requests
from assay.unlearning.requests import ForgetRequest
from assay.unlearning.sharding import assign, fit_shards, recorded_plan, shard_plan

MAX_IDS = 100_000  # ids one request may name
MAX_ID_CHARS = 200  # as long as the stores' item ids


@dataclass
class Forgetting:
    """What a forget works with: the store, the registry and the caches it must clean."""

    engine: sa.engine.Engine
    registry: Registry
    log: LogStore  # the prediction log's rows (the log_backend setting)
    cache: ScoreCache | None = None
    legal_hold: bool = False
    campaign_labels: CampaignLabels | None = None
    say: Progress = lambda _m: None
    work: WorkEngine | None = None  # where a full retrain's folds run (the ASSAY_ENGINE setting)


def check_ids(ids: Sequence[Any]) -> list[str]:
    """The ids as strings, each once; refuses an empty list, too many, or a malformed one."""
    if not ids:
        raise InvalidInput("name at least one item id to forget", field="ids")
    if len(ids) > MAX_IDS:
        raise InvalidInput(f"a request may name at most {MAX_IDS} ids; got {len(ids)}", field="ids")
    out = []
    for i, item in enumerate(ids):
        if not isinstance(item, str | int) or isinstance(item, bool):
            raise InvalidInput(f"ids[{i}] must be a string or an integer", field="ids")
        text = str(item)
        if not text or len(text) > MAX_ID_CHARS or not text.isprintable():
            raise InvalidInput(f"ids[{i}] must be 1-{MAX_ID_CHARS} printable characters", field="ids")
        out.append(text)
    return list(dict.fromkeys(out))


def forget(f: Forgetting, models: Sequence[str], ids: Sequence[Any], *, actor: str) -> ForgetRequest:
    """Record a deletion request for ``ids`` under ``models`` and carry it out (see the module).
    The data files are parsed once: finding the ids and retraining read the same ones."""
    with read_once(), frozen_heap():
        return carry_out(f, record(f, models, ids, actor=actor))


def record(f: Forgetting, models: Sequence[str], ids: Sequence[Any], *, actor: str) -> int:
    """Steps 1 and 2: find the ids, record the request, delete the stores' rows and retire the
    versions that held them (their aliases go at once); returns the request's number."""
    ids = check_ids(ids)
    for model in models:
        f.registry.model(model)  # an unknown model is refused before anything is written
    started = time.perf_counter()
    key = exclusions.salt(f.engine)
    holdings = {model: _holdings(f, model, ids) for model in models}
    found = {i for h in holdings.values() for v in h for i in v.train | v.test}
    files = _files(holdings)
    with f.engine.begin() as conn:
        found |= _in_stores(conn, models, ids) | f.log.holding(models, ids)
        request_id = requests.open_request(
            conn,
            actor=actor,
            models=list(models),
            id_hashes=exclusions.id_hashes(key, ids),
            unknown=exclusions.id_hashes(key, [i for i in ids if i not in found]),
            files=files,
        )
        stores, plan = {}, []
        for model in models:
            exclusions.add(conn, model, key, ids, request_id)
            stores[model] = _delete_everywhere(conn, f.log, model, ids)
            for held in holdings[model]:
                aliases = f.registry.retire(conn, model, held.record.version, request_id=request_id)
                plan.append(_plan_entry(held, aliases))
        requests.update(
            conn, request_id, stores=stores, versions=plan, seconds=round(time.perf_counter() - started, 3)
        )
    if f.cache is not None:
        for model in models:
            versions = f.registry.model(model).versions
            f.cache.delete_many([score_key(model, v, i) for v in versions for i in ids])
    f.say(
        f"request {request_id}: {len(plan)} version(s) held the data; {len(ids) - len(found)} id(s) unknown"
    )
    return request_id


def resume(f: Forgetting, request_id: int) -> ForgetRequest:
    """Finish a request a killed process left running (steps 1 and 2 are in the store)."""
    request = requests.get_request(f.engine, request_id)
    if request.status == requests.DONE:
        raise Conflict(f"deletion request {request_id} is already done", field="request")
    with frozen_heap():
        return carry_out(f, request_id)


def carry_out(f: Forgetting, request_id: int) -> ForgetRequest:
    """Step 3: replace, re-alias and clean up every retired version; progress is saved as it goes.
    The request's time adds this step's to what the earlier steps (and runs) took."""
    started = time.perf_counter()
    request = requests.get_request(f.engine, request_id)
    plan = [dict(entry) for entry in request.versions]
    try:
        requests.update(f.engine, request_id, files=_clean_exports(f, request))
        for entry in plan:
            if entry["aliases"] and entry.get("replacement") is None and entry["mode"] != "unreadable":
                _replace(f, request_id, entry)
                requests.update(f.engine, request_id, versions=plan)
        for entry in plan:
            if not f.legal_hold and not entry.get("artifacts_deleted"):
                f.registry.delete_artifacts(entry["model"], entry["version"])
                entry["artifacts_deleted"] = True
        seconds = (request.seconds or 0.0) + time.perf_counter() - started
        requests.update(
            f.engine,
            request_id,
            versions=plan,
            status=requests.DONE,
            finished_at=db.now(),
            seconds=round(seconds, 3),
        )
    except AssayError as exc:
        requests.update(f.engine, request_id, versions=plan, error=exc.message)
        raise
    return requests.get_request(f.engine, request_id)


# --- step 1: where the ids are ---------------------------------------------------------


@dataclass
class _Holding:
    """The requested ids one version's data held (all ids when its data cannot be read)."""

    record: VersionRecord
    train: set[str]
    test: set[str]
    files: dict[str, int]  # path -> requested ids in it
    readable: bool = True


def _holdings(f: Forgetting, model: str, ids: list[str]) -> list[_Holding]:
    """The live versions of ``model`` whose training or held-out data hold any of ``ids``."""
    wanted = set(ids)
    retired = f.registry.retired(model)
    out = []
    cache: dict[tuple[str, ...], tuple[set[str], dict[str, int]]] = {}
    for version in f.registry.model(model).versions:
        if version in retired:
            continue
        record = f.registry.get(model, version)
        spec = ModelSpec.from_dict(record.spec)
        excluded = exclusions.ExclusionList(
            f.engine, model, through=record.lineage.get("unlearning", {}).get("exclusions_through", 0)
        )
        try:
            train, train_files = _ids_in(spec, spec.data.train, wanted, cache)
            test, test_files = _ids_in(spec, spec.data.test, wanted, cache)
        except (OSError, AssayError, ValueError):
            out.append(_Holding(record, set(wanted), set(), {}, readable=False))
            continue
        drop = {i for i in train | test if excluded.mask(np.array([i]))[0]}  # left out at training
        if (train | test) - drop:
            out.append(_Holding(record, train - drop, test - drop, {**train_files, **test_files}))
    return out


def _ids_in(
    spec: ModelSpec,
    paths: list[str],
    wanted: set[str],
    cache: dict[tuple[str, ...], tuple[set[str], dict[str, int]]],
) -> tuple[set[str], dict[str, int]]:
    """The wanted ids in ``paths``' id column, and how many each file holds."""
    key = (spec.data.id, *paths)
    if key not in cache:
        d = spec.data
        found, per_file = set(), {}
        for path in paths:
            frame = read_table(path, header=d.header, columns=d.columns or None, sep=d.sep)
            ids = frame[d.id].astype(str)
            there = set(ids[ids.isin(wanted)])
            found |= there
            if there:
                per_file[path] = len(there)
        cache[key] = (found, per_file)
    return cache[key]


def _files(holdings: dict[str, list[_Holding]]) -> list[dict[str, Any]]:
    """The user's data files that still hold requested ids: assay lists them, never rewrites them."""
    files: dict[str, int] = {}
    for held in (h for hs in holdings.values() for h in hs):
        files.update(held.files)
    return [{"path": p, "ids": n} for p, n in sorted(files.items())]


def _in_stores(conn: sa.Connection, models: Sequence[str], ids: list[str]) -> set[str]:
    """The ids any store's table holds under ``models`` (the prediction log is asked apart)."""
    found: set[str] = set()
    holders = (tables.feature_rows, tables.monitor_labels, tables.judgments)
    items, campaigns = tables.campaign_items, tables.campaigns
    for lo in range(0, len(ids), 500):
        part = ids[lo : lo + 500]
        for table in holders:
            query = sa.select(table.c.item_id).where(table.c.model.in_(models), table.c.item_id.in_(part))
            found.update(conn.execute(query).scalars())
        query = (
            sa.select(items.c.item_id)
            .join(campaigns, campaigns.c.id == items.c.campaign_id)
            .where(campaigns.c.model.in_(models), items.c.item_id.in_(part))
        )
        found.update(conn.execute(query).scalars())
    return found


# --- step 2: the stores -----------------------------------------------------------------


def _delete_everywhere(conn: sa.Connection, log: LogStore, model: str, ids: list[str]) -> dict[str, int]:
    """Delete ``ids``' rows from every store of ``model`` in the caller's transaction (the
    prediction log's files, when it is kept in files, at once: a rolled-back request has
    forgotten them from there already, which a retry does again harmlessly). On SQLite what is
    deleted is overwritten with zeros, not just freed, whatever the build's default."""
    with db.secure_delete(conn, "on"):
        return {
            **forget_review_items(conn, ids, model=model),
            "feature_rows": delete_rows(conn, model, ids),
            "monitor_labels": forget_labels(conn, model, ids),
            "prediction_log": log.forget(conn, model, ids),
        }


def _plan_entry(held: _Holding, aliases: dict[str, int]) -> dict[str, Any]:
    """What step 3 will do for one retired version (shards and slices come from the ids now,
    as the audit keeps no id)."""
    record = held.record
    entry: dict[str, Any] = {"model": record.model, "version": record.version, "aliases": aliases}
    if not held.readable:
        entry["mode"] = "unreadable"
    elif is_sharded(record.manifest):
        plan = recorded_plan(record.lineage)
        shard, slice_ = assign(np.array(sorted(held.train)), plan["shards"], plan["slices"], plan["seed"])
        start: dict[str, int] = {}
        for s, r in zip(shard.tolist(), slice_.tolist(), strict=True):
            start[str(s)] = min(start.get(str(s), r), r)
        entry.update(mode="shards", start=start)
    else:
        entry["mode"] = "full"
    return entry


# --- step 3: label exports and replacements ---------------------------------------------


def _clean_exports(f: Forgetting, request: ForgetRequest) -> list[dict[str, Any]]:
    """The request's files, with the label files ``assay labels export`` wrote for its models
    rewritten without every forgotten item while they are as assay wrote them (else listed)."""
    exported = {e["path"]: e for e in request.files if e.get("status")}
    for model in request.models:
        for entry in forget_in_exports(f.engine, model, exclusions.ExclusionList(f.engine, model).mask):
            exported[entry["path"]] = entry
    return [e for e in request.files if not e.get("status")] + [exported[p] for p in sorted(exported)]


def _replace(f: Forgetting, request_id: int, entry: dict[str, Any]) -> None:
    """Train the replacement of a retired version and give it the version's aliases."""
    started = time.perf_counter()
    old = f.registry.get(entry["model"], entry["version"], retired_ok=True)
    spec = ModelSpec.from_dict(old.spec, source=f"the spec of {old.ref}")
    f.say(f"replacing {old.ref} ({entry['mode']})")
    data = prepare(spec, f.campaign_labels, f.say, exclusions.ExclusionList(f.engine, old.model))
    card = f.registry.card(old)
    forgot = {"request": request_id, "replaces": old.version}
    importance = None
    if entry["mode"] == "shards":
        winner, comparison, search = _winner(card, old)
        refit, shards = _continued(f, old, data, entry, card, forgot)
        # A few rows less do not move it, and it costs many predictions; the card says whose it is.
        importance = [dict(i) for i in card["importance"]]
    else:
        comparison, winner, search = compare(spec, data, f.say, f.work)
        refit, shards = _full(forgot), None
    record, _ev = register(
        spec,
        f.registry,
        data,
        refit,
        winner,
        comparison,
        search,
        started=started,
        say=f.say,
        importance=importance,
    )
    for alias in sorted(entry["aliases"]):
        f.registry.set_alias(
            old.model,
            alias,
            record.version,
            actor="assay forget",
            reason=f"deletion request {request_id}: replaces {old.ref}, which held forgotten data",
            forced=False,
            gates=[],
        )
    entry.update(
        replacement=record.version, retrained_shards=shards, seconds=round(time.perf_counter() - started, 3)
    )
    f.say(f"{record.ref} replaces {old.ref}: aliases {', '.join(sorted(entry['aliases']))}")


def _winner(card: Any, old: VersionRecord) -> tuple[CandidateResult, list[CandidateResult], Any]:
    """The version's chosen candidate and comparison, as its card recorded them (not searched again)."""
    comparison = [
        CandidateResult(c["candidate"], dict(c["params"]), list(c["fold_scores"]), list(c["fit_times"]))
        for c in card["comparison"]
    ]
    mine = next(c for c in comparison if c.candidate == old.candidate)
    winner = CandidateResult(old.candidate, dict(old.lineage["params"]), mine.fold_scores, mine.fit_times)
    return winner, comparison, card["search"]


def _continued(
    f: Forgetting,
    old: VersionRecord,
    data: Prepared,
    entry: dict[str, Any],
    card: Any,
    forgot: dict[str, Any],
) -> tuple[Callable[..., Refitted], list[int]]:
    """The Refit that continues the old version's shards, and which shards it retrains.

    Only when the version was trained on these very files and learned this very schema are its
    other shards what a training without the ids would give; otherwise every shard is retrained.
    """
    spec = ModelSpec.from_dict(old.spec)
    plan = recorded_plan(old.lineage)
    shards, slices = plan["shards"], plan["slices"]
    u = old.lineage.get("unlearning", {})
    same = (
        u.get("source_fingerprint") == data.source_fingerprint
        and bool(spec.data.test)  # a seeded split moves rows between training and held-out data
        and f.registry.read_json(old, "schema.json") == data.schema.to_dict()
    )
    start = {int(s): r for s, r in entry["start"].items()} if same else dict.fromkeys(range(shards), 0)
    previous = read_sharded(old.directory, old.manifest, start) if same else None
    # Drawing the card's figures again costs more than the retraining; the card says whose they are.
    figures = figures_of(f.registry.read_bytes(old, "card.html").decode("utf-8"))
    if not same:
        f.say("  the data or schema changed since this version: every shard is retrained")

    def refit(spec: ModelSpec, data: Prepared, winner: CandidateResult, say: Progress) -> Refitted:
        model = fit_shards(data, winner.params, plan, previous=previous, start=start, say=say)
        note = dict(card.get("unlearning", {}))
        note["note"] = (
            f"{shards} shard(s) of {slices} slice(s); forgetting request {forgot['request']} "
            f"retrained shard(s) {sorted(start) or 'none'} (cost and curve measured when {old.ref} was trained)"
        )
        note.setdefault("fast", True)
        # What the replacement keeps from the version it replaces instead of measuring it again.
        note["inherited_from"] = card.get("unlearning", {}).get("inherited_from", old.ref)
        lineage = {**model.plan, "forgot": {**forgot, "retrained_shards": sorted(start), "mode": "shards"}}
        return Refitted(model, note, lineage, figures=figures)

    return refit, sorted(start)


def _full(forgot: dict[str, Any]) -> Callable[..., Refitted]:
    def refit(spec: ModelSpec, data: Prepared, winner: CandidateResult, say: Progress) -> Refitted:
        refitted = plain_refit(spec, data, winner, say)
        refitted.lineage["forgot"] = {**forgot, "mode": "full"}
        refitted.card["note"] = f"one model: forgetting request {forgot['request']} retrained it in full"
        return refitted

    return refit


# --- verification -----------------------------------------------------------------------


def verify(f: Forgetting, request_id: int) -> dict[str, Any]:
    """Train every replacement again from scratch without the ids; compare held-out predictions."""
    request = requests.get_request(f.engine, request_id)
    results = []
    for entry in request.versions:
        if entry.get("replacement") is None:
            continue
        started = time.perf_counter()
        new = f.registry.get(entry["model"], entry["replacement"], retired_ok=True)
        spec = ModelSpec.from_dict(new.spec)
        through = new.lineage.get("unlearning", {}).get("exclusions_through", 0)
        data = prepare(
            spec, f.campaign_labels, f.say, exclusions.ExclusionList(f.engine, new.model, through=through)
        )
        served = f.registry.load(new).predictor.predict_proba(data.X_test)
        scratch = _from_scratch(spec, data, new)
        results.append(
            {
                "model": new.model,
                "version": new.version,
                "rows": len(data.X_test),
                "equal": bool(np.array_equal(served, scratch)),
                "max_abs_diff": float(np.max(np.abs(served - scratch))) if len(served) else 0.0,
                "seconds": round(time.perf_counter() - started, 3),
            }
        )
        f.say(f"{new.ref}: held-out predictions {'equal' if results[-1]['equal'] else 'DIFFER'} bit for bit")
    verification = {
        "checked_at": db.now().isoformat(),
        "equal": all(r["equal"] for r in results),
        "versions": results,
    }
    requests.update(f.engine, request_id, verification=verification)
    return verification


def _from_scratch(spec: ModelSpec, data: Prepared, new: VersionRecord) -> np.ndarray:
    """Held-out probabilities of the version's model trained from nothing on ``data``."""
    params = dict(new.lineage["params"])
    wanted = spec.training.unlearning
    if wanted is not None and is_sharded(new.manifest):
        recorded = recorded_plan(new.lineage)
        # The plan a training of the spec would choose now (a plan recorded before shards had
        # their own thread, or before learning rates were scaled, is repeated as it was).
        plan = shard_plan(wanted, params, data.read_rows, spec.seed) if "threads" in recorded else recorded
        return fit_shards(data, params, plan).predictor().predict_proba(data.X_test)
    candidate = CANDIDATES[new.candidate]
    estimator = candidate.fit(
        candidate.estimator(params, data.schema, spec.seed), data.X, data.y, data.schema
    )
    with tempfile.TemporaryDirectory() as tmp:
        # Through the stored form, as the served version was, so both read the same bytes.
        manifest = save_model(estimator, Path(tmp), reference_row(data.X, data.schema))
        return load_model(Path(tmp), manifest).predict_proba(data.X_test)
