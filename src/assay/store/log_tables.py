"""The prediction log in the store's tables (``StoreLog``, the ``store`` log backend).

Rows are kept in chunks, as the writer wrote them (at most ``CHUNK_ROWS``): each chunk packs its
rows' times, encoded feature rows and class probabilities as float64 in one blob (the version's
schema says how many of each), and its item ids as a JSON list; ``prediction_items`` says which
chunk holds each item's score, for labels and deletions. Reading a million rows back is a few
dozen blobs, one join and one ``numpy.frombuffer``: a row each would have the driver build
millions of Python objects, and that, not the statistics, is what a drift check would spend its
time on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from assay.store import db, log_store, tables
from assay.store.log_store import CHUNK_ROWS, LogFrame, LogStore, Rows, Span, Window

_IN_LIST = 500  # bound parameters per IN (...) list, far below SQLite's limit
_DTYPE = np.dtype("<f8")


def _distinct(ids: list[str | None], listed: str) -> str:
    """The JSON list of ``ids`` (``listed``) with each id once and no None, for the item index.

    An id scored again and again (a product polling it, a client sending the same batch) goes to
    the database once: sorting the repeats there and skipping them cost more than the chunk's
    own insert (a server answering 1,000-item requests of the same ids: 1.8-1.9 ms of CPU a
    request, against 1.0-1.2 ms with the set made here).
    """
    distinct = set(ids)
    distinct.discard(None)
    return listed if len(distinct) == len(ids) else orjson.dumps(list(distinct)).decode()


class StoreLog(LogStore):
    """The log in the store's ``prediction_log`` and ``prediction_items`` tables."""

    flush_interval_s = 1.0

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _write(self, model: str, version: int, rows: Rows) -> None:
        # As chunks of at most ``CHUNK_ROWS`` rows, in one transaction.
        times, ids, X, proba = rows.at, rows.ids, rows.X, rows.proba
        n, d = X.shape
        # Filled in place and handed to the driver as views: column_stack and a bytes copy per
        # chunk cost more than the chunk's insert (fresh pages of a million rows, twice).
        packed = np.empty((n, 1 + d + proba.shape[1]), dtype=_DTYPE)
        packed[:, 0], packed[:, 1 : 1 + d], packed[:, 1 + d :] = times, X, proba
        item_ids = list(ids) if ids is not None else None
        with self.engine.begin() as conn:
            for lo in range(0, n, CHUNK_ROWS):
                hi = min(lo + CHUNK_ROWS, n)
                chunk_ids = item_ids[lo:hi] if item_ids is not None else None
                if chunk_ids is not None and chunk_ids.count(None) == len(chunk_ids):  # C speed: 65k ids
                    chunk_ids = None
                listed = index = None  # the chunk's ids in row order; each id once, for the index
                if chunk_ids is not None:
                    listed = orjson.dumps(chunk_ids).decode()
                    index = _distinct(chunk_ids, listed)
                key = conn.execute(
                    sa.insert(tables.prediction_log).values(
                        model=model,
                        version=version,
                        at_min=float(times[lo:hi].min()),
                        at_max=float(times[lo:hi].max()),
                        n=hi - lo,
                        data=packed[lo:hi].data.cast("B"),
                        ids=listed,
                    )
                ).inserted_primary_key
                assert key is not None
                if index is not None:
                    self._add_items(conn, model, version, key[0], index)

    def _add_items(self, conn: Connection, model: str, version: int, chunk: int, listed: str) -> None:
        # ``listed``: the chunk's ids, each once, as a JSON list (the chunk is what a label joins
        # through). The database expands it itself, in one statement: binding a parameter tuple
        # per id in Python cost twice the inserts (and held the interpreter while it did; the
        # statement's own run lets other threads go on). The ids go in in key order: inserted
        # as they come, each lands on a random page of a tree that outgrows the page cache (1M
        # random ids: 4.9-7.7 s of CPU as they come, 1.7-2.9 s sorted).
        if self.engine.dialect.name == "sqlite":
            conn.exec_driver_sql(
                "INSERT OR IGNORE INTO prediction_items (model, item_id, chunk_id, version) "
                "SELECT ?, value, ?, ? FROM json_each(?) ORDER BY value",
                (model, chunk, version, listed),
            )
        else:
            conn.exec_driver_sql(
                "INSERT INTO prediction_items (model, item_id, chunk_id, version) "
                "SELECT %s, item, %s, %s FROM json_array_elements_text(%s::json) AS listed(item) "
                "ORDER BY item ON CONFLICT DO NOTHING",
                (model, chunk, version, listed),
            )

    # --- reading ------------------------------------------------------------------------------

    def _rows(
        self, model: str, version: int, window: Window, width: tuple[int, int], with_ids: bool
    ) -> LogFrame:
        since, until, after = window.since, window.until, window.after
        table = tables.prediction_log
        d, k = width
        columns = [table.c.id, table.c.n, table.c.data] + ([table.c.ids] if with_ids else [])
        query = sa.select(*columns).where(table.c.model == model, table.c.version == version)
        if since is not None:
            query = query.where(table.c.at_max >= since)
        if until is not None:
            query = query.where(table.c.at_min < until)
        if after is not None:
            query = query.where(table.c.id >= after // CHUNK_ROWS)
        with self.engine.connect() as conn:
            chunks = conn.execute(query.order_by(table.c.id)).all()
        if not chunks:
            return LogFrame.empty(model, version, d, k)
        matrix = np.frombuffer(b"".join(c.data for c in chunks), dtype=_DTYPE)
        total = sum(c.n for c in chunks)
        log_store.check_width(model, version, matrix.size, total, width)
        positions = np.concatenate([c.id * CHUNK_ROWS + np.arange(c.n, dtype=np.int64) for c in chunks])
        ids: list[str | None] | None = None
        if with_ids:
            ids = []
            for c in chunks:
                ids.extend(orjson.loads(c.ids) if c.ids is not None else [None] * c.n)
        matrix = matrix.reshape(total, 1 + d + k)
        return LogFrame(
            model, version, positions, matrix[:, 0], matrix[:, 1 : 1 + d], matrix[:, 1 + d :], ids
        )

    def span(self, model: str, version: int, *, after: int | None = None) -> Span | None:
        table = tables.prediction_log
        query = sa.select(
            sa.func.min(table.c.at_min), sa.func.max(table.c.at_max), sa.func.sum(table.c.n)
        ).where(table.c.model == model, table.c.version == version)
        if after is not None:
            query = query.where(table.c.id >= after // CHUNK_ROWS)
        with self.engine.connect() as conn:
            first, last, n = conn.execute(query).one()
        return None if not n else (float(first), float(last), int(n))

    def versions(self, model: str) -> dict[int, int]:
        table = tables.prediction_log
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(table.c.version, sa.func.sum(table.c.n))
                .where(table.c.model == model)
                .group_by(table.c.version)
            ).all()
        return {int(v): int(n) for v, n in rows}

    def start_before(self, model: str, version: int, position: int, rows: int) -> int | None:
        table = tables.prediction_log
        last = position // CHUNK_ROWS
        query = (
            sa.select(table.c.id, table.c.n)
            .where(table.c.model == model, table.c.version == version, table.c.id <= last)
            .order_by(table.c.id.desc())
        )
        with self.engine.connect() as conn:
            return log_store.counted_back(conn.execute(query).tuples(), position, rows)

    def last_versions(self, model: str, ids: Sequence[str]) -> dict[str, int]:
        chunks, logged = tables.prediction_log, tables.prediction_items
        versions: dict[str, int] = {}
        with self.engine.connect() as conn:
            # Item rows of pruned chunks may linger until purged: only chunks still kept count.
            oldest = conn.execute(sa.select(sa.func.min(chunks.c.id)).where(chunks.c.model == model)).scalar()
            if oldest is None:
                return versions
            for lo in range(0, len(ids), _IN_LIST):
                latest = (
                    sa.select(logged.c.item_id, sa.func.max(logged.c.chunk_id).label("last"))
                    .where(
                        logged.c.model == model,
                        logged.c.item_id.in_(ids[lo : lo + _IN_LIST]),
                        logged.c.chunk_id >= oldest,
                    )
                    .group_by(logged.c.item_id)
                    .subquery()
                )
                found = conn.execute(
                    sa.select(logged.c.item_id, logged.c.version).join(
                        latest,
                        sa.and_(
                            logged.c.model == model,
                            logged.c.item_id == latest.c.item_id,
                            logged.c.chunk_id == latest.c.last,
                        ),
                    )
                )
                versions.update((item_id, int(version)) for item_id, version in found)
        return versions

    def holding(self, models: Sequence[str], ids: Sequence[str]) -> set[str]:
        items = tables.prediction_items
        found: set[str] = set()
        with self.engine.connect() as conn:
            for lo in range(0, len(ids), _IN_LIST):
                query = sa.select(items.c.item_id).where(
                    items.c.model.in_(models), items.c.item_id.in_(ids[lo : lo + _IN_LIST])
                )
                found.update(conn.execute(query).scalars())
        return found

    # --- deleting -----------------------------------------------------------------------------

    def prune(self, *, max_rows: int, retention_s: float, now: float | None = None) -> int:
        chunks = tables.prediction_log
        now = time.time() if now is None else now
        doomed: list[tuple[int, int, str]] = []  # (chunk id, rows, model)
        with self.engine.connect() as conn:
            if retention_s > 0:
                doomed += conn.execute(
                    sa.select(chunks.c.id, chunks.c.n, chunks.c.model).where(
                        chunks.c.at_max < now - retention_s
                    )
                ).all()
            if max_rows > 0:
                gone = {c for c, _, _ in doomed}
                for (model,) in conn.execute(sa.select(chunks.c.model).distinct()).all():
                    kept = 0
                    for chunk, n in conn.execute(
                        sa.select(chunks.c.id, chunks.c.n)
                        .where(chunks.c.model == model)
                        .order_by(chunks.c.id.desc())
                    ):
                        if chunk in gone:
                            continue
                        if kept >= max_rows:
                            doomed.append((chunk, n, model))
                        kept += n
        if not doomed:
            return 0
        ids = [c for c, _, _ in doomed]
        # Routine retention, not an erasure: freed pages are left as they are (the log's next
        # chunks write over them). Zeroing a 65,536-row chunk's 6 MB of freed pages cost 0.5 s
        # of CPU per million rows pruned, as much again as writing them.
        with self.engine.begin() as conn, db.secure_delete(conn, "fast"):
            for lo in range(0, len(ids), 900):
                conn.execute(sa.delete(chunks).where(chunks.c.id.in_(ids[lo : lo + 900])))
            self._purge_items(conn, {m for _, _, m in doomed})
        return sum(n for _, n, _ in doomed)

    def _purge_items(self, conn: Connection, models: set[str]) -> int:
        """Delete the item rows of ``models`` whose chunks are gone (chunks go oldest first: those
        below a model's oldest chunk); returns how many.

        Only the models that lost chunks: each model's purge reads all of its item rows (a
        million-row model's took 0.7 s with nothing to delete), and the other models' rows
        cannot have lost their chunks.
        """
        chunks, items = tables.prediction_log, tables.prediction_items
        deleted = 0
        oldest = dict(
            conn.execute(sa.select(chunks.c.model, sa.func.min(chunks.c.id)).group_by(chunks.c.model)).all()
        )
        for model in sorted(models):
            stale = sa.delete(items).where(items.c.model == model)
            if model in oldest:
                stale = stale.where(items.c.chunk_id < oldest[model])
            deleted += conn.execute(stale).rowcount or 0
        return deleted

    def forget(self, conn: Connection, model: str, ids: Sequence[str]) -> int:
        """Each chunk that holds one of ``ids`` is rewritten without it (or deleted when nothing is
        left), and the items' rows go, in the caller's transaction. Rows after a removed one in its
        chunk move up a place, so a count-window cursor inside that chunk may judge a few rows
        twice or skip them once."""
        chunks, items = tables.prediction_log, tables.prediction_items
        wanted = list(dict.fromkeys(ids))
        holding: set[int] = set()
        for lo in range(0, len(wanted), _IN_LIST):
            part = wanted[lo : lo + _IN_LIST]
            holding.update(
                conn.execute(
                    sa.select(items.c.chunk_id).where(items.c.model == model, items.c.item_id.in_(part))
                ).scalars()
            )
            conn.execute(sa.delete(items).where(items.c.model == model, items.c.item_id.in_(part)))
        removed, gone = 0, set(wanted)
        for chunk in sorted(holding):
            row = conn.execute(
                sa.select(chunks.c.n, chunks.c.data, chunks.c.ids).where(chunks.c.id == chunk)
            ).first()
            if row is None or row.ids is None:
                continue
            logged = orjson.loads(row.ids)
            keep = np.fromiter((i not in gone for i in logged), dtype=bool, count=len(logged))
            removed += int((~keep).sum())
            if not keep.any():
                conn.execute(sa.delete(chunks).where(chunks.c.id == chunk))
            elif not keep.all():
                matrix = np.frombuffer(row.data, dtype=_DTYPE).reshape(row.n, -1)[keep]
                conn.execute(
                    sa.update(chunks)
                    .where(chunks.c.id == chunk)
                    .values(
                        n=int(keep.sum()),
                        data=np.ascontiguousarray(matrix).tobytes(),
                        ids=orjson.dumps([i for i, k in zip(logged, keep, strict=True) if k]).decode(),
                        at_min=float(matrix[:, 0].min()),
                        at_max=float(matrix[:, 0].max()),
                    )
                )
        return removed
