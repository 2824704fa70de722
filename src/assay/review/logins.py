"""Login attempts: how many failures an account and an address may have before they are locked out.

``LoginThrottle`` keeps, per account name and per client address, the recent
failed logins. An attempt is counted as a failure when it starts and refunded
when the password turns out right, so a burst of parallel guesses cannot slip
past the limit before the first of them is checked. Once a key has had its
limit of failures within ``window_s``, it is locked for ``window_s``, and
every further lock of the same key lasts twice as long as the one before, up
to ``max_lock_s``; a key that stays out of trouble for ``max_lock_s`` after a
lock starts afresh. While a key is locked every attempt is refused
(``LoginThrottled``, 429 with the seconds to wait), the right password
included, and no password is checked at all.

The state lives in the process (the event loop's thread; no locking needed):
each worker of ``assay serve --workers N`` keeps its own, and a restart
forgets it. It holds at most ``max_keys`` keys of each kind, dropping the
least recently seen first.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from assay.errors import TooManyRequests

MAX_LOCK_S = 15 * 60
MAX_KEYS = 50_000


class LoginThrottled(TooManyRequests):
    """Too many failed logins for this account or from this address; ``retry_after`` says how long to wait."""

    code = "too_many_logins"

    def __init__(self, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(f"too many failed logins; try again in {self.retry_after} s")


@dataclass
class _Record:
    failures: deque[float] = field(default_factory=deque)  # start times of failed (or running) attempts
    locked_until: float = 0.0
    locks: int = 0  # locks in a row: each lasts twice as long as the one before


@dataclass(frozen=True)
class Attempt:
    """One login in progress: what to settle once the password is checked."""

    keys: tuple[tuple[str, str], ...]  # (kind, key)
    started: float


def address_key(host: str | None) -> str:
    """The key of a client address: IPv6 clients by their /64 (one machine has a whole one)."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class LoginThrottle:
    """Failure limits per account and per address, with growing lock-outs (see the module doc)."""

    def __init__(
        self,
        *,
        per_account: int,
        per_address: int,
        window_s: float,
        max_lock_s: float = MAX_LOCK_S,
        max_keys: int = MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = {"account": per_account, "address": per_address}
        self.window_s = window_s
        self.max_lock_s = max(max_lock_s, window_s)
        self.max_keys = max_keys
        self.clock = clock  # public so that tests can move time on
        self._records: dict[str, OrderedDict[str, _Record]] = {
            "account": OrderedDict(),
            "address": OrderedDict(),
        }

    def begin(self, username: str, address: str) -> Attempt:
        """Start an attempt (counted as a failure until ``succeeded``); ``LoginThrottled`` when locked."""
        now = self.clock()
        keys = (("account", username.strip().casefold()), ("address", address))
        wait = 0.0
        for kind, key in keys:
            record = self._records[kind].get(key)
            if record is None:
                continue
            self._expire(record, now)
            if record.locked_until > now:
                wait = max(wait, record.locked_until - now)
            elif len(record.failures) >= self.limits[kind]:
                # The limit is taken up by attempts still being checked: they settle within seconds.
                wait = max(wait, 1.0)
        if wait:
            raise LoginThrottled(wait)
        for kind, key in keys:
            self._record(kind, key).failures.append(now)
        return Attempt(keys, now)

    def failed(self, attempt: Attempt) -> None:
        """The password was wrong: the failure stands; a key at its limit is locked."""
        now = self.clock()
        for kind, key in attempt.keys:
            record = self._records[kind].get(key)
            if record is None or len(record.failures) < self.limits[kind]:
                continue
            record.locked_until = now + min(self.window_s * 2**record.locks, self.max_lock_s)
            record.locks += 1
            record.failures.clear()

    def succeeded(self, attempt: Attempt) -> None:
        """The password was right: the account starts afresh; the address gets this attempt back."""
        self.cancelled(attempt)
        for kind, key in attempt.keys:
            if kind == "account":
                self._records[kind].pop(key, None)

    def cancelled(self, attempt: Attempt) -> None:
        """No password was checked (the server was busy): the attempt does not count."""
        for kind, key in attempt.keys:
            record = self._records[kind].get(key)
            if record is not None and attempt.started in record.failures:
                record.failures.remove(attempt.started)

    def _expire(self, record: _Record, now: float) -> None:
        while record.failures and record.failures[0] <= now - self.window_s:
            record.failures.popleft()
        if record.locks and now - record.locked_until > self.max_lock_s:
            record.locks = 0  # quiet long enough: the next lock is a short one again

    def _record(self, kind: str, key: str) -> _Record:
        records = self._records[kind]
        record = records.get(key)
        if record is None:
            record = records[key] = _Record()
            while len(records) > self.max_keys:
                records.popitem(last=False)
        else:
            records.move_to_end(key)
        return record
