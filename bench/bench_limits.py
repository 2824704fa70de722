"""The connection limits of ``assay serve`` under attack, against the same app on uvicorn's plain
httptools protocol (what ``assay serve`` ran before them), side by side in one run.

Both servers serve the quickstart home with one worker. The guarded one (``assay serve``) runs
with header and body timeouts of 2 s, so that the figures come in seconds (the defaults are 10 s
and 30 s), the default 64 KiB header cap and 128 connections per address. A well-behaved client
scores one item at a time from 127.0.0.1 while raw sockets attack from other loopback addresses:

* slowloris headers: 1,000 connections (8 addresses x 125), each dripping a header line a second;
* slow bodies: 512 connections (8 addresses x 64, the per-client limit), each sending 10 of
  1,000 body bytes: every request slot of the worker;
* one address opening 1,000 connections and sending nothing;
* endless headers: 4 connections, each streaming one header at full speed (up to 256 MB or 10 s);
* and the price of the guards: per request in the protocol (in-process, over a stub
  transport), and under ``wrk`` (one thread, 8 connections) for single-item
  ``POST /v1/scores`` and for ``GET /healthz`` (where the HTTP stack is nearly all the work), the
  two servers measured in rounds whose order alternates (ABBA), as the machine's speed drifts.

    python bench/bench_limits.py [--attack-s 6] [--rounds 4] [--duration 5]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
from harness import free_port, say

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "limits"
TIMEOUT_S = 2.0
ATTACKERS = [f"127.0.9.{n}" for n in range(1, 9)]  # eight loopback addresses
POST_LUA = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("{body}", "rb")
wrk.body = f:read("*a")
f:close()
"""


@dataclass
class Served:
    name: str
    url: str
    port: int
    process: subprocess.Popen[bytes]

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        return int(match[1]) / 1024 if match else float("nan")


