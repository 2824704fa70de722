"""The workspace: one home folder with its store, its artifact folder and its registry.

Built once from settings by the CLI or the app factory and passed in. Opening it also
removes what processes killed half-way through left in the artifact folder (staging and
import folders nobody holds any more).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from assay.registry.versions import Registry
from assay.settings import Settings
from assay.store import db
from assay.store.artifact_store import open_artifact_store
from assay.store.log_store import LogStore, open_log_store

log = logging.getLogger(__name__)


@dataclass
class Workspace:
    settings: Settings
    engine: Engine
    registry: Registry
    log: LogStore  # the prediction log's rows (the log_backend setting)

    @classmethod
    def open(cls, settings: Settings) -> Workspace:
        """Open (creating if needed) the workspace the settings name, migrating its store."""
        settings.home.mkdir(parents=True, exist_ok=True)
        settings.artifacts_path.mkdir(parents=True, exist_ok=True)
        store = open_artifact_store(settings.artifacts_url, settings.s3_endpoint_url)
        engine = db.connect(settings.store_url)
        registry = Registry(engine, settings.artifacts_path, store=store)
        for path in registry.remove_stale_work():
            log.warning("removed %s, left unfinished by a process that stopped", path)
        return cls(settings=settings, engine=engine, registry=registry, log=open_log_store(settings, engine))

    def close(self) -> None:
        self.engine.dispose()
