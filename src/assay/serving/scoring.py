"""The runtime scorer: the ONE scoring path of assay.

The HTTP API, ``assay score`` (batch files), precaching and the review pages all
call a ``Scorer``. It owns:

* the model table it scores with (``table.ModelTable``: which version each
  ``name``, ``name@3`` and ``name@alias`` means, loaded before an alias moves), kept fresh by ``follow(watcher)``
  from the store's notices of any host;
* validation of items and their features (per item: one bad item is an error
  on that item, the others are still scored);
* feature lookup by item id (``features.FeatureTable``), with supplied
  features overriding looked-up ones (ORES's "inject");
* one matrix call per model for a whole batch, the probability of each class,
  the prediction and the operating points each score passes;
* the score cache (``cache.py``) for id-only items, keyed by (model, version, id);
* feature values and explanations on request;
* the prediction log: every computed batch (its ids, encoded rows and
  probabilities) is handed to ``prediction_log``, whose ``record`` only queues
  it (``assay.monitoring.log`` writes it on its own thread and never fails a score);
* speed: single rows through the fast predictor (``predictor.fast_predict``), big
  batches split over a thread pool (``threads``, default all cores).

Public calls::

    scorer = Scorer(registry, FeatureTable(engine), cache, observer=None, threads=None, prediction_log=None, preload=False)
    scorer.score(refs, items, *, features=False, explain=0) -> {"scores": {item_id: {ref: score}}}
    scorer.score_one(ref, item_id, *, features=False, explain=0) -> score      # raises the item's error
    scorer.score_columns(ref, columns, rows, context=None) -> (ServedModel, probabilities, groups)  # bare columns
    scorer.score_frame(ref, frame, *, id_column) -> DataFrame                   # batch files, vectorised
    scorer.precache(refs, ids) -> {"scored": n, "cached": n, "failed": {code: n}}
    scorer.model(ref) -> ServedModel;  scorer.models() -> [ModelInfo];  scorer.refresh();  scorer.close()
    scorer.invalidate(model, ids);  scorer.follow(watcher)      # cached scores of changed items, everywhere

``explain`` is a top-N count (``True`` means 5, at most ``explain.MAX_EXPLAIN``).

``items`` are JSON-like dicts ``{"id": str|int, "features": {name: value},
"context": {name: value}}`` (``features`` and ``context`` optional; ``id``
required). ``context`` declares facts about the item that are not features:
a version mitigated with per-group thresholds reads its attribute's group
there (``groups.GroupDecision``); other keys are not read. A score is
``{"version": "3", "prediction": ..., "probability": {...}}`` plus
``operating_points`` when the model names some, ``decision`` (the group and
threshold the prediction was decided at) for a version with per-group
thresholds, ``features`` and ``explanation`` when asked; an item's failure is
``{"error": {"code", "message", "field"}}``. A score decided from a declared
context is not cached (the cache is keyed by item, not by context). Binary models answer
``prediction`` as a boolean and ``probability`` keyed ``"true"``/``"false"``
(ORES's shape); multiclass models answer the class name and one key per class.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from assay.errors import AssayError, InvalidInput
from assay.registry.versions import ModelInfo, Registry
from assay.serving.cache import ScoreCache, score_key
from assay.serving.explain import check_explain, explain_scores
from assay.serving.features import FeatureTable, item_id_of
from assay.serving.groups import frame_groups, row_groups
from assay.serving.items import features_of, parse_items
from assay.serving.served import ServedModel
from assay.serving.table import ModelTable, ScoringObserver
from assay.store import notices
from assay.store.notices import Notice, NoticeWatcher

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

# Below this many items a row-by-row encode beats setting up column arrays.
# Big batches are split over a thread pool (LightGBM and numpy release the GIL while they work),
# so one request or file uses every core as the model's own batch predict would.
_PARALLEL_MIN_ROWS = 256
_MAX_CHUNK_ROWS = 65_536
_LOG_SLICE = 2 * _MAX_CHUNK_ROWS  # rows of a file predicted, then logged, at a time


class PredictionSink(Protocol):
    """Where computed scores go for monitoring (``assay.monitoring.log.PredictionLog``).

    ``record`` must return at once and must not change the arrays it is given.
    """

    def record(
        self, model: str, version: int, ids: Sequence[str | None] | None, X: np.ndarray, proba: np.ndarray
    ) -> None: ...


class Scorer:
    """Scores items with registry versions; safe to share between threads.

    Build it with the registry, feature table and cache of one workspace, then
    ``refresh()`` (or let the first call do it). A version is loaded when it is first named;
    ``preload=True`` (the server) loads every alias's version at each refresh instead.
    """

    def __init__(
        self,
        registry: Registry,
        features: FeatureTable,
        cache: ScoreCache,
        *,
        observer: ScoringObserver | None = None,
        threads: int | None = None,
        prediction_log: PredictionSink | None = None,
        preload: bool = False,
    ) -> None:
        self.registry = registry
        self.features = features
        self.cache = cache
        self.observer = observer
        self.prediction_log = prediction_log
        self.threads = threads or os.cpu_count() or 1
        self.table = ModelTable(registry, observer, preload=preload)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._batches_now = 0  # big batches being predicted now
        # Names this scorer in the notices it publishes: it has dropped those scores already, and
        # dropping them again when its own notice comes back would also drop scores computed since.
        self._origin = uuid.uuid4().hex

    # --- the model table (``table.ModelTable``) -----------------------------------

    @property
    def ready(self) -> bool:
        """True once the model table has been read (the server answers /readyz with it)."""
        return self.table.ready

    def refresh(self) -> None:
        """Re-read models, versions and aliases (see ``ModelTable.refresh``)."""
        self.table.refresh()

    def models(self) -> list[ModelInfo]:
        """Every model with its versions and aliases, as of the last refresh."""
        return self.table.models()

    def model(self, ref: str) -> ServedModel:
        """The version ``ref`` means now: ``name`` (its production alias), ``name@3`` or ``name@alias``."""
        return self.table.model(ref)

    def info(self, name: str) -> ModelInfo:
        """A model's versions and aliases, as of the last refresh."""
        return self.table.info(name)

    def loaded(self) -> list[ServedModel]:
        return self.table.loaded()

    def warm(self, refs: Sequence[str]) -> bool:
        """True when using ``refs`` waits on no artifact load (a bad reference fails fast too)."""
        return self.table.warm(refs)

    def _log(self, served: ServedModel, ids: Sequence[str] | None, X: np.ndarray, proba: np.ndarray) -> None:
        """Hand a computed batch to the prediction log; nothing it does may fail the score."""
        try:
            self.prediction_log.record(served.name, served.version, ids, X, proba)  # type: ignore[union-attr]
        except Exception:
            log.exception("the prediction log refused a batch of %s@%s", served.name, served.version)

    def close(self) -> None:
        """Stop the prediction threads (the cache and store belong to the caller)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _predict(self, served: ServedModel, X: np.ndarray) -> np.ndarray:
        """Probabilities of ``X``; big batches are split over the thread pool."""
        if not len(X):  # estimators refuse an empty matrix; an empty request has an empty answer
            return np.empty((0, len(served.keys)))
        if len(X) < _PARALLEL_MIN_ROWS or self.threads <= 1:
            return served.predict(X)
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="assay-predict")
            pool = self._pool
            busy = self._batches_now
            self._batches_now += 1
        try:
            if busy:
                # Another batch has the cores: splitting this one too would only queue its chunks
                # behind that one's and add a hand-over of the interpreter per chunk.
                return served.predict(X)
            size = min(-(-len(X) // self.threads), _MAX_CHUNK_ROWS)
            chunks = [X[i : i + size] for i in range(0, len(X), size)]
            return np.vstack(list(pool.map(served.predict, chunks)))
        finally:
            with self._pool_lock:
                self._batches_now -= 1

    def _predict_logged(self, served: ServedModel, X: np.ndarray, ids: list[str] | None) -> np.ndarray:
        """Probabilities of a file's rows, ``_LOG_SLICE`` rows at a time, each slice handed to the
        prediction log (when ``ids``) as soon as it is predicted: the log's writer stores one
        slice while the next is predicted, instead of all of them after the last."""
        if ids is None or len(X) <= _LOG_SLICE:
            proba = self._predict(served, X)
            if ids is not None:
                self._log(served, ids, X, proba)
            return proba
        parts = []
        for lo in range(0, len(X), _LOG_SLICE):
            part = self._predict(served, X[lo : lo + _LOG_SLICE])
            self._log(served, ids[lo : lo + _LOG_SLICE], X[lo : lo + _LOG_SLICE], part)
            parts.append(part)
        return np.vstack(parts)

    # --- scoring -----------------------------------------------------------------

    def score(
        self, refs: Sequence[str], items: Sequence[Any], *, features: bool = False, explain: int = 0
    ) -> dict[str, Any]:
        """Score ``items`` with every model in ``refs``: ``{"scores": {item_id: {ref: score | error}}}``.

        A bad model reference or a malformed item list is an error for the whole call
        (``NotFound``/``InvalidInput``); anything wrong with one item is reported on it.
        """
        if not refs:
            raise InvalidInput("name at least one model", field="models")
        models = {ref: self.table.model_or_error(ref) for ref in refs}
        parsed, contexts = parse_items(items)
        explain = check_explain(explain)
        answers: list[tuple[str, list[dict[str, Any]]]] = []
        for ref, served in models.items():
            if isinstance(served, AssayError):
                answers.append((ref, [{"error": served.to_dict()}] * len(parsed)))
                continue
            results = self._score_model(served, parsed, features=features, explain=explain, contexts=contexts)
            answers.append((ref, [r if isinstance(r, dict) else {"error": r.to_dict()} for r in results]))
        if len(answers) == 1:  # the usual request: one model
            ref, answer = answers[0]
            return {"scores": {item_id: {ref: a} for (item_id, _), a in zip(parsed, answer, strict=True)}}
        out: dict[str, dict[str, Any]] = {item_id: {} for item_id, _ in parsed}
        for ref, answer in answers:
            for (item_id, _), a in zip(parsed, answer, strict=True):
                out[item_id][ref] = a
        return {"scores": out}

    def score_one(
        self, ref: str, item_id: str, *, features: bool = False, explain: int = 0
    ) -> dict[str, Any]:
        """The score of one stored item; its error (e.g. ``unknown_item``) is raised, not returned."""
        served = self.model(ref)
        parsed = [(item_id_of(item_id, "item_id"), None)]
        result = self._score_model(served, parsed, features=features, explain=check_explain(explain))[0]
        if isinstance(result, AssayError):
            raise result
        return result

    def score_columns(
        self,
        ref: str,
        columns: Mapping[str, Sequence[Any] | np.ndarray],
        rows: int,
        *,
        context: Mapping[str, Sequence[Any]] | None = None,
    ) -> tuple[ServedModel, np.ndarray, list[str | None]]:
        """Probabilities of bare feature columns (no ids, no lookup, no cache), e.g. for OIP infer,
        and each row's group under the version's per-group thresholds (None without them).

        ``columns`` holds one list or numpy array of ``rows`` values per feature of the
        model, nothing else; ``context`` columns declare what is not a feature (a per-group
        threshold's attribute). All or nothing: the first bad row raises its error with
        ``row <k>:`` in the message (the same checks as records: finite numbers, known
        categories, booleans, known groups).
        """
        served = self.model(ref)
        names = columns.keys()
        if names != served.name_set:
            unknown = sorted(names - served.name_set)
            if unknown:
                raise served.loaded.schema.unknown_feature(unknown[0])
            missing = next(n for n in served.names if n not in names)
            raise InvalidInput(
                f"missing feature {missing!r}", field=f"features.{missing}", code="missing_feature"
            )
        if any(len(column) != rows for column in columns.values()):
            raise InvalidInput(f"every feature needs {rows} values, one per row", field="features")
        X, errors = served.encoder.encode_columns(columns, rows)
        declared: list[Mapping[str, Any] | None] = [None] * rows
        if served.groups is not None and context:
            declared = [{name: values[k] for name, values in context.items()} for k in range(rows)]
        groups = row_groups(served.groups, X, declared)
        for k, (error, group) in enumerate(zip(errors, groups, strict=True)):
            problem = error if error is not None else group if isinstance(group, InvalidInput) else None
            if problem is not None:
                raise InvalidInput(f"row {k}: {problem.message}", field=problem.field, code=problem.code)
        proba = self._predict(served, X)
        if self.observer is not None:
            self.observer.items_scored(served.name, served.version, rows, 0)
        if self.prediction_log is not None:
            self._log(served, None, X, proba)
        return served, proba, [g if isinstance(g, str) else None for g in groups]

    def precache(self, refs: Sequence[str], ids: Sequence[Any]) -> dict[str, Any]:
        """Score stored items ahead of their first request, filling the cache.

        Returns how many were scored now, how many were cached already, and failures by code.
        """
        models = [self.table.model_or_error(ref) for ref in refs] if refs else []
        if not models:
            raise InvalidInput("name at least one model", field="models")
        parsed = [(item_id_of(v, f"ids[{i}]"), None) for i, v in enumerate(ids)]
        parsed = list(dict.fromkeys(parsed))
        counts: dict[str, Any] = {"scored": 0, "cached": 0, "failed": {}}
        for served in models:
            if isinstance(served, AssayError):
                counts["failed"][served.code] = counts["failed"].get(served.code, 0) + len(parsed)
                continue
            keys = [score_key(served.name, served.version, item_id) for item_id, _ in parsed]
            present = self.cache.get_many(keys)
            todo = [p for p, hit in zip(parsed, present, strict=True) if hit is None]
            counts["cached"] += len(parsed) - len(todo)
            for result in self._score_model(served, todo, features=False, explain=0, read_cache=False):
                if isinstance(result, AssayError):
                    counts["failed"][result.code] = counts["failed"].get(result.code, 0) + 1
                else:
                    counts["scored"] += 1
        return counts

    def invalidate(self, model: str, ids: Sequence[str]) -> None:
        """Drop cached scores of these items for every version of ``model`` (their features changed),
        here and, through a notice, in every other process serving the store."""
        self._forget(model, ids)
        with self.registry.engine.begin() as conn:
            notices.publish(
                conn, notices.FEATURES, {"model": model, "ids": list(ids), "origin": self._origin}
            )

    def _forget(self, model: str, ids: Sequence[str]) -> None:
        info = self.table.current().models.get(model)
        versions = info.versions if info is not None else []
        self.cache.delete_many([score_key(model, v, i) for v in versions for i in ids])

    def follow(self, watcher: NoticeWatcher) -> None:
        """Refresh the model table on every registry notice, and drop the scores of items whose
        features changed from this process's cache (a shared cache was cleared by the publisher)."""
        self.table.follow(watcher)
        watcher.subscribe(notices.FEATURES, self._features_changed)

    def _features_changed(self, batch: list[Notice], *, resync: bool) -> None:
        if self.cache.shared:
            return
        if resync:  # changes may have been missed while the store was away
            self.cache.clear()
        for notice in batch:
            if notice.payload.get("origin") == self._origin:
                continue
            self._forget(str(notice.payload["model"]), [str(i) for i in notice.payload["ids"]])

    def _score_model(
        self,
        served: ServedModel,
        items: Sequence[tuple[str, Mapping[str, Any] | AssayError | None]],
        *,
        features: bool,
        explain: int,
        read_cache: bool = True,
        contexts: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> list[dict[str, Any] | AssayError]:
        """One result per item, in order: a score dict or the item's error.

        ``contexts`` (item id -> declared context) decide a version's per-group thresholds.
        Each pass over the items shows in a 1,000-item request: the usual items (all their
        features, no context) take one pass to their records and none to their failures."""
        plain = not features and not explain  # only plain scores come from / go to the cache
        declared = contexts if served.groups is not None and contexts else {}
        results: list[dict[str, Any] | AssayError | None] = [None] * len(items)
        # Id-only items without a declared context: their scores come from and go to the cache.
        id_only = [i for i, (item_id, f) in enumerate(items) if f is None and item_id not in declared]
        hits = self._cached(served, items, id_only, results) if id_only and plain and read_cache else 0
        scored: list[int] = []
        records, where = self._records(served, items, results)
        if records:
            X, errors = served.encoder.encode(records)
            groups = (
                None
                if served.groups is None
                else row_groups(served.groups, X, [declared.get(items[i][0]) for i in where])
            )
            scored, X, chosen = _usable(results, where, X, errors, groups)
            if scored:
                scores = self._scores(served, X, [items[i][0] for i in scored], features, explain, chosen)
                for i, score in zip(scored, scores, strict=True):
                    results[i] = score
                if id_only:
                    fresh = dict(zip(scored, scores, strict=True))
                    key = served.name, served.version
                    to_cache = {
                        score_key(*key, items[i][0]): fresh[i] if plain else _base(fresh[i])
                        for i in id_only
                        if i in fresh
                    }
                    if to_cache:
                        self.cache.set_many(to_cache)
        if self.observer is not None:
            ok = hits + len(scored)
            self.observer.items_scored(served.name, served.version, ok, len(items) - ok)
        return results  # type: ignore[return-value]

    def _cached(
        self,
        served: ServedModel,
        items: Sequence[tuple[str, Mapping[str, Any] | AssayError | None]],
        id_only: list[int],
        results: list[dict[str, Any] | AssayError | None],
    ) -> int:
        """Fill ``results`` with the cached score of each of the ``id_only`` items that has one;
        returns how many had one."""
        keys = [score_key(served.name, served.version, items[i][0]) for i in id_only]
        hits = 0
        for i, hit in zip(id_only, self.cache.get_many(keys), strict=True):
            if hit is not None:
                results[i] = hit
                hits += 1
        if self.observer is not None:
            self.observer.cache_lookups(hits, len(id_only) - hits)
        return hits

    def _records(
        self,
        served: ServedModel,
        items: Sequence[tuple[str, Mapping[str, Any] | AssayError | None]],
        results: list[dict[str, Any] | AssayError | None],
    ) -> tuple[list[Mapping[str, Any]], list[int]]:
        """The feature record of every item still without a result, and where each belongs
        (in item order).

        An item whose record cannot be made (no stored features, an unknown feature) gets its
        error in ``results`` instead.
        """
        names = served.name_set
        records: list[Mapping[str, Any]] = []
        where: list[int] = []
        others: list[int] = []  # id-only misses and partial "inject" items: stored features needed
        for i, (_, supplied) in enumerate(items):
            if results[i] is not None:
                continue
            if type(supplied) is dict and supplied.keys() == names:
                # Every feature and nothing else, the usual item: used as sent (features_of's first case).
                records.append(supplied)
                where.append(i)
            elif isinstance(supplied, AssayError):
                results[i] = supplied
            else:
                others.append(i)
        if not others:
            return records, where
        lookup_ids = [
            items[i][0]
            for i in others
            if items[i][1] is None or not names <= items[i][1].keys()  # type: ignore[union-attr]
        ]
        stored = self.features.lookup(served.name, lookup_ids) if lookup_ids else {}
        for i in others:
            item_id, supplied = items[i]
            try:
                records.append(features_of(served, item_id, supplied, stored.get(item_id)))  # type: ignore[arg-type]
                where.append(i)
            except AssayError as exc:
                results[i] = exc
        if len(others) < len(where):  # both kinds: back in item order
            order = sorted(range(len(where)), key=where.__getitem__)
            records, where = [records[k] for k in order], [where[k] for k in order]
        return records, where

    def _scores(
        self,
        served: ServedModel,
        X: np.ndarray,
        ids: list[str],
        features: bool,
        explain: int,
        groups: list[str | None] | None = None,
    ) -> list[dict[str, Any]]:
        """The scores of encoded rows (logged for monitoring), with features and explanations if asked."""
        proba = self._predict(served, X)
        scores = served.scores(proba, groups)
        if self.prediction_log is not None:
            self._log(served, ids, X, proba)
        if features:
            for score, row in zip(scores, X, strict=True):
                score["features"] = served.loaded.schema.decode_row(row)
        if explain:
            explain_scores(served, X, scores, explain)
        return scores

    # --- batch files -------------------------------------------------------------

    def score_frame(
        self, ref: str, frame: pd.DataFrame, *, id_column: str, keys: str = "classes"
    ) -> pd.DataFrame:
        """Score every row of ``frame`` (raw feature columns, as in training files).

        Returns columns ``id``, ``version``, ``prediction`` and ``probability_<key>`` per class.
        ``keys="api"``: the answer the HTTP API gives, column for field (a binary model's
        prediction true/false and ``probability_true``/``probability_false``, ORES's shape);
        ``keys="classes"``: named by the model's classes (what the next training run reads).
        A bad value, an unknown category included, refuses the file naming row and column,
        as the API refuses the item.
        A version with per-group thresholds decides each row at its group's threshold: the
        group is the attribute's feature value, else the file's column of the attribute's name
        (no such column: every row at the fallback threshold); ``group`` and ``threshold``
        columns say what each row got.
        The rows go to the prediction log, as served scores do.
        """
        served = self.model(ref)
        source = str(frame.attrs.get("source", "<frame>"))
        if id_column not in frame.columns:
            raise InvalidInput(f"{source}: no id column {id_column!r}", field="id_column")
        X = served.loaded.schema.encode_frame(frame, source=source, strict=True)
        groups = frame_groups(served.groups, frame, X, source)  # before any row is logged
        import pandas as pd  # batch files only: requests never need it

        out = pd.DataFrame({"id": frame[id_column].astype(str).to_numpy()})
        proba = self._predict_logged(
            served, X, out["id"].tolist() if self.prediction_log is not None else None
        )
        classes = served.loaded.classes
        prediction = served.predictions(proba, groups)
        named = keys == "classes"
        if served.positive_index is not None and named:  # flagged or not, as the class it stands for
            pi = served.positive_index
            prediction = np.where(prediction, classes[pi], classes[1 - pi])
        out["version"] = served.version
        out["prediction"] = prediction
        for j in served.order:
            out[f"probability_{classes[j] if named else served.keys[j]}"] = proba[:, j]
        if served.groups is not None:
            out["group"] = pd.Series(groups, dtype=object)
            out["threshold"] = served.groups.limits(groups)
        return out


# --- helpers -------------------------------------------------------------------


def _usable(
    results: list[dict[str, Any] | AssayError | None],
    where: list[int],
    X: np.ndarray,
    errors: list[AssayError | None],
    groups: list[str | InvalidInput | None] | None,
) -> tuple[list[int], np.ndarray, list[str | None] | None]:
    """The encoded rows that can be scored: (their items, their rows, their groups); the others'
    errors (a bad value, an unknown group) go into ``results``."""
    if groups is None and errors.count(None) == len(errors):
        return where, X, None  # the usual request: nothing wrong, nothing to decide per group
    good = []
    for k, error in enumerate(errors):
        group = groups[k] if groups is not None else None
        if error is not None:
            results[where[k]] = error
        elif isinstance(group, InvalidInput):
            results[where[k]] = group
        else:
            good.append(k)
    chosen = (
        None if groups is None else [g if isinstance(g, str) else None for g in (groups[k] for k in good)]
    )
    return [where[k] for k in good], X if len(good) == len(where) else X[good], chosen


def _base(score: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in score.items() if k not in ("features", "explanation")}
