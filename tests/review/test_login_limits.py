"""Logins are rationed: lock-outs per account and per address, and a bound on password hashing.

The throttle is tested on its own with a clock the test moves; then a real ``assay serve`` is
flooded with parallel failed logins (argon2 at 64 MiB each), and must keep answering its health
check quickly with its memory bounded.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from assay.review.logins import LoginThrottle, LoginThrottled, address_key
from assay.settings import Settings
from assay.workspace import Workspace
from tests.reviewing import PASSWORD, Server, users


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _throttle(clock: Clock, per_account: int = 5, per_address: int = 30) -> LoginThrottle:
    return LoginThrottle(per_account=per_account, per_address=per_address, window_s=60, clock=clock)


def _fail(throttle: LoginThrottle, username: str, address: str = "10.0.0.1") -> None:
    throttle.failed(throttle.begin(username, address))


def test_an_account_is_locked_after_its_failures_and_the_locks_grow():
    clock = Clock()
    throttle = _throttle(clock)
    for _ in range(5):
        _fail(throttle, "ana")
    with pytest.raises(LoginThrottled) as locked:
        throttle.begin("ana", "10.0.0.2")  # from anywhere, and whatever the password would be
    assert locked.value.status == 429 and locked.value.retry_after == 60
    assert locked.value.code == "too_many_logins"
    throttle.begin("ben", "10.0.0.1")  # another account is not locked
    with pytest.raises(LoginThrottled):
        throttle.begin("ANA ", "10.0.0.3")  # the name as typed differently is the same account
    clock.now += 59
    with pytest.raises(LoginThrottled) as locked:
        throttle.begin("ana", "10.0.0.2")
    assert locked.value.retry_after == 1
    clock.now += 1.5
    # The next round of failures locks it for twice as long, then four times, up to the cap.
    for expected in (120, 240, 480, 900, 900):
        for _ in range(5):
            _fail(throttle, "ana", "10.0.0.4")
        with pytest.raises(LoginThrottled) as locked:
            throttle.begin("ana", "10.0.0.4")
        assert locked.value.retry_after == expected
        clock.now += expected + 0.5
    # Quiet for longer than the longest lock: the next lock is a short one again.
    clock.now += 901
    for _ in range(5):
        _fail(throttle, "ana", "10.0.0.5")
    with pytest.raises(LoginThrottled) as locked:
        throttle.begin("ana", "10.0.0.5")
    assert locked.value.retry_after == 60


def test_failures_age_out_of_the_window_and_a_success_clears_the_account():
    clock = Clock()
    throttle = _throttle(clock)
    for _ in range(4):
        _fail(throttle, "ana")
    clock.now += 61  # those four are out of the window
    for _ in range(4):
        _fail(throttle, "ana")
    throttle.succeeded(throttle.begin("ana", "10.0.0.1"))  # the right password
    for _ in range(4):
        _fail(throttle, "ana")
    throttle.begin("ana", "10.0.0.1")  # 4 failures since the success: not locked


def test_an_address_is_locked_after_failures_on_many_accounts():
    clock = Clock()
    throttle = _throttle(clock, per_address=10)
    for i in range(10):
        _fail(throttle, f"user{i}", "203.0.113.9")
    with pytest.raises(LoginThrottled) as locked:
        throttle.begin("ana", "203.0.113.9")
    assert locked.value.retry_after == 60
    throttle.begin("ana", "203.0.113.10")  # ana herself, from elsewhere, is not locked


def test_parallel_attempts_count_before_their_passwords_are_checked():
    """32 guesses at once: only the limit's worth get to a password check."""
    throttle = _throttle(Clock())
    admitted, refused = [], 0
    for _ in range(32):
        try:
            admitted.append(throttle.begin("ana", "10.0.0.1"))
        except LoginThrottled as exc:
            refused += 1
            assert exc.retry_after == 1  # the ones in flight settle within seconds
    assert len(admitted) == 5 and refused == 27
    for attempt in admitted:
        throttle.failed(attempt)
    with pytest.raises(LoginThrottled) as locked:
        throttle.begin("ana", "10.0.0.1")
    assert locked.value.retry_after == 60


