"""``assay serve`` against clients that attack it: slow headers, slow bodies, endless headers,
many connections from one address, clients that hang up; and threshold queries built to backtrack.

The connection-level tests run the real server in a subprocess on 127.0.0.1 and attack it with
raw sockets from other loopback addresses (127.0.x.y), each test from its own, so the per-address
cap of one test never sees another's connections. Every attack is bounded in connections and in
time. The readiness and threshold tests run the app in-process.
"""

from __future__ import annotations

import re
import select
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
import pytest

from assay.errors import SettingsError
from assay.settings import Settings
from assay.web.app import create_app
from assay.web.server import Guards
from tests.reviewing import Server
from tests.servers import AppClient, edit_items
from tests.web.test_limits import Held

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
PER_ADDRESS = 8
TOTAL = 24  # three addresses' worth of connections fill the server
SLACK_S = 2.0  # what a loaded test machine may add to a deadline


@dataclass
class Running:
    server: Server
    url: str
    port: int
    log: Path

    @property
    def pid(self) -> int:
        assert self.server.process is not None
        return self.server.process.pid

    def rss_bytes(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        assert match is not None
        return int(match[1]) * 1024

    def metric(self, prefix: str) -> float:
        """The sum of the samples of ``/metrics`` whose line starts with ``prefix``."""
        text = httpx.get(self.url + "/metrics", timeout=5).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


@pytest.fixture(scope="module")
def running(trained_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    root = tmp_path_factory.mktemp("hardening")
    shutil.copytree(trained_template, root / "copy")
    log = root / "server.log"
    env = {
        "ASSAY_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "ASSAY_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "ASSAY_MAX_CONNECTIONS_PER_ADDRESS": str(PER_ADDRESS),
        "ASSAY_MAX_CONCURRENT_TOTAL": str(TOTAL),
    }
    server = Server(root / "copy" / "home", log, env=env).start(timeout_s=180)
    try:
        yield Running(server, server.url, server.port, log)
    finally:
        server.stop()


# --- raw clients -------------------------------------------------------------------------------


@dataclass
class Conn:
    """A raw TCP connection to the server from a chosen loopback address, read without blocking."""

    sock: socket.socket
    opened: float
    received: bytes = b""
    closed_at: float | None = None  # when the server closed (or reset) it
    reset: bool = False
    sent: int = 0

    @classmethod
    def open(cls, port: int, source: str) -> Conn:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        return cls(sock, time.monotonic())

    @property
    def closed(self) -> bool:
        return self.closed_at is not None

    @property
    def status(self) -> int | None:
        match = re.match(rb"HTTP/1\.1 (\d{3}) ", self.received)
        return int(match[1]) if match else None

    def send(self, data: bytes) -> bool:
        """Send what the socket takes now; False once the server has closed it."""
        if self.closed:
            return False
        try:
            self.sent += self.sock.send(data)
        except BlockingIOError:
            pass
        except OSError:  # reset or broken pipe: the server hung up
            self._poll()
            self._mark_closed(reset=True)
            return False
        return True

    def _poll(self) -> None:
        while not self.closed:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                self._mark_closed(reset=True)
                return
            if not chunk:
                self._mark_closed(reset=False)
                return
            self.received += chunk

    def _mark_closed(self, *, reset: bool) -> None:
        if self.closed_at is None:
            self.closed_at = time.monotonic()
            self.reset = reset

    def close(self) -> None:
        self.sock.close()


def poll(conns: list[Conn], seconds: float) -> None:
    """Read whatever the server sends to ``conns`` for up to ``seconds`` (less once all are closed)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        open_ = [c for c in conns if not c.closed]
        if not open_:
            return
        ready, _, _ = select.select([c.sock for c in open_], [], [], min(0.05, deadline - time.monotonic()))
        for conn in open_:
            if conn.sock in ready:
                conn._poll()


def until_closed(conns: list[Conn], seconds: float, each: Callable[[], None] = lambda: None) -> None:
    """Poll ``conns`` until the server has closed them all or ``seconds`` pass, calling ``each`` between."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not all(c.closed for c in conns):
        each()
        poll(conns, 0.1)


@dataclass
class Visitor:
    """A well-behaved client from 127.0.0.1: scores one item at a time and notes how long each took."""

    url: str
    answers: list[tuple[int, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.url, timeout=10)
        self.body = {"models": ["damaging"], "items": edit_items(1)}

    def visit(self) -> tuple[int, float]:
        started = time.monotonic()
        status = self.http.post("/v1/scores", json=self.body).status_code
        answer = (status, time.monotonic() - started)
        self.answers.append(answer)
        return answer

    def close(self) -> None:
        self.http.close()


def _post_head(length: int) -> bytes:
    return (
        b"POST /v1/scores HTTP/1.1\r\nHost: assay\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % length
    )


# --- slow headers -------------------------------------------------------------------------------


def test_slowloris_headers_get_408_and_the_connection_closed(running: Running) -> None:
    # Three addresses, each at the per-address cap, drip a header line every 0.2 s.
    conns = [Conn.open(running.port, f"127.0.1.{a}") for a in (1, 2, 3) for _ in range(PER_ADDRESS)]
    visitor = Visitor(running.url)
    last_drip = 0.0

    def drip_and_visit() -> None:
        nonlocal last_drip
        if time.monotonic() - last_drip >= 0.2:
            for n, conn in enumerate(conns):
                conn.send(
                    b"POST /v1/scores HTTP/1.1\r\nHost: assay\r\n" if not conn.sent else b"X-%d: a\r\n" % n
                )
            last_drip = time.monotonic()
        visitor.visit()

    try:
        until_closed(conns, HEADER_TIMEOUT_S + SLACK_S + 2, drip_and_visit)
    finally:
        for conn in conns:
            conn.close()
        visitor.close()
    assert all(conn.closed for conn in conns), "slow headers kept their connections past the header timeout"
    assert {conn.status for conn in conns} == {408}
    assert all(b'"code":"request_timeout"' in conn.received for conn in conns)
    assert max(conn.closed_at - conn.opened for conn in conns if conn.closed_at) < HEADER_TIMEOUT_S + SLACK_S
    # The attack never kept a well-behaved client waiting.
    assert visitor.answers and all(status == 200 and took < 1.0 for status, took in visitor.answers)


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(running: Running) -> None:
    conns = [Conn.open(running.port, "127.0.1.10") for _ in range(3)]
    try:
        poll(conns, HEADER_TIMEOUT_S / 2)
        assert not any(conn.closed for conn in conns)
        until_closed(conns, HEADER_TIMEOUT_S + SLACK_S)
    finally:
        for conn in conns:
            conn.close()
    assert all(conn.closed and conn.received == b"" for conn in conns)  # closed without a word


# --- slow bodies -----------------------------------------------------------------------------------


def test_slow_bodies_are_cut_off_and_readiness_reports_saturation(running: Running) -> None:
    timeouts_before = running.metric('assay_requests_total{method="POST",route="/v1/scores",status="408"}')
    # Enough addresses at their cap to take every request slot; each sends 10 of 1,000 bytes.
    conns = [Conn.open(running.port, f"127.0.2.{a}") for a in (1, 2, 3) for _ in range(PER_ADDRESS)]
    assert len(conns) == TOTAL
    visitor = Visitor(running.url)
    try:
        for conn in conns:
            conn.send(_post_head(1000) + b'{"models":')
        deadline = time.monotonic() + 2
        while httpx.get(running.url + "/readyz").status_code != 503:
            assert time.monotonic() < deadline, "/readyz never reported the server full"
            time.sleep(0.02)
        full = httpx.get(running.url + "/readyz")
        assert full.json()["error"]["code"] == "saturated"
        assert httpx.get(running.url + "/healthz").status_code == 200  # liveness is not readiness
        status, took = visitor.visit()
        assert status == 503 and took < 1.0  # refused, quickly, while every slot is held
        until_closed(conns, BODY_TIMEOUT_S + SLACK_S)
        assert all(conn.closed for conn in conns), "slow bodies kept their request slots"
        assert {conn.status for conn in conns} == {408}
        assert all(b'"field":"body"' in conn.received for conn in conns)
        # The slots are back: ready again, and the visitor is served.
        assert httpx.get(running.url + "/readyz").status_code == 200
        status, took = visitor.visit()
        assert status == 200 and took < 1.0
    finally:
        for conn in conns:
            conn.close()
        visitor.close()
    timeouts = running.metric('assay_requests_total{method="POST",route="/v1/scores",status="408"}')
    assert timeouts - timeouts_before == TOTAL


def test_a_body_sent_in_pieces_within_the_timeout_is_answered(running: Running) -> None:
    body = b'{"models": ["damaging"], "items": []}'
    conn = Conn.open(running.port, "127.0.2.10")
    try:
        conn.send(_post_head(len(body)))
        for piece in (body[:10], body[10:20], body[20:]):
            time.sleep(BODY_TIMEOUT_S / 4)
            conn.send(piece)
        poll([conn], 2)
    finally:
        conn.close()
    assert conn.status == 200


def test_one_address_cannot_take_the_server(running: Running) -> None:
    # 40 slow bodies from one address would hold more than the server's 24 slots; the cap lets 8 in.
    conns = []
    for _ in range(40):
        conn = Conn.open(running.port, "127.0.3.1")
        conn.send(_post_head(1000) + b'{"models":')
        conns.append(conn)
    visitor = Visitor(running.url)
    try:
        poll(conns, 0.5)
        refused = [conn for conn in conns if conn.closed]
        assert len(refused) == 40 - PER_ADDRESS
        assert all(conn.status in (429, None) for conn in refused)  # 429, or reset before it was read
        assert any(b'"code":"too_many_connections"' in conn.received for conn in refused)
        for _ in range(5):
            status, took = visitor.visit()
            assert status == 200 and took < 1.0
        held = [conn for conn in conns if not conn.closed]
        until_closed(held, BODY_TIMEOUT_S + SLACK_S)
        assert all(conn.status == 408 for conn in held)
        # Its connections closed, the address may connect again.
        again = Conn.open(running.port, "127.0.3.1")
        again.send(b"GET /healthz HTTP/1.1\r\nHost: assay\r\n\r\n")
        poll([again], 1)
        assert again.status == 200
        again.close()
    finally:
        for conn in conns:
            conn.close()
        visitor.close()


def test_idle_connections_over_the_per_address_cap_are_refused_at_once(running: Running) -> None:
    first = [Conn.open(running.port, "127.0.3.2") for _ in range(PER_ADDRESS)]
    over = [Conn.open(running.port, "127.0.3.2") for _ in range(4)]
    try:
        poll(first + over, 0.5)
        assert not any(conn.closed for conn in first)
        assert all(conn.closed and conn.closed_at - conn.opened < 0.5 for conn in over)
        first[0].close()
        time.sleep(0.1)  # the server sees the close
        replacement = Conn.open(running.port, "127.0.3.2")
        poll([replacement], 0.2)
        assert not replacement.closed
        replacement.close()
    finally:
        for conn in first + over:
            conn.close()


# --- endless headers ---------------------------------------------------------------------------


def test_an_endless_header_is_refused_and_memory_stays_bounded(running: Running) -> None:
    rss_before = running.rss_bytes()
    conns = [Conn.open(running.port, f"127.0.4.{a}") for a in range(1, 5)]
    for conn in conns:
        conn.send(b"GET /v1/models HTTP/1.1\r\nHost: assay\r\nX-Endless: ")
    chunk = b"a" * 65536
    visitor = Visitor(running.url)
    peak = rss_before
    try:
        # Each streams its one header at full speed for up to 5 s or 64 MB, whichever comes first.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not all(c.closed or c.sent > 64 << 20 for c in conns):
            for conn in conns:
                conn.send(chunk)
            poll(conns, 0.001)
            peak = max(peak, running.rss_bytes())
        poll(conns, 1)
        status, took = visitor.visit()
    finally:
        for conn in conns:
            conn.close()
        visitor.close()
    assert all(conn.closed for conn in conns), "the server kept reading an endless header"
    # What was sent before the close is the cap plus socket buffers, not the 64 MB on offer.
    assert all(conn.sent < 32 << 20 for conn in conns)
    assert all(conn.status in (431, None) for conn in conns)  # 431, or reset before it was read
    assert peak - rss_before < 40 << 20, f"RSS grew by {(peak - rss_before) >> 20} MiB"
    assert status == 200 and took < 1.0


def _exchange(port: int, source: str, request: bytes) -> Conn:
    """Send ``request`` whole and read the answer (for up to 2 s)."""
    conn = Conn.open(port, source)
    try:
        conn.sock.setblocking(True)
        conn.sock.sendall(request)
        conn.sock.setblocking(False)
        poll([conn], 2)
    finally:
        conn.close()
    return conn


def test_headers_up_to_the_cap_pass_and_over_it_get_431(running: Running) -> None:
    cap = Guards().max_header_bytes
    assert httpx.get(running.url + "/healthz", headers={"X-Big": "a" * (cap - 1024)}).status_code == 200
    big = b"a" * (cap + 1024)
    too_big = _exchange(
        running.port, "127.0.4.10", b"GET /healthz HTTP/1.1\r\nHost: assay\r\nX-Big: " + big + b"\r\n\r\n"
    )
    assert too_big.status == 431 and b'"code":"headers_too_large"' in too_big.received
    # A long URL counts too, and so do many small headers.
    long_url = _exchange(
        running.port, "127.0.4.10", b"GET /healthz?" + big + b" HTTP/1.1\r\nHost: assay\r\n\r\n"
    )
    assert long_url.status == 431
    many = b"".join(b"X-%d: a\r\n" % n for n in range(cap // 8))
    assert _exchange(running.port, "127.0.4.10", b"GET /healthz HTTP/1.1\r\n" + many + b"\r\n").status == 431


def test_keep_alive_and_pipelined_requests_still_work(running: Running) -> None:
    conn = Conn.open(running.port, "127.0.4.11")
    try:
        conn.send(b"GET /healthz HTTP/1.1\r\nHost: assay\r\n\r\n" * 3)
        poll([conn], 0.5)
        assert conn.received.count(b"HTTP/1.1 200 OK") == 3 and not conn.closed
        # Idle between requests is keep-alive's to limit (uvicorn's 5 s), not the header timeout.
        poll([conn], HEADER_TIMEOUT_S * 2)
        assert not conn.closed
        conn.send(b"GET /healthz HTTP/1.1\r\nHost: assay\r\n\r\n")
        poll([conn], 0.5)
    finally:
        conn.close()
    assert conn.received.count(b"HTTP/1.1 200 OK") == 4 and not conn.closed


# --- clients that hang up ---------------------------------------------------------------------------


def test_a_client_that_hangs_up_mid_body_is_not_a_server_error(running: Running) -> None:
    route = 'assay_requests_total{method="POST",route="/v1/scores",status='
    before = {s: running.metric(f'{route}"{s}"}}') for s in ("499", "500")}
    for _ in range(3):
        conn = Conn.open(running.port, "127.0.5.1")
        conn.send(_post_head(1000) + b'{"models":')
        time.sleep(0.05)
        conn.close()
    deadline = time.monotonic() + 3
    while running.metric(f'{route}"499"}}') - before["499"] < 3:
        assert time.monotonic() < deadline, "hang-ups were not counted as 499"
        time.sleep(0.05)
    assert running.metric(f'{route}"500"}}') == before["500"]
    assert running.metric('assay_errors_total{code="client_closed_request"}') >= 3
    log = running.log.read_text()
    assert "Traceback" not in log and "Exception in ASGI application" not in log


# --- readiness, in-process -------------------------------------------------------------------------------


def test_readyz_is_503_while_every_slot_is_taken(trained_home: Path) -> None:
    settings = Settings.load(home=trained_home, environ={}, max_concurrent_total=1)
    with AppClient(create_app(settings)) as client:
        assert client.get("/readyz").json()["in_flight"] == 0
        held = Held(client, client.http)
        try:
            client.portal.call(anyio.sleep, 0.05)
            busy = client.get("/readyz")
            assert busy.status_code == 503 and busy.json()["error"]["code"] == "saturated"
            assert busy.headers["retry-after"] == "1"
            assert client.get("/v2/health/ready").json() == {"ready": False}
            assert client.get("/healthz").status_code == 200
        finally:
            assert held.release().status_code == 200
        assert client.get("/readyz").status_code == 200
        assert client.get("/v2/health/ready").json() == {"ready": True}


# --- threshold queries ------------------------------------------------------------------------------------


def test_a_backtracking_threshold_query_is_refused_at_once(trained_home: Path) -> None:
    with AppClient(create_app(Settings.load(home=trained_home, environ={}))) as client:
        client.get("/v1/models/damaging").raise_for_status()  # warm: the timing is the query's alone
        started = time.perf_counter()
        response = client.get("/v1/models/damaging", params={"threshold": "maximum " + "@" * 16_000})
        took = time.perf_counter() - started
        assert response.status_code == 400 and took < 0.05
        error = response.json()["error"]
        assert error["code"] == "query_too_long" and error["field"] == "threshold"
        assert "16,008 characters" in error["message"]
        many = client.get(
            "/v1/models/damaging", params={"threshold": ["maximum recall @ precision >= 0.5"] * 11}
        )
        assert many.status_code == 400 and many.json()["error"]["code"] == "too_many_queries"
        ten = client.get(
            "/v1/models/damaging", params={"threshold": ["maximum recall @ precision >= 0.5"] * 10}
        )
        assert ten.status_code == 200 and len(ten.json()["thresholds"]) == 10


def test_guards_refuse_limits_that_cannot_work() -> None:
    with pytest.raises(SettingsError, match="header_timeout_s"):
        Guards(header_timeout_s=0)
    with pytest.raises(SettingsError, match="max_connections_per_address"):
        Guards(max_connections_per_address=-1)
    assert Guards(max_connections_per_address=0).max_connections_per_address == 0  # no cap
