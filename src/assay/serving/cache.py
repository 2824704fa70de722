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
    """What the scorer needs of a cache; both implementations are safe to share between threads."""

    def get_many(self, keys: Sequence[str]) -> list[Score | None]: ...

    def set_many(self, entries: Mapping[str, Score]) -> None: ...

    def delete_many(self, keys: Sequence[str]) -> None: ...

    def clear(self) -> None: ...

    def close(self) -> None: ...


class MemoryCache:
    """A bounded LRU in this process; values are shared, so callers must not mutate them."""

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
    """Scores in Redis as orjson bytes under ``assay:score:<model>:<version>:<id>`` with a TTL."""

    PREFIX = "assay:score:"
    # Answering without the cache beats waiting on a sick Redis: short timeouts, then a miss.
    TIMEOUT_S = 0.5
    _LOG_EVERY_S = 10.0

    def __init__(self, url: str, ttl_s: int) -> None:
        import redis  # the [redis] extra; only needed when a Redis URL is configured

        self.ttl_s = ttl_s
        self._redis = redis.Redis.from_url(
            url, socket_timeout=self.TIMEOUT_S, socket_connect_timeout=self.TIMEOUT_S
        )
        self._errors = (redis.RedisError, OSError)
        self._last_logged = 0.0

    def _failed(self, what: str, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_logged > self._LOG_EVERY_S:
            self._last_logged = now
            log.warning("score cache: Redis %s failed, answering without the cache: %s", what, exc)

    def get_many(self, keys: Sequence[str]) -> list[Score | None]:
        if not keys:
            return []
        try:
            raw = self._redis.mget([self.PREFIX + k for k in keys])
        except self._errors as exc:
            self._failed("read", exc)
            return [None] * len(keys)
        return [None if value is None else orjson.loads(value) for value in raw]

    def set_many(self, entries: Mapping[str, Score]) -> None:
        if not entries:
            return
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for key, value in entries.items():
                    pipe.set(self.PREFIX + key, orjson.dumps(value), ex=self.ttl_s)
                pipe.execute()
        except self._errors as exc:
            self._failed("write", exc)

    def delete_many(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        try:
            self._redis.delete(*[self.PREFIX + k for k in keys])
        except self._errors as exc:
            self._failed("delete", exc)

    def clear(self) -> None:
        """Drop every assay score (and nothing else that shares the Redis database)."""
        try:
            batch: list[bytes] = []
            for key in self._redis.scan_iter(match=self.PREFIX + "*", count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    self._redis.delete(*batch)
                    batch.clear()
            if batch:
                self._redis.delete(*batch)
        except self._errors as exc:
            self._failed("clear", exc)

    def close(self) -> None:
        self._redis.close()


def open_cache(settings: Settings) -> ScoreCache:
    """The cache the settings choose: Redis when ``redis_url`` is set, else in-process."""
    if settings.redis_url:
        return RedisCache(settings.redis_url, settings.cache_ttl_s)
    return MemoryCache(settings.cache_size)
