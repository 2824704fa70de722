"""The exclusion list: the items each model may never learn from again, as salted hashes.

A deletion request adds the salted hash of every id it names, per model; every training run
(``assay train``, forgetting, verification) leaves out the rows whose id hashes are listed, so
the data files the user owns need not be rewritten for a forgotten item to stay forgotten. The
list keeps no id: the hash is a keyed BLAKE2b under a random salt kept in the store, so it can
be matched against ids one has, and says nothing of ids one has not.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from assay.store import tables


def salt(engine: Engine) -> bytes:
    """The workspace's salt for id hashes, made (once, whoever asks first) when first needed."""
    table = tables.unlearning_salt
    with engine.begin() as conn:
        row = conn.execute(sa.select(table.c.salt).where(table.c.id == 1)).first()
        if row is None:
            try:
                with conn.begin_nested():
                    conn.execute(sa.insert(table).values(id=1, salt=secrets.token_hex(32)))
            except sa.exc.IntegrityError:
                pass  # another process made it first: use theirs
            row = conn.execute(sa.select(table.c.salt).where(table.c.id == 1)).one()
    return bytes.fromhex(row.salt)


def id_hash(key: bytes, item_id: str) -> str:
    """The salted hash an id is known by in the audit and the exclusion list."""
    return hashlib.blake2b(item_id.encode("utf-8"), key=key, digest_size=32).hexdigest()


def id_hashes(key: bytes, ids: Iterable[str]) -> list[str]:
    return [id_hash(key, i) for i in ids]


class ExclusionList:
    """A model's forgotten items as training sees them (``assay.modelling.preparation.Exclusion``).

    ``through`` limits it to the requests up to that one: what a version trained then left out.
    """

    def __init__(self, engine: Engine, model: str, *, through: int | None = None) -> None:
        table = tables.forgotten_ids
        query = sa.select(table.c.id_hash, table.c.request_id).where(table.c.model == model)
        if through is not None:
            query = query.where(table.c.request_id <= through)
        with engine.connect() as conn:
            rows = conn.execute(query).all()
        self.hashes = frozenset(r.id_hash for r in rows)
        self.through = max((r.request_id for r in rows), default=0) if through is None else through
        self._key = salt(engine) if rows else b""

    def __len__(self) -> int:
        return len(self.hashes)

    def mask(self, ids: np.ndarray) -> np.ndarray:
        if not self.hashes:
            return np.zeros(len(ids), dtype=bool)
        return np.fromiter(
            (id_hash(self._key, str(i)) in self.hashes for i in ids), dtype=bool, count=len(ids)
        )


def add(conn: Connection, model: str, hashes: Iterable[str], request_id: int) -> int:
    """List ``hashes`` for ``model`` (those already listed keep their first request); how many are new."""
    table = tables.forgotten_ids
    listed = set(conn.execute(sa.select(table.c.id_hash).where(table.c.model == model)).scalars().all())
    new = [
        {"model": model, "id_hash": h, "request_id": request_id}
        for h in dict.fromkeys(hashes)
        if h not in listed
    ]
    if new:
        conn.execute(sa.insert(table), new)
    return len(new)
