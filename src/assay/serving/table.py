"""The served-model table: which version every model reference means, and the loaded versions.

``name``, ``name@3`` and ``name@alias`` are read from the registry by ``refresh()``, which
``follow(watcher)`` calls whenever the store's notices (``assay.store.notices``) say a version
was added or an alias moved, by any process on any host — at once on PostgreSQL, within a
poll on SQLite — so requests never wait on the store. A version an alias moves to is loaded *before* the table switches, so a promotion
never fails a request; a version that cannot be loaded (a damaged artifact, a record that
breaks its contract) is logged and skipped: the alias keeps its previous version, every other
model is still followed, and requests naming that version get its error on that model only.

The table serves the versions an alias points at, plus any named by number until the next
alias move (the registry, which owns loaded models, keeps no more than a few others).

A server preloads every alias's version (``preload=True``): its first request waits on no load.
A one-shot command (``assay score``, precaching, a batch worker) names one model, and loads that
one only (``preload=False``): a workspace of several models, one of them a big forest, took
seconds to load for a command that used none of the others.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from assay.errors import ArtifactError, AssayError, InvalidInput, NotFound
from assay.registry.refs import DEFAULT_ALIAS, parse_ref, version_number
from assay.registry.versions import ModelInfo, Registry
from assay.serving.served import ServedModel
from assay.store import notices
from assay.store.notices import NoticeWatcher

log = logging.getLogger(__name__)

# A version that failed to load is tried again after this long (a file restored, a disk back).
_RETRY_FAILED_S = 60.0


class ScoringObserver(Protocol):
    """What the scorer reports as it works (the server's Prometheus metrics implement it)."""

    def cache_lookups(self, hits: int, misses: int) -> None: ...

    def items_scored(self, model: str, version: int, scored: int, failed: int) -> None: ...

    def model_loaded(self, model: str, version: int) -> None: ...

    def model_unloaded(self, model: str, version: int) -> None: ...


@dataclass(frozen=True)
class _Snapshot:
    """The registry's models, versions and aliases as of one refresh."""

    models: dict[str, ModelInfo]
    at: float


class ModelTable:
    """Model references to loaded versions; safe to share between threads."""

    def __init__(
        self, registry: Registry, observer: ScoringObserver | None = None, *, preload: bool = False
    ) -> None:
        self.registry = registry
        self.observer = observer
        self.preload = preload
        self._table: _Snapshot | None = None
        self._served: dict[tuple[str, int], ServedModel] = {}
        self._resolved: dict[str, ServedModel] = {}  # ref -> model, valid for the current table
        self._refresh_lock = threading.Lock()
        self._load_lock = threading.Lock()
        # (name, version) -> (its load error, when) for versions that cannot be loaded
        self._failed: dict[tuple[str, int], tuple[AssayError, float]] = {}

    @property
    def ready(self) -> bool:
        """True once the model table has been read (the server answers /readyz with it)."""
        return self._table is not None

    def refresh(self) -> None:
        """Re-read models, versions and aliases; load every alias's version (``preload``), then switch.

        A version that fails to load (a damaged artifact, a record that breaks its contract)
        is logged once and the alias keeps serving the version it served before, so a bad
        promotion degrades nothing and every other alias is still followed.
        """
        with self._refresh_lock:
            infos = {info.name: info for info in self.registry.models()}
            old = self._table.models if self._table is not None else {}
            for info in infos.values() if self.preload else ():
                kept = old.get(info.name)
                for alias, version in list(info.aliases.items()):
                    key = (info.name, version)
                    if key in self._served:
                        continue
                    known = key in self._failed
                    try:
                        self._load(*key)
                    except AssayError as exc:
                        previous = kept.aliases.get(alias) if kept is not None else None
                        if not known:
                            log.error(
                                "cannot load %s@%s for alias %r (%s); still serving %s",
                                info.name,
                                version,
                                alias,
                                exc.message,
                                f"version {previous}" if previous is not None else "nothing",
                            )
                        if previous is not None:
                            info.aliases[alias] = previous
            changed = self._table is None or infos != self._table.models
            self._table = _Snapshot(infos, time.monotonic())
            if changed:
                self._resolved = {}
                self._unload_unaliased(infos)

    def follow(self, watcher: NoticeWatcher) -> None:
        """Refresh on every registry notice (a resync after the store was away is one too)."""
        watcher.subscribe(notices.REGISTRY, lambda _batch, *, resync: self.refresh())

    def _unload_unaliased(self, infos: Mapping[str, ModelInfo]) -> None:
        """Forget versions no alias points at, so that memory does not grow with every promotion.

        In-flight requests keep the objects they hold; a later ``name@3`` loads its version again.
        """
        wanted = {(name, v) for name, info in infos.items() for v in info.aliases.values()}
        with self._load_lock:
            for key in [k for k in self._served if k not in wanted]:
                del self._served[key]
                if self.observer is not None:
                    self.observer.model_unloaded(*key)

    def models(self) -> list[ModelInfo]:
        """Every model with its versions and aliases, as of the last refresh."""
        return list(self.current().models.values())

    def model(self, ref: str) -> ServedModel:
        """The version ``ref`` means now: ``name`` (its production alias), ``name@3`` or ``name@alias``."""
        served = self.model_or_error(ref)
        if isinstance(served, AssayError):
            raise served
        return served

    def model_or_error(self, ref: str) -> ServedModel | AssayError:
        """``model(ref)``, or the load error of the version it means: a reference to nothing known
        fails the request (raised), a known version that cannot be loaded fails only its own scores."""
        served = self._resolved.get(ref)
        if served is not None:
            return served
        key = self.version_of(ref)
        try:
            served = self._served.get(key) or self._load(*key)
        except AssayError as exc:
            return exc
        self._resolved[ref] = served
        return served

    def warm(self, refs: Sequence[str]) -> bool:
        """True when using ``refs`` waits on no artifact load (a bad reference fails fast too)."""
        for ref in refs:
            if ref not in self._resolved:
                try:
                    if self.version_of(ref) not in self._served:
                        return False
                except AssayError:
                    pass
        return True

    def version_of(self, ref: str) -> tuple[str, int]:
        """The (name, version) ``ref`` means in the current table, or the error naming what is unknown."""
        if not isinstance(ref, str):
            raise InvalidInput("a model reference must be a string", field="model")
        name, which = parse_ref(ref)
        which = which or DEFAULT_ALIAS
        info = self.info(name)
        version = version_number(which)
        if version is not None:
            if version not in info.versions:
                raise NotFound(
                    f"model {name!r} has no version {version}", field="model", code="unknown_version"
                )
            return name, version
        aliased = info.aliases.get(which)
        if aliased is None:
            raise NotFound(f"model {name!r} has no alias {which!r}", field="model", code="unknown_alias")
        return name, aliased

    def info(self, name: str) -> ModelInfo:
        """A model's versions and aliases, as of the last refresh."""
        info = self.current().models.get(name)
        if info is None:
            raise NotFound(f"unknown model {name!r}", field="model", code="unknown_model")
        return info

    def loaded(self) -> list[ServedModel]:
        return list(self._served.values())

    def current(self) -> _Snapshot:
        if self._table is None:
            self.refresh()
        assert self._table is not None
        return self._table

    def _load(self, name: str, version: int) -> ServedModel:
        """The served form of a version, loading it if needed.

        Whatever goes wrong is this version's error alone: it is raised as an ``AssayError``
        (anything unexpected becomes an ``ArtifactError``), remembered for ``_RETRY_FAILED_S``
        so that requests naming the version do not retry a failing load each time, and never
        escapes as something that would stop the refresh loop or the server.
        """
        key = (name, version)
        with self._load_lock:
            served = self._served.get(key)
            if served is not None:
                return served
            failed = self._failed.get(key)
            if failed is not None and time.monotonic() - failed[1] < _RETRY_FAILED_S:
                raise failed[0]
            try:
                served = ServedModel.of(self.registry.load(self.registry.get(name, version)))
            except Exception as exc:
                error = exc if isinstance(exc, AssayError) else ArtifactError(f"{name}@{version}: {exc!r}")
                if not isinstance(exc, AssayError):
                    log.exception("loading %s@%s failed", name, version)
                self._failed[key] = (error, time.monotonic())
                raise error from None
            self._failed.pop(key, None)
            self._served[key] = served
            if self.observer is not None:
                self.observer.model_loaded(name, version)
        return served
