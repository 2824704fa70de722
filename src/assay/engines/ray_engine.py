"""The Ray engine: calls as Ray tasks, on a local Ray (``ray.init()``) or a cluster.

``pip install "assay[ray]"``; ``ASSAY_ENGINE=ray`` (or ``--engine ray``) selects it, and
``ASSAY_RAY_ADDRESS`` (else Ray's own ``RAY_ADDRESS``) names a cluster; with neither, Ray
starts on this machine. Shared data is put in Ray's object store once and every task
reads it from there (numpy arrays without a copy). Each task gets one CPU and the
libraries inside it one thread, so the cluster's cores are shared out by Ray.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any, TypeVar

from assay.engines.engine import Engine, Fanout, ParquetJob, cores
from assay.errors import SettingsError

T = TypeVar("T")


def ray_module() -> Any:
    """``ray``, connected (started locally when no cluster is named)."""
    try:
        import ray
    except ImportError as exc:
        raise SettingsError('the ray engine needs Ray: pip install "assay[ray]"', field="engine") from exc
    return ray


class RayEngine(Engine):
    name = "ray"

    def stream(self, job: ParquetJob) -> int:
        """Ray Data: ``workers`` actors, each building ``function`` once, over the files' blocks."""
        import pyarrow.parquet as pq

        data = self.ray.data.read_parquet(str(job.source))
        # A core per actor, but never all of them: reading and writing need one, or the job
        # waits forever for a core its own actors hold (a two-core machine, two workers).
        cores = float(self.ray.cluster_resources().get("CPU", 1.0))
        scored = data.map_batches(
            job.function,
            fn_constructor_kwargs=dict(job.kwargs),
            batch_format="pandas",
            batch_size=job.batch_rows,
            compute=self.ray.data.ActorPoolStrategy(size=job.workers),
            num_cpus=min(1.0, max((cores - 1) / job.workers, 0.1)),
        )
        with warnings.catch_warnings():
            # An input of fewer blocks than workers leaves actors idle, which Ray warns about; it
            # is right for a small folder, not a fault.
            warnings.filterwarnings("ignore", message="The minimum number of concurrent actors")
            scored.write_parquet(str(job.dest))
        return sum(pq.ParquetFile(path).metadata.num_rows for path in sorted(job.dest.glob("*.parquet")))

    def __init__(self, address: str = "", jobs: int = 0) -> None:
        self.address = address
        self._ray: Any = None
        # Every call is a task holding one core of the cluster: its fit gets one thread. This
        # process's own work (the refit, evaluation) gets the local cores.
        self.fit_threads = 1
        self.jobs = cores(jobs)

    @property
    def ray(self) -> Any:
        """``ray``, connected on first use: choosing the engine costs nothing until work arrives."""
        if self._ray is None:
            ray = ray_module()
            if not ray.is_initialized():
                ray.init(address=self.address or None, include_dashboard=False, log_to_driver=False)
            self._ray = ray
        return self._ray

    def run(self, fanout: Fanout[T]) -> list[T | None]:
        ray = self.ray
        refs = {name: ray.put(value) for name, value in fanout.shared.items()}
        task = ray.remote(num_cpus=1)(fanout.fn)
        pending = [task.remote(*call, **refs) for call in fanout.calls]
        index = {ref: i for i, ref in enumerate(pending)}
        results: list[T | None] = [None] * len(fanout.calls)
        waiting = list(pending)
        while waiting:
            timeout = None if fanout.deadline == math.inf else max(fanout.deadline - time.monotonic(), 0.0)
            ready, waiting = ray.wait(waiting, num_returns=1, timeout=timeout)
            if not ready:  # the deadline passed: what is still running is dropped
                for ref in waiting:
                    ray.cancel(ref, force=True)
                break
            for ref in ready:
                i = index[ref]
                results[i] = ray.get(ref)
                fanout.finished(i, results[i])
        return results