@contextmanager
def serve(name: str, command: list[str], port: int, env: dict[str, str]) -> Iterator[Served]:
    log = OUT / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready:\n{log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield Served(name, url, port, process)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- raw attackers ---------------------------------------------------------------------------


@dataclass
class Conn:
    sock: socket.socket
    opened: float
    received: bytes = b""
    closed_at: float | None = None
    sent: int = 0

    @classmethod
    def open(cls, port: int, source: str) -> Conn | None:
        sock = socket.socket()
        sock.bind((source, 0))
        try:
            sock.connect(("127.0.0.1", port))
        except OSError:
            sock.close()
            return None
        sock.setblocking(False)
        return cls(sock, time.monotonic())

    @property
    def closed(self) -> bool:
        return self.closed_at is not None

    def send(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self.sent += self.sock.send(data)
        except BlockingIOError:
            pass
        except OSError:
            self.read()
            self._close_seen()

    def read(self) -> None:
        while not self.closed:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                self._close_seen()
                return
            if not chunk:
                self._close_seen()
                return
            self.received += chunk

    def _close_seen(self) -> None:
        if self.closed_at is None:
            self.closed_at = time.monotonic()

    @property
    def status(self) -> str:
        match = re.match(rb"HTTP/1\.1 (\d{3}) ", self.received)
        return match[1].decode() if match else ("reset/closed" if self.closed else "open")


def poll(conns: list[Conn], seconds: float) -> None:
    """Read what the server sent to ``conns``, for ``seconds`` (once when 0); no select(): over 1,024 fds."""
    deadline = time.monotonic() + seconds
    while True:
        for conn in conns:
            conn.read()
        if time.monotonic() >= deadline or all(c.closed for c in conns):
            return
        time.sleep(0.01)


def open_many(port: int, sources: list[str], per_source: int) -> list[Conn]:
    conns = []
    for source in sources:
        for _ in range(per_source):
            conn = Conn.open(port, source)
            if conn is not None:
                conns.append(conn)
    return conns


def close_all(conns: list[Conn]) -> None:
    for conn in conns:
        conn.sock.close()


def tally(conns: list[Conn]) -> str:
    counts: dict[str, int] = {}
    for conn in conns:
        counts[conn.status] = counts.get(conn.status, 0) + 1
    return ", ".join(f"{k}: {v:,}" for k, v in sorted(counts.items()))


# --- the well-behaved client ---------------------------------------------------------------------


@dataclass
class Visits:
    answers: list[tuple[float, int, float]] = field(default_factory=list)  # (at, status, seconds)

    def summary(self) -> str:
        ok = [took for _, status, took in self.answers if status == 200]
        if not self.answers:
            return "no answer"
        share = len(ok) / len(self.answers)
        timing = (
            f"p50 {statistics.median(ok) * 1000:.1f} ms, max {max(ok) * 1000:.1f} ms"
            if ok
            else "never answered 200"
        )
        return f"{len(self.answers)} requests, {share:.0%} answered 200; {timing}"

    def first_ok_after(self, start: float) -> float | None:
        times = [at - start for at, status, _ in self.answers if status == 200 and at >= start]
        return min(times) if times else None


def visit_for(url: str, body: bytes, seconds: float, between: Callable[[], None]) -> Visits:
    """Score one item at a time for ``seconds``, calling ``between`` after each answer (the attack's turn)."""
    visits = Visits()
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=30) as http:
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                status = http.post(
                    "/v1/scores", content=body, headers={"content-type": "application/json"}
                ).status_code
            except httpx.HTTPError:
                status = 0
            took = time.monotonic() - started
            visits.answers.append((started + took, status, took))
            between()
            time.sleep(0.02)
    return visits


# --- scenarios ----------------------------------------------------------------------------------


def baseline(served: Served, body: bytes, seconds: float) -> str:
    return visit_for(served.url, body, seconds, lambda: None).summary()


def slowloris(served: Served, body: bytes, seconds: float) -> tuple[str, str, str]:
    conns = open_many(served.port, ATTACKERS, 125)
    for n, conn in enumerate(conns):
        conn.send(b"POST /v1/scores HTTP/1.1\r\nHost: assay\r\nX-%d: a\r\n" % n)
    last = time.monotonic()

    def drip() -> None:
        nonlocal last
        if time.monotonic() - last >= 1.0:
            for n, conn in enumerate(conns):
                conn.send(b"X-%d: a\r\n" % n)
            last = time.monotonic()
        poll(conns, 0)

    try:
        visits = visit_for(served.url, body, seconds, drip)
        poll(conns, 0.2)
        still_open = sum(not c.closed for c in conns)
        return (
            visits.summary(),
            f"{still_open:,} of {len(conns):,} still open after {seconds:g} s",
            tally(conns),
        )
    finally:
        close_all(conns)


def slow_bodies(served: Served, body: bytes, seconds: float) -> tuple[str, str, str]:
    head = b"POST /v1/scores HTTP/1.1\r\nHost: assay\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    conns = open_many(served.port, ATTACKERS, 64)
    start = time.monotonic()
    for conn in conns:
        conn.send(head + b'{"models":')
    time.sleep(0.3)  # let them in
    ready = httpx.get(served.url + "/readyz").status_code
    try:
        visits = visit_for(served.url, body, seconds, lambda: poll(conns, 0))
        first = visits.first_ok_after(start)
        first_text = f"first 200 after {first:.2f} s" if first is not None else f"no 200 in {seconds:g} s"
        return (
            f"{visits.summary()}; {first_text}; /readyz {ready} while they held the slots",
            f"{sum(not c.closed for c in conns):,} of {len(conns):,} still open after {seconds:g} s",
            tally(conns),
        )
    finally:
        close_all(conns)


def idle_flood(served: Served, body: bytes) -> tuple[str, str]:
    start = time.monotonic()
    conns = open_many(served.port, ["127.0.9.100"], 1000)
    opened = time.monotonic() - start
    poll(conns, 0.5)
    refused = [c for c in conns if c.closed]
    took = [c.closed_at - c.opened for c in refused if c.closed_at is not None]
    refused_text = (
        f"{len(refused):,} refused, median {statistics.median(took) * 1000:.1f} ms after connecting"
        if refused
        else "none refused"
    )
    visits = visit_for(served.url, body, 2, lambda: None)
    close_all(conns)
    return (
        f"{len(conns):,} connected in {opened:.2f} s; {refused_text}; {len(conns) - len(refused):,} held",
        (visits.summary()),
    )


def endless_headers(served: Served, body: bytes, limit_mb: int, seconds: float) -> tuple[str, str, str]:
    rss_before = served.rss_mb()
    conns = open_many(served.port, ATTACKERS[:4], 1)
    for conn in conns:
        conn.send(b"GET /v1/models HTTP/1.1\r\nHost: assay\r\nX-Endless: ")
    chunk = b"a" * 65536
    peak = rss_before
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and not all(c.closed or c.sent >= limit_mb << 20 for c in conns):
            for conn in conns:
                if conn.sent < limit_mb << 20:
                    conn.send(chunk)
            poll(conns, 0)
            peak = max(peak, served.rss_mb())
        poll(conns, 0.5)
        peak = max(peak, served.rss_mb())
        visits = visit_for(served.url, body, 1, lambda: None)
        sent = ", ".join(f"{c.sent / 2**20:.1f}" for c in conns)
        return (
            f"RSS {rss_before:.0f} MB -> peak {peak:.0f} MB (+{peak - rss_before:.0f} MB)",
            f"MB taken per connection before it was closed or the sender stopped: {sent}; {tally(conns)}",
            visits.summary(),
        )
    finally:
        close_all(conns)


def wrk(url: str, script: Path | None, duration: int) -> float:
    """Requests per second of one wrk run: ``script`` POSTs a score request, None GETs /healthz."""
    target = ["-s", str(script), url + "/v1/scores"] if script is not None else [url + "/healthz"]
    result = subprocess.run(
        ["wrk", "-t1", "-c8", f"-d{duration}s", *target],
        capture_output=True,
        text=True,
        check=True,
    )
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", result.stdout)
    if errors:
        raise RuntimeError(f"wrk saw errors: {result.stdout}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)[1])  # type: ignore[index]


def protocol_cost(requests: int, repeat: int) -> dict[str, float]:
    """Microseconds per request spent by each protocol class and a minimal app, in this process.

    The same keep-alive POST fed ``requests`` times into one connection over a stub transport:
    what the guards add to a request's path, without the machine's load on wrk's figures.
    """
    import asyncio

    import uvloop
    from uvicorn.config import Config
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    from assay.web.server import GuardedHttpToolsProtocol

    async def app(scope: dict, receive: Callable, send: Callable) -> None:  # type: ignore[type-arg]
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})

    class Transport(asyncio.Transport):
        written = 0

        def get_extra_info(self, name: str, default: object = None) -> object:
            return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

        def write(self, data: bytes) -> None:  # type: ignore[override]
            self.written += 1

        def is_closing(self) -> bool:
            return False

        def close(self) -> None:
            pass

        def pause_reading(self) -> None:
            pass

        def resume_reading(self) -> None:
            pass

    body = b'{"models": ["malignant"], "items": [{"id": "1", "features": {"mean radius": 1.0}}]}'
    request = (
        b"POST /v1/scores HTTP/1.1\r\nHost: assay\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    ) + body
    config = Config(app=app, lifespan="off", access_log=False, log_level="warning", proxy_headers=False)
    config.load()

    async def run(cls: type[HttpToolsProtocol]) -> float:
        protocol = cls(config=config, server_state=ServerState(), app_state={})
        transport = Transport()
        protocol.connection_made(transport)
        started = time.perf_counter()
        for _ in range(requests):
            protocol.data_received(request)
            await asyncio.sleep(0)
        took = time.perf_counter() - started
        assert transport.written == 2 * requests, transport.written
        protocol.connection_lost(None)
        return took / requests * 1e6

    best = {"plain": float("inf"), "guarded": float("inf")}
    for _ in range(repeat):
        for name, cls in (("plain", HttpToolsProtocol), ("guarded", GuardedHttpToolsProtocol)):
            best[name] = min(best[name], uvloop.run(run(cls)))
    return best


# --- main -------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attack-s", type=float, default=6.0, help="Seconds each attack runs.")
    parser.add_argument("--rounds", type=int, default=4, help="wrk rounds per server and target.")
    parser.add_argument("--duration", type=int, default=5, help="Seconds per wrk round.")
    parser.add_argument("--endless-mb", type=int, default=256, help="Most MB each endless header sends.")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed (apt-get install wrk)")
    OUT.mkdir(parents=True, exist_ok=True)
    home = OUT / "home"
    if not (home / "assay.db").exists():
        say("training the quickstart model ...")
        subprocess.run(["assay", "--home", str(home), "quickstart"], check=True, capture_output=True)
    env = {
        "ASSAY_HOME": str(home),
        "ASSAY_HEADER_TIMEOUT_S": str(TIMEOUT_S),
        "ASSAY_BODY_TIMEOUT_S": str(TIMEOUT_S),
    }
    guarded_port, plain_port = free_port(), free_port()
    plain = (
        "import uvicorn; uvicorn.run('assay.web.app:app_from_environment', factory=True, host='127.0.0.1', "
        f"port={plain_port}, loop='uvloop', http='httptools', access_log=False, log_level='warning')"
    )
    with ExitStack() as stack:
        servers = [
            stack.enter_context(
                serve(
                    "assay serve",
                    ["assay", "--home", str(home), "serve", "--port", str(guarded_port)],
                    guarded_port,
                    env,
                )
            ),
            stack.enter_context(serve("plain httptools", [sys.executable, "-c", plain], plain_port, env)),
        ]
        features = httpx.get(servers[0].url + "/v1/models/malignant").json()["features"]
        item = {"id": "1", "features": {f["name"]: 1.0 for f in features}}
        body = orjson.dumps({"models": ["malignant"], "items": [item]})
        assert httpx.post(servers[0].url + "/v1/scores", content=body).status_code == 200
        script = OUT / "post.lua"
        (OUT / "body.json").write_bytes(body)
        script.write_text(POST_LUA.format(body=OUT / "body.json"))

        say("protocol cost ...")
        cost = protocol_cost(20_000, 7)
        say("throughput ...")
        targets: dict[str, Path | None] = {"single-item POST /v1/scores": script, "GET /healthz": None}
        rates: dict[tuple[str, str], list[float]] = {(t, s.name): [] for t in targets for s in servers}
        for n in range(args.rounds):
            for served in servers if n % 2 == 0 else servers[::-1]:
                for target, target_script in targets.items():
                    rates[(target, served.name)].append(wrk(served.url, target_script, args.duration))
        rows: dict[str, dict[str, str]] = {s.name: {} for s in servers}
        for served in servers:
            say(f"{served.name}: attacks ...")
            row = rows[served.name]
            row["quiet"] = baseline(served, body, 2)
            row["slowloris"], row["slowloris_conns"], row["slowloris_answers"] = slowloris(
                served, body, args.attack_s
            )
            time.sleep(TIMEOUT_S)
            row["slow_body"], row["slow_body_conns"], row["slow_body_answers"] = slow_bodies(
                served, body, args.attack_s
            )
            time.sleep(TIMEOUT_S)
            row["idle"], row["idle_visitor"] = idle_flood(served, body)
            time.sleep(TIMEOUT_S)
            row["endless_rss"], row["endless_taken"], row["endless_visitor"] = endless_headers(
                served, body, args.endless_mb, 10
            )

    guarded, peer = (s.name for s in servers)
    print(
        f"machine: {os.cpu_count()} CPUs; one worker each; timeouts {TIMEOUT_S:g} s (header and body) on "
        f"assay serve; attacks of {args.attack_s:g} s; the visitor scores one item at a time from 127.0.0.1\n"
    )
    print("| | assay serve (guarded httptools) | same app, plain uvicorn httptools |")
    print("|---|---|---|")
    labels = [
        ("quiet", "well-behaved requests, no attack"),
        ("slowloris", "during slowloris headers (1,000 connections, 8 addresses)"),
        ("slowloris_conns", "  attack connections"),
        ("slowloris_answers", "  what they received"),
        ("slow_body", "during slow bodies (512 connections, 8 addresses: every slot)"),
        ("slow_body_conns", "  attack connections"),
        ("slow_body_answers", "  what they received"),
        ("idle", "1,000 idle connections from one address"),
        ("idle_visitor", "  well-behaved requests meanwhile"),
        ("endless_rss", f"4 endless headers (up to {args.endless_mb} MB each, 10 s)"),
        ("endless_taken", "  per connection"),
        ("endless_visitor", "  well-behaved requests after"),
    ]
    for key, label in labels:
        print(f"| {label} | {rows[guarded][key]} | {rows[peer][key]} |")
    print(
        f"\nper request in the protocol and a minimal app (best of 7 x 20,000 keep-alive POSTs over a stub "
        f"transport): plain httptools {cost['plain']:.1f} µs, guarded {cost['guarded']:.1f} µs "
        f"(+{cost['guarded'] - cost['plain']:.1f} µs)"
    )
    print(f"\nwrk -t1 -c8 -d{args.duration}s, {args.rounds} rounds in alternating order; medians:\n")
    print("| req/s | assay serve | plain httptools | ratio (per round) |")
    print("|---|---|---|---|")
    for target in targets:
        ours, theirs = rates[(target, guarded)], rates[(target, peer)]
        per_round = ", ".join(f"{a / b:.2f}" for a, b in zip(ours, theirs, strict=True))
        g, p = statistics.median(ours), statistics.median(theirs)
        print(f"| {target} | {g:,.0f} | {p:,.0f} | {g / p:.2f}x ({per_round}) |")


if __name__ == "__main__":
    main()