def test_an_attempt_the_server_could_not_check_does_not_count():
    throttle = _throttle(Clock())
    for _ in range(10):
        throttle.cancelled(throttle.begin("ana", "10.0.0.1"))  # e.g. no hashing slot: 503
    for _ in range(4):
        _fail(throttle, "ana")
    throttle.begin("ana", "10.0.0.1")


def test_memory_is_bounded_by_the_number_of_keys():
    throttle = LoginThrottle(per_account=5, per_address=10**9, window_s=60, max_keys=100, clock=Clock())
    for i in range(1000):
        _fail(throttle, f"sprayed{i}")
    assert all(len(records) <= 100 for records in throttle._records.values())


def test_address_keys():
    assert address_key("203.0.113.9") == "203.0.113.9"
    assert address_key("::ffff:203.0.113.9") == "203.0.113.9"
    # One IPv6 machine commonly holds a whole /64: all of it is one address here.
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert address_key(None) == "unknown"


# --- a real server, flooded ---------------------------------------------------------------------


def _rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads memory use from /proc")
def test_a_login_flood_does_not_starve_the_server(trained_home, tmp_path):
    """32 clients guessing passwords at once, with the lock-outs out of the way (a flood from many
    addresses): the health check still answers fast and the server's memory stays bounded,
    because at most two argon2 hashes (64 MiB each) run at once."""
    ws = Workspace.open(Settings.load(home=trained_home, environ={}))
    try:
        users(ws, "ana")
    finally:
        ws.close()
    env = {"ASSAY_LOGIN_FAILURES_PER_ACCOUNT": "1000000", "ASSAY_LOGIN_FAILURES_PER_ADDRESS": "1000000"}
    server = Server(trained_home, tmp_path / "server.log", env=env).start()
    try:
        pid = server.process.pid
        with httpx.Client(base_url=server.url, timeout=30) as client:
            r = client.post("/v1/session", json={"username": "ana", "password": PASSWORD})
            assert r.status_code == 200, r.text  # one hash done: argon2 and its memory are warm
        baseline = _rss_kib(pid, "VmRSS")
        stop = threading.Event()
        statuses: list[int] = []

        def guess(k: int) -> None:
            with httpx.Client(base_url=server.url, timeout=30) as c:
                while not stop.is_set():
                    r = c.post("/v1/session", json={"username": f"user{k}", "password": f"guess-{k}"})
                    statuses.append(r.status_code)

        health: list[float] = []
        with ThreadPoolExecutor(32) as pool:
            floods = [pool.submit(guess, k) for k in range(32)]
            try:
                time.sleep(1.0)  # the flood is on
                with httpx.Client(base_url=server.url, timeout=30) as c:
                    deadline = time.monotonic() + 6
                    while time.monotonic() < deadline:
                        start = time.perf_counter()
                        assert c.get("/healthz").status_code == 200
                        health.append(time.perf_counter() - start)
                        time.sleep(0.05)
                    start = time.perf_counter()
                    real = c.post("/v1/session", json={"username": "ana", "password": PASSWORD})
                    real_s = time.perf_counter() - start
            finally:
                stop.set()
                for f in floods:
                    f.result()
        peak = _rss_kib(pid, "VmHWM")
        assert max(health) < 1.0, f"/healthz took up to {max(health):.2f} s during the flood"
        # A real login is answered within the hashing wait (2 s) plus its own hash: done, or 503.
        assert real.status_code in (200, 503) and real_s < 5, (real.status_code, real_s)
        assert set(statuses) <= {401, 503} and statuses.count(401) > 10, sorted(set(statuses))
        assert statuses.count(503) > 0  # the excess was turned away rather than queued for ever
        grown_mib = (peak - baseline) / 1024
        assert grown_mib < 400, f"the server grew by {grown_mib:.0f} MiB during the flood"
        with httpx.Client(base_url=server.url, timeout=30) as c:  # and afterwards all is well
            assert c.post("/v1/session", json={"username": "ana", "password": PASSWORD}).status_code == 200
    finally:
        server.stop()
