"""The local engine: calls in order, a deadline that leaves a prefix, Parquet folders in batches."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from assay.engines.engine import LocalEngine, open_engine
from assay.errors import SettingsError


def _scaled(factor: int, *, offset: int) -> int:
    return factor * 10 + offset


def test_map_keeps_the_order_of_the_calls_and_passes_shared_data() -> None:
    seen: list[tuple[int, int]] = []
    out = LocalEngine().map(
        _scaled, [(1,), (2,), (3,)], shared={"offset": 5}, done=lambda i, r: seen.append((i, r))
    )
    assert out == [15, 25, 35] and seen == [(0, 15), (1, 25), (2, 35)]


def test_a_deadline_leaves_a_prefix_of_the_calls() -> None:
    def slow(i: int) -> int:
        time.sleep(0.05)
        return i

    out = LocalEngine().map(slow, [(i,) for i in range(20)], deadline=time.monotonic() + 0.12)
    finished = [r for r in out if r is not None]
    assert 1 <= len(finished) < 20 and out[: len(finished)] == list(range(len(finished)))
    assert all(r is None for r in out[len(finished) :])


class _Doubler:
    def __init__(self, column: str) -> None:
        self.column = column
        self.batches = 0

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"id": batch["id"], "twice": batch[self.column] * 2})


def test_map_parquet_writes_every_row_once(tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    for part in range(3):
        ids = np.arange(part * 1000, part * 1000 + 1000)
        pd.DataFrame({"id": ids, "x": ids.astype(float)}).to_parquet(source / f"p{part}.parquet")
    written = LocalEngine().map_parquet(
        _Doubler, {"column": "x"}, source, tmp_path / "out", workers=1, batch_rows=700
    )
    out = pd.read_parquet(tmp_path / "out").sort_values("id")
    assert written == 3000 and len(list((tmp_path / "out").glob("*.parquet"))) > 3
    assert out["id"].tolist() == list(range(3000)) and (out["twice"] == out["id"] * 2).all()


def test_an_unknown_engine_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match="engine must be one of local, ray; got 'spark'"):
        open_engine("spark")


def test_the_training_cores_come_from_the_setting_or_the_idle_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    from assay.engines import engine as module

    monkeypatch.setattr(module.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(module.os, "getloadavg", lambda: (5.4, 0.0, 0.0))
    assert [module.cores(jobs) for jobs in (3, 1, 12)] == [3, 1, 12]  # the setting, as given
    assert module.cores(0) == 3  # 8 cores, 5.4 of them busy
    monkeypatch.setattr(module.os, "getloadavg", lambda: (27.0, 0.0, 0.0))
    assert module.cores(0) == 1  # never none
    monkeypatch.setattr(module.os, "getloadavg", lambda: (0.1, 0.0, 0.0))
    assert module.cores(0) == 8  # never more than the machine has
    with pytest.raises(SettingsError) as caught:
        module.cores(-1)
    assert caught.value.field == "train_jobs"


def test_the_local_engine_gives_each_fit_the_cores_and_ray_one_thread_per_fold() -> None:
    # Folds side by side or threads within each fit, never both.
    local = open_engine("local", jobs=3)
    assert (local.jobs, local.fit_threads) == (3, 3)
    from assay.engines.ray_engine import RayEngine  # built without starting Ray

    ray = RayEngine(jobs=3)
    assert (ray.jobs, ray.fit_threads) == (3, 1)
