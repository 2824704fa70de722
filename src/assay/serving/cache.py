"""The score cache: scores of id-based requests kept by (model, version, item id).

In-process (an LRU of ``cache_size`` entries) by default; Redis when
``redis_url`` is set, so several workers and hosts share one cache and a
precache run fills it for all of them. The store is the source of truth: a
cache may be dropped at any moment, and a Redis that is down or slow makes
every lookup a miss (logged), never a failed request.

Only the base score (version, probability, prediction, operating points) is
cached; feature values and explanations are computed when asked for.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import orjson

from assay.settings import Settings

log = logging.getLogger(__name__)

Score = dict[str, Any]


def score_key(model: str, version: int, item_id: str) -> str:
    """The cache key of one score; the version is in it, so a promotion never serves stale scores."""
    return f"{model}:{version}:{item_id}"


class ScoreCache(Protocol):
    """What the scorer needs of a cache; both implementations are safe to share between threads.

    ``shared`` says whether every process sees the same entries (Redis) or each its own.
    """

    shared: bool

    def get_many(self, keys: Sequence[str]) -> list[Score | None]: ...

    def set_many(self, entries: Mapping[str, Score]) -> None: ...

    def delete_many(self, keys: Sequence[str]) -> None: ...

    def clear(self) -> None: ...

    def close(self) -> None: ...


class MemoryCache:
    """A bounded LRU in this process; values are shared, so callers must not mutate them."""

    shared = False

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[str, Score] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get_many(self, keys: Sequence[str]) -> list[Score | None]:
        out: list[Score | None] = []
        with self._lock:
            for key in keys:
                value = self._entries.get(key)
                if value is not None:
                    self._entries.move_to_end(key)
                out.append(value)
        return out

    def set_many(self, entries: Mapping[str, Score]) -> None:
        if self.size <= 0:
            return
        with self._lock:
            for key, value in entries.items():
                self._entries[key] = value
                self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def delete_many(self, keys: Sequence[str]) -> None:
        with self._lock:
            for key in keys:
                self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def close(self) -> None:
        self.clear()


class RedisCache:
    """Scores in Redis as orjson bytes under ``assay:score:<model>:<version>:<id>`` with a TTL.

    A circuit breaker keeps a sick Redis off the request path: the first call that fails or
    times out opens it, and for ``cooldown_s`` (doubling while Redis stays down, up to
    ``MAX_COOLDOWN_S``) every read is a miss and every write is skipped without touching the
    network; then one call at a time tries Redis again, and the first that succeeds closes it.
    Deletions that could not reach Redis are kept (up to ``MAX_PENDING_DELETES``, else the
    whole score cache is cleared) and done before the breaker closes, so scores of items whose
    features changed during an outage are not served when Redis comes back.
    """

    PREFIX = "assay:score:"
    shared = True
    # Answering without the cache beats waiting on a sick Redis: short timeouts, then a miss.
    TIMEOUT_S = 0.5
    COOLDOWN_S = 2.0
    MAX_COOLDOWN_S = 60.0
    MAX_PENDING_DELETES = 100_000
    _LOG_EVERY_S = 10.0

    def __init__(
        self, url: str, ttl_s: int, *, timeout_s: float = TIMEOUT_S, cooldown_s: float = COOLDOWN_S
    ) -> None:
        import redis  # the [redis] extra; only needed when a Redis URL is configured
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.ttl_s = ttl_s
        self.cooldown_s = cooldown_s
        # No retries inside the client: one timeout is the most a call may cost, the breaker the rest.
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
        )
        self._errors = (redis.RedisError, OSError)
        self._last_logged = 0.0
        self._lock = threading.Lock()
        self._open_until = 0.0  # monotonic time before which Redis is not tried; 0: closed
        self._cooldown = cooldown_s
        self._probing = False
        self._pending: set[str] = set()  # deletions Redis missed
        self._pending_overflow = False

    @property
    def available(self) -> bool:
        """False while the breaker is open (Redis failed recently and is not being tried)."""
        return self._open_until == 0.0

    def _enter(self) -> bool:
        """Whether this call may use Redis now: the breaker is closed, or this is the one trial
        call after a cooldown, which first does the deletions Redis missed."""
        with self._lock:
            if self._open_until == 0.0:
                return True
            if self._probing or time.monotonic() < self._open_until:
                return False
            self._probing = True
        try:
            self._catch_up()
        except self._errors as exc:
            self._failed("catch-up", exc)
            return False
        return True

    def _catch_up(self) -> None:
        with self._lock:
            pending, overflow = list(self._pending), self._pending_overflow
        if overflow:
            self._clear()
        for start in range(0, len(pending), 1000):
            self._redis.delete(*[self.PREFIX + k for k in pending[start : start + 1000]])
        with self._lock:
            self._pending.difference_update(pending)
            self._pending_overflow = self._pending_overflow and not overflow

    def _succeeded(self) -> None:
        if self._open_until == 0.0:
            return
        with self._lock:
            self._open_until, self._cooldown, self._probing = 0.0, self.cooldown_s, False
            missed_meanwhile = bool(self._pending) or self._pending_overflow
        log.warning("score cache: Redis answers again; using the cache")
        if missed_meanwhile:  # deletions other calls kept while the trial ran
            try:
                self._catch_up()
            except self._errors as exc:
                self._failed("catch-up", exc)

    def _failed(self, what: str, exc: Exception) -> None:
        now = time.monotonic()
        with self._lock:
            if self._probing:  # the trial failed too: wait longer before the next
                self._cooldown = min(self._cooldown * 2, self.MAX_COOLDOWN_S)
            self._open_until, self._probing = now + self._cooldown, False
        if now - self._last_logged > self._LOG_EVERY_S:
            self._last_logged = now
            log.warning(
                "score cache: Redis %s failed, answering without the cache for %.0f s: %s",
                what,
                self._cooldown,
                exc,
            )

    def get_many(self, keys: Sequence[str]) -> list[Score | None]:
        if not keys or not self._enter():
            return [None] * len(keys)
        try:
            raw = self._redis.mget([self.PREFIX + k for k in keys])
        except self._errors as exc:
            self._failed("read", exc)
            return [None] * len(keys)
        self._succeeded()
        return [None if value is None else orjson.loads(value) for value in raw]

    def set_many(self, entries: Mapping[str, Score]) -> None:
        if not entries or not self._enter():
            return
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for key, value in entries.items():
                    pipe.set(self.PREFIX + key, orjson.dumps(value), ex=self.ttl_s)
                pipe.execute()
        except self._errors as exc:
            self._failed("write", exc)
            return
        self._succeeded()

    def delete_many(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        if self._enter():
            try:
                self._redis.delete(*[self.PREFIX + k for k in keys])
            except self._errors as exc:
                self._failed("delete", exc)
            else:
                self._succeeded()
                return
        with self._lock:
            if len(self._pending) + len(keys) > self.MAX_PENDING_DELETES:
                self._pending.clear()
                self._pending_overflow = True
            else:
                self._pending.update(keys)

    def clear(self) -> None:
        """Drop every assay score (and nothing else that shares the Redis database)."""
        if not self._enter():
            with self._lock:
                self._pending.clear()
                self._pending_overflow = True
            return
        try:
            self._clear()
        except self._errors as exc:
            self._failed("clear", exc)
            with self._lock:
                self._pending_overflow = True
            return
        self._succeeded()

    def _clear(self) -> None:
        batch: list[bytes] = []
        for key in self._redis.scan_iter(match=self.PREFIX + "*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                self._redis.delete(*batch)
                batch.clear()
        if batch:
            self._redis.delete(*batch)

    def close(self) -> None:
        self._redis.close()


def open_cache(settings: Settings) -> ScoreCache:
    """The cache the settings choose: Redis when ``redis_url`` is set, else in-process."""
    if settings.redis_url:
        return RedisCache(settings.redis_url, settings.cache_ttl_s)
    return MemoryCache(settings.cache_size)
