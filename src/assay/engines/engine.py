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
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

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


@dataclass(frozen=True)
class Fanout(Generic[T]):
    """Independent calls of one function: ``fn(*call, **shared)`` for each call, until ``deadline``."""

    fn: Callable[..., T]
    calls: Sequence[tuple[Any, ...]]
    shared: Mapping[str, Any]
    deadline: float
    done: Done | None

    def finished(self, i: int, result: T | None) -> None:
        if self.done is not None:
            self.done(i, result)


@dataclass(frozen=True)
class ParquetJob:
    """``function(**kwargs)`` over every batch of ``source``'s Parquet files, written to ``dest``."""

    function: type[BatchFunction]
    kwargs: Mapping[str, Any]
    source: Path
    dest: Path
    workers: int
    batch_rows: int


def cores(jobs: int) -> int:
    """The cores a training in this process uses: ``jobs`` (``ASSAY_TRAIN_JOBS``) when it is
    positive, else the idle ones: the machine's cores less its 1-minute load average, at least one.

    Idle, not all: on a machine other work keeps busy, a fit given more threads than there are
    free cores spends its time waiting for them (LightGBM's threads synchronise at every split:
    2 threads took 6.4-12.1 s where 1 took 1.1-1.7 s on a busy 2-core machine). The result
    never depends on it: every family gives the same model on any number of threads.
    """
    if jobs < 0:
        raise SettingsError(
            f"train_jobs must be 0 (the idle cores) or a number of cores; got {jobs}", field="train_jobs"
        )
    if jobs > 0:
        return jobs
    total = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except OSError:  # pragma: no cover - a platform without a load average
        busy = 0.0
    return max(1, min(total, int(total - busy + 0.5)))


class Engine(ABC):
    """What every engine offers its callers; an engine implements ``run`` and ``stream``."""

    name: str
    # Cores this process's own work of a training (the refit, evaluation) may use.
    jobs: int
    # Threads each call of ``map`` may use. Folds run side by side (each call a core) or each
    # fit gets the threads, never both: 1 for an engine that runs calls side by side.
    fit_threads: int

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
        return self.run(Fanout(fn, calls, shared or {}, deadline, done))

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
        return self.stream(ParquetJob(function, kwargs, source, dest, workers, batch_rows))

    @abstractmethod
    def run(self, fanout: Fanout[T]) -> list[T | None]:
        """The results of ``fanout``'s calls in call order, ``None`` for those the deadline cut off."""

    @abstractmethod
    def stream(self, job: ParquetJob) -> int:
        """Run ``job``; the rows written."""


class LocalEngine(Engine):
    """The calls one after the other in this process, each given the ``jobs`` cores as threads."""

    name = "local"

    def __init__(self, jobs: int = 0) -> None:
        self.jobs = self.fit_threads = cores(jobs)

    def stream(self, job: ParquetJob) -> int:
        """One worker in this process (its batch function may use every core itself)."""
        import pyarrow as pa
        import pyarrow.dataset as pads
        import pyarrow.parquet as pq

        apply = job.function(**job.kwargs)
        job.dest.mkdir(parents=True, exist_ok=True)
        written = 0
        try:
            batches = pads.dataset(job.source, format="parquet").to_batches(batch_size=job.batch_rows)
            for i, batch in enumerate(batches):
                out = apply(batch.to_pandas())
                pq.write_table(
                    pa.Table.from_pandas(out, preserve_index=False), job.dest / f"part-{i:06d}.parquet"
                )
                written += len(out)
        finally:
            close = getattr(apply, "close", None)  # what the function holds (a store, a thread)
            if close is not None:
                close()
        return written

    def run(self, fanout: Fanout[T]) -> list[T | None]:
        results: list[T | None] = []
        for i, call in enumerate(fanout.calls):
            if time.monotonic() >= fanout.deadline:
                results.extend([None] * (len(fanout.calls) - i))
                break
            results.append(fanout.fn(*call, **fanout.shared))
            fanout.finished(i, results[-1])
        return results


def open_engine(name: str, address: str = "", jobs: int = 0) -> Engine:
    """The engine ``name`` means: ``local``, or ``ray`` (local Ray, or the cluster at ``address``);
    ``jobs``: the ``ASSAY_TRAIN_JOBS`` setting (see ``cores``)."""
    if name == "local":
        return LocalEngine(jobs)
    if name == "ray":
        from assay.engines.ray_engine import RayEngine  # needs the [ray] extra

        return RayEngine(address, jobs)
    raise SettingsError(f"engine must be one of {', '.join(ENGINES)}; got {name!r}", field="engine")
