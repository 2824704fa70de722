"""The Parquet log: its layout, processes writing side by side, and a writer killed mid-write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from assay.store.log_files import ParquetLog

_WRITER = """
import sys, numpy as np
from assay.store.log_files import ParquetLog
log = ParquetLog(sys.argv[1])
X, p = np.random.default_rng(0).normal(size=(20_000, 30)), np.full((20_000, 2), 0.5)
print("ready", flush=True)
for k in range(int(sys.argv[2])):
    log.write("m", 1, 1_767_225_600.0 + k, [str(i) for i in range(20_000)], X, p)
"""


def _writer(root: Path, parts: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(root), str(parts)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_files_are_partitioned_by_model_and_date(tmp_path: Path) -> None:
    log = ParquetLog(tmp_path / "log")
    X, p = np.zeros((2, 3)), np.full((2, 2), 0.5)
    log.write("damaging", 4, np.array([1_767_225_600.0, 1_767_225_600.0 + 86_400]), ["a", None], X, p)
    parts = sorted(str(f.relative_to(tmp_path)) for f in (tmp_path / "log").rglob("*.parquet"))
    assert parts == [
        "log/model=damaging/date=2026-01-01/part-000000000001-v4.parquet",
        "log/model=damaging/date=2026-01-02/part-000000000002-v4.parquet",
    ]
    table = pq.read_table(tmp_path / parts[1])  # any Parquet reader reads it
    assert table.column_names == ["at", "id", "x", "p"] and table.column("id").to_pylist() == [None]


def test_processes_writing_side_by_side_never_share_a_part(tmp_path: Path) -> None:
    writers = [_writer(tmp_path / "log", 6) for _ in range(2)]
    for proc in writers:
        assert proc.communicate(timeout=120)[0] == "" and proc.returncode == 0
    log = ParquetLog(tmp_path / "log")
    assert log.versions("m") == {1: 12 * 20_000}
    frame = log.read("m", 1, width=(30, 2))
    assert len(np.unique(frame.positions)) == len(frame) == 12 * 20_000


def test_a_writer_killed_mid_write_leaves_only_whole_parts(tmp_path: Path) -> None:
    for delay in (0.0, 0.05, 0.13):
        proc = _writer(tmp_path / "log", 1000)
        before = len(list((tmp_path / "log").rglob("part-*.parquet")))
        deadline = time.monotonic() + 60
        while len(list((tmp_path / "log").rglob("part-*.parquet"))) == before and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(delay)  # kill it somewhere in writing its next parts
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    log = ParquetLog(tmp_path / "log")
    written = log.versions("m").get(1, 0)
    assert written % 20_000 == 0  # whole parts only
    assert len(log.read("m", 1, width=(30, 2), with_ids=True)) == written
    for part in (tmp_path / "log").rglob("part-*.parquet"):
        assert pq.read_metadata(part).num_rows == 20_000
    # Temporary parts the kills left are not read, and go once they are clearly abandoned.
    log.prune(max_rows=0, retention_s=0, now=time.time() + 7200)
    assert not list((tmp_path / "log").rglob(".*.tmp")) and log.versions("m").get(1, 0) == written
    assert written >= 3 * 20_000
