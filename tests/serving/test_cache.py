"""The score cache: the in-process LRU and Redis (a real server, when ASSAY_TEST_REDIS_URL is set)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from assay.serving.cache import MemoryCache, RedisCache, open_cache, score_key
from assay.settings import Settings

SCORE = {"version": "1", "prediction": True, "probability": {"true": 0.8, "false": 0.2}}


def test_memory_cache_keeps_the_most_recently_used() -> None:
    cache = MemoryCache(2)
    cache.set_many({"a": {"n": 1}, "b": {"n": 2}})
    assert cache.get_many(["a"]) == [{"n": 1}]  # a is now the most recent
    cache.set_many({"c": {"n": 3}})
    assert cache.get_many(["a", "b", "c"]) == [{"n": 1}, None, {"n": 3}]
    cache.delete_many(["a", "missing"])
    assert cache.get_many(["a"]) == [None]
    cache.clear()
    assert len(cache) == 0


def test_a_zero_size_memory_cache_keeps_nothing() -> None:
    cache = MemoryCache(0)
    cache.set_many({"a": SCORE})
    assert cache.get_many(["a"]) == [None]


def test_the_key_carries_the_version() -> None:
    assert score_key("damaging", 2, "123") != score_key("damaging", 3, "123")


def test_settings_choose_the_cache(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(open_cache(Settings.load(home=tmp_path, environ={})), MemoryCache)
    redis_cache = open_cache(Settings.load(home=tmp_path, environ={}, redis_url="redis://127.0.0.1:1/0"))
    assert isinstance(redis_cache, RedisCache)
    redis_cache.close()


@pytest.mark.redis
def test_redis_cache_round_trip(redis_url: str) -> None:
    cache = RedisCache(redis_url, ttl_s=60)
    run = uuid.uuid4().hex
    keys = [score_key(f"m{run}", 1, str(i)) for i in range(3)]
    try:
        cache.set_many({keys[0]: SCORE, keys[1]: {**SCORE, "prediction": False}})
        assert cache.get_many(keys) == [SCORE, {**SCORE, "prediction": False}, None]
        ttl = cache._redis.ttl(RedisCache.PREFIX + keys[0])
        assert 0 < ttl <= 60
        cache.delete_many([keys[0]])
        assert cache.get_many(keys[:1]) == [None]
    finally:
        cache.delete_many(keys)
        cache.close()


@pytest.mark.redis
def test_redis_clear_drops_only_scores(redis_url: str) -> None:
    cache = RedisCache(redis_url, ttl_s=60)
    other = f"not-assay-{uuid.uuid4().hex}"
    try:
        cache._redis.set(other, b"keep")
        cache.set_many({score_key("m", 1, uuid.uuid4().hex): SCORE})
        cache.clear()
        assert cache._redis.get(other) == b"keep"
        assert not list(cache._redis.scan_iter(match=RedisCache.PREFIX + "*"))
    finally:
        cache._redis.delete(other)
        cache.close()


def test_a_redis_that_is_down_means_misses_not_errors(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cache = RedisCache(f"redis://127.0.0.1:{port}/0", ttl_s=60)
    cache.set_many({"a": SCORE})
    assert cache.get_many(["a", "b"]) == [None, None]
    cache.delete_many(["a"])
    assert "answering without the cache" in caplog.text
    cache.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A Redis server of this test's own, which it may pause (SIGSTOP) as a hung Redis."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", process
    finally:
        process.send_signal(signal.SIGCONT)
        process.terminate()
        process.wait(timeout=10)


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def test_a_hung_redis_costs_one_timeout_then_nothing(own_redis: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, process = own_redis
    cache = RedisCache(url, ttl_s=60, timeout_s=0.3, cooldown_s=0.5)
    try:
        cache.set_many({"a": SCORE, "b": SCORE})
        assert cache.get_many(["a"]) == [SCORE]
        process.send_signal(signal.SIGSTOP)  # Redis hangs: connections stay open, nothing answers
        assert 0.25 < _timed(lambda: cache.get_many(["a"])) < 1.0  # one timeout, then the breaker opens
        assert not cache.available
        # While it is open, calls do not touch the network at all.
        for call in (lambda: cache.get_many(["a"]), lambda: cache.set_many({"c": SCORE})):
            assert _timed(call) < 0.01
        cache.delete_many(["a"])  # the features of "a" changed during the outage
        assert cache.get_many(["b"]) == [None]
        process.send_signal(signal.SIGCONT)
        time.sleep(0.6)  # the cooldown passes: the next call tries Redis again
        assert cache.get_many(["a", "b"]) == [None, SCORE]  # the missed deletion was done first
        assert cache.available
    finally:
        cache.close()


def test_a_redis_that_accepts_but_never_answers_opens_the_breaker() -> None:
    with socket.socket() as hole:  # a TCP black hole: the kernel accepts, nobody ever reads
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)
        cache = RedisCache(f"redis://127.0.0.1:{hole.getsockname()[1]}/0", ttl_s=60, timeout_s=0.2)
        try:
            assert _timed(lambda: cache.get_many(["a"])) < 0.6
            timings = [_timed(lambda: cache.get_many(["a"])) for _ in range(100)]
            assert max(timings) < 0.01 and not cache.available
        finally:
            cache.close()


def test_deletions_missed_beyond_the_cap_clear_the_whole_cache(
    own_redis: tuple[str, subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, process = own_redis
    monkeypatch.setattr(RedisCache, "MAX_PENDING_DELETES", 3)
    cache = RedisCache(url, ttl_s=60, timeout_s=0.2, cooldown_s=0.3)
    try:
        cache.set_many({"a": SCORE, "b": SCORE, "z": SCORE})
        process.send_signal(signal.SIGSTOP)
        cache.delete_many(["a"])
        cache.delete_many(["x", "y", "w"])  # more than the cap: which keys is forgotten
        process.send_signal(signal.SIGCONT)
        time.sleep(0.4)
        assert cache.get_many(["a", "b", "z"]) == [None, None, None]
    finally:
        cache.close()
