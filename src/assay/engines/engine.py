"""The engine interface and the local engine.

An engine does two kinds of work. ``map`` runs independent calls of one function and
returns their results in the order of the calls. ``map_parquet`` streams a folder of
Parquet files through a batch function built once per worker (a scorer that loads its
model once) and writes what it returns as Parquet files in another folder.

In ``map``, the calls share read-only data (``shared``: the training matrix, say),
which an engine ships once, not once per call. A ``deadline`` (monotonic seconds) stops
the work: every call not finished by then gives ``None``. The local engine runs the calls in
order, so those that finished are a prefix of them; other engines run them side by side, so
a caller that needs a prefix (a time-boxed search counts the first N trials of its seeded
sequence) keeps the results up to the first ``None``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from assay.errors import SettingsError

if TYPE_CHECKING:
    import pandas as pd

T = TypeVar("T")
Done = Callable[[int, Any], None]
"""Called with (index of the call, its result) as each call finishes, for progress lines."""

ENGINES = ("local", "ray")


class BatchFunction(Protocol):
    """Built once per worker (``cls(**kwargs)``), then called with each batch of rows; its
    ``close()``, if it has one, is called when the worker is done where the engine can (the
    local engine does; Ray stops its actors), so a batch must leave nothing unfinished."""

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame: ...


class Engine(Protocol):
    name: str

    def map_parquet(
        self,
        function: type[BatchFunction],
        kwargs: Mapping[str, Any],
        source: Path,
        dest: Path,
        *,
        workers: int,
        batch_rows: int,
    ) -> int:
        """Write ``function(**kwargs)(batch)`` of every batch of ``source``'s Parquet files as Parquet
        files in ``dest``, with ``workers`` workers; returns the rows written."""
        ...

    def map(
        self,
        fn: Callable[..., T],
        calls: Sequence[tuple[Any, ...]],
        *,
        shared: Mapping[str, Any] | None = None,
        deadline: float = math.inf,
        done: Done | None = None,
    ) -> list[T | None]:
        """``[fn(*call, **shared) for call in calls]``; ``None`` for calls the deadline cut off."""
        ...


class LocalEngine:
    """The calls one after the other in this process (the libraries use the cores within each)."""

    name = "local"

    def map_parquet(
        self,
        function: type[BatchFunction],
        kwargs: Mapping[str, Any],
        source: Path,
        dest: Path,
        *,
        workers: int,
        batch_rows: int,
    ) -> int:
        """One worker in this process (its batch function may use every core itself)."""
        import pyarrow as pa
        import pyarrow.dataset as pads
        import pyarrow.parquet as pq

        apply = function(**kwargs)
        dest.mkdir(parents=True, exist_ok=True)
        written = 0
        try:
            batches = pads.dataset(source, format="parquet").to_batches(batch_size=batch_rows)
            for i, batch in enumerate(batches):
                out = apply(batch.to_pandas())
                pq.write_table(
                    pa.Table.from_pandas(out, preserve_index=False), dest / f"part-{i:06d}.parquet"
                )
                written += len(out)
        finally:
            close = getattr(apply, "close", None)  # what the function holds (a store, a thread)
            if close is not None:
                close()
        return written

    def map(
        self,
        fn: Callable[..., T],
        calls: Sequence[tuple[Any, ...]],
        *,
        shared: Mapping[str, Any] | None = None,
        deadline: float = math.inf,
        done: Done | None = None,
    ) -> list[T | None]:
        results: list[T | None] = []
        for i, call in enumerate(calls):
            if time.monotonic() >= deadline:
                results.extend([None] * (len(calls) - i))
                break
            results.append(fn(*call, **(shared or {})))
            if done is not None:
                done(i, results[-1])
        return results


def open_engine(name: str, address: str = "") -> Engine:
    """The engine ``name`` means: ``local``, or ``ray`` (local Ray, or the cluster at ``address``)."""
    if name == "local":
        return LocalEngine()
    if name == "ray":
        from assay.engines.ray_engine import RayEngine  # needs the [ray] extra

        return RayEngine(address)
    raise SettingsError(f"engine must be one of {', '.join(ENGINES)}; got {name!r}", field="engine")
