"""What the HTTP benchmarks share: starting servers, driving ``wrk``, timing calls and commands.

Files (wrk scripts, request bodies, server logs) go to ``OUT``, which a benchmark sets to its
own folder before it starts anything.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

OUT = Path(__file__).resolve().parent / "out"
PIDS: dict[str, int] = {}  # base URL -> server process (one worker serves in that process)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"server not ready after {timeout}s:\n{log.read_text()}")


@contextmanager
def server(
    command: list[str], ready_path: str, port: int, name: str, env: dict[str, str] | None = None
) -> Iterator[str]:
    """Run a server subprocess until the block ends; yields its base URL."""
    log = OUT / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    url = f"http://127.0.0.1:{port}"
    PIDS[url] = process.pid
    try:
        wait_ready(url + ready_path, process, log)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def assay_server(home: Path, name: str, workers: int = 1, **env: str) -> Any:
    port = free_port()
    command = ["assay", "--home", str(home), "serve", "--port", str(port), "--workers", str(workers)]
    return server(command, "/readyz", port, name, env)


@contextmanager
def raw_server(command: list[str], port: int) -> Iterator[str]:
    """The hand-written app (bench/raw_server.py): it has no readiness route, so wait until
    its port answers a request."""
    log = OUT / "raw.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(urllib.request.Request(url + "/const", data=b"{}"), timeout=2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(log.read_text()) from None
                time.sleep(0.3)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)


def wrk(url: str, script: Path, duration: int, connections: int) -> dict[str, Any]:
    """req/s, p50/p99 in ms and non-2xx count from one wrk run."""
    result = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    )
    text = result.stdout

    def latency(pct: str) -> float:
        match = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        assert match, text
        value, unit = float(match[1]), match[2]
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    socket_errors = re.search(r"Socket errors: (.*)", text)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text)[1]),  # type: ignore[index]
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "errors": int(errors[1]) if errors else 0,
        "socket_errors": socket_errors[1] if socket_errors else "",
    }


def lua(name: str, text: str) -> Path:
    path = OUT / name
    path.write_text(text)
    return path


def write_json(path: Path, data: Any) -> Path:
    path.write_bytes(orjson.dumps(data))
    return path


def best_rate(fn: Callable[[], Any], rows: int, repeat: int) -> float:
    """Rows per second of the best of ``repeat`` calls (the machine is shared: the best is the least disturbed)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return rows / best


def timed_command(command: list[str]) -> tuple[float, float, str]:
    """(wall seconds, user + system CPU seconds, stderr) of one run of ``command``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu, result.stderr


def median(values: list[float]) -> float:
    return float(statistics.median(values))
