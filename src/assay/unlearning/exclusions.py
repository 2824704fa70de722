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
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from assay.modelling.datasets import id_strings
from assay.store import tables

BLAKE2B = "blake2b"  # a keyed BLAKE2b-256 per id: requests' audit, and the list's entries before
SIPHASH = "siphash-2x64"  # two keyed SipHash-2-4 values: the list's entries from then on


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


def _siphash_keys(key: bytes) -> tuple[str, str]:
    """Two 112-bit SipHash keys from the salt (``hash_array`` takes 16 ASCII characters)."""
    derived = hashlib.blake2b(key, digest_size=32, person=b"assay-exclusion").digest()
    return tuple("".join(chr(b & 0x7F) for b in derived[i : i + 16]) for i in (0, 16))  # type: ignore[return-value]


def _siphash(ids: np.ndarray, key: str) -> np.ndarray:
    return pd.util.hash_array(ids, hash_key=key, categorize=False)


def list_hashes(key: bytes, ids: Iterable[str]) -> list[str]:
    """The exclusion list's hash (``SIPHASH``) of each id: 32 hex digits."""
    values = id_strings(np.fromiter(ids, dtype=object))
    first, second = (_siphash(values, k) for k in _siphash_keys(key))
    return [f"{a:016x}{b:016x}" for a, b in zip(first.tolist(), second.tolist(), strict=True)]


class ExclusionList:
    """A model's forgotten items as training sees them (``assay.modelling.preparation.Exclusion``).

    ``through`` limits it to the requests up to that one: what a version trained then left out.
    """

    def __init__(self, engine: Engine, model: str, *, through: int | None = None) -> None:
        table = tables.forgotten_ids
        query = sa.select(table.c.id_hash, table.c.scheme, table.c.request_id).where(table.c.model == model)
        if through is not None:
            query = query.where(table.c.request_id <= through)
        with engine.connect() as conn:
            rows = conn.execute(query).all()
        self.hashes = frozenset(r.id_hash for r in rows if r.scheme == SIPHASH)
        self.legacy = frozenset(r.id_hash for r in rows if r.scheme == BLAKE2B)
        self.through = max((r.request_id for r in rows), default=0) if through is None else through
        self._key = salt(engine) if rows else b""
        # The first SipHash of every listed id, as numbers: matched against all ids at once.
        self._first = np.array([int(h[:16], 16) for h in self.hashes], dtype=np.uint64)

    def __len__(self) -> int:
        return len(self.hashes) + len(self.legacy)

    def mask(self, ids: np.ndarray) -> np.ndarray:
        """Which of ``ids`` are listed."""
        out = np.zeros(len(ids), dtype=bool)
        if not len(self) or not len(ids):
            return out
        values = id_strings(ids)
        if self.hashes:
            first_key, _ = _siphash_keys(self._key)
            maybe = np.flatnonzero(np.isin(_siphash(values, first_key), self._first))
            if len(maybe):
                out[maybe] = [h in self.hashes for h in list_hashes(self._key, values[maybe])]
        if self.legacy:
            out |= np.fromiter(
                (id_hash(self._key, i) in self.legacy for i in values), dtype=bool, count=len(ids)
            )
        return out


def add(conn: Connection, model: str, key: bytes, ids: Iterable[str], request_id: int) -> int:
    """List ``ids`` for ``model`` (those already listed keep their first request); how many are new."""
    table = tables.forgotten_ids
    query = sa.select(table.c.id_hash).where(table.c.model == model, table.c.scheme == SIPHASH)
    listed = set(conn.execute(query).scalars().all())
    new = [
        {"model": model, "id_hash": h, "scheme": SIPHASH, "request_id": request_id}
        for h in dict.fromkeys(list_hashes(key, ids))
        if h not in listed
    ]
    if new:
        conn.execute(sa.insert(table), new)
    return len(new)
