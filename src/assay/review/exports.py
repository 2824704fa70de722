"""Label files assay wrote (``assay labels export``), kept track of so that forgetting can clean them.

Each export records its file's absolute path, its campaign and model, and the sha256 of the
bytes written. A file is assay's to rewrite only while it still holds exactly those bytes:
forgetting rewrites such a file without the forgotten items' rows (atomically) and records
the new bytes; a file changed since, or one assay cannot read, is only listed, never rewritten.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from assay.store import db, tables

PARQUET_SUFFIXES = (".parquet", ".pq")
REWRITTEN = "rewritten without the forgotten items"
CHANGED = "changed since assay wrote it: not rewritten"
UNREADABLE = "cannot be read: not rewritten"


def record_export(engine: Engine, *, campaign: str, model: str, path: Path, rows: int) -> None:
    """Remember that assay wrote ``path`` (its bytes as they are now) for ``campaign``."""
    values = {
        "campaign": campaign,
        "model": model,
        "sha256": _sha256(path),
        "rows": rows,
        "written_at": db.now(),
    }
    where = str(path.resolve())
    with engine.begin() as conn:
        updated = conn.execute(
            sa.update(tables.label_exports).where(tables.label_exports.c.path == where).values(**values)
        )
        if not updated.rowcount:
            conn.execute(sa.insert(tables.label_exports).values(path=where, **values))


def forget_in_exports(
    engine: Engine, model: str, forgotten: Callable[[np.ndarray], np.ndarray]
) -> list[dict[str, Any]]:
    """Rewrite ``model``'s export files that hold forgotten items (``forgotten(ids)`` is True for
    each), when they are still as assay wrote them; returns the files that held any (path, rows
    removed or found, status). Run again, it finds nothing left to do: it can resume."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(tables.label_exports).where(tables.label_exports.c.model == model)
        ).all()
    out = []
    for row in rows:
        path = Path(row.path)
        if not path.is_file():
            continue
        try:
            frame = _read(path)
            drop = forgotten(frame["id"].astype(str).to_numpy())
        except (OSError, ValueError, KeyError):
            out.append({"path": row.path, "ids": None, "status": UNREADABLE})
            continue
        if not drop.any():
            continue
        entry = {"path": row.path, "ids": int(drop.sum())}
        if _sha256(path) != row.sha256:
            out.append({**entry, "status": CHANGED})
            continue
        kept = frame[~drop]
        write_frame(kept, path)
        record_export(engine, campaign=row.campaign, model=model, path=path, rows=len(kept))
        out.append({**entry, "status": REWRITTEN})
    return out


def _read(path: Path) -> Any:
    import pandas as pd

    if path.suffix.lower() in PARQUET_SUFFIXES:
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype=str, keep_default_na=False)  # every other row written as it was read


def write_frame(frame: Any, path: Path) -> None:
    """Write an export as CSV or Parquet (by the suffix); a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix.lower() in PARQUET_SUFFIXES:
        frame.to_parquet(tmp, index=False)
    else:
        frame.to_csv(tmp, index=False)
    tmp.replace(path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
