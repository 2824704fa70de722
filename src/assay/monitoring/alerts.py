"""Alerts: each monitor's state, the events its changes make, and their delivery to webhooks.

A monitor (``data_drift``, ``feature:<name>``, ``prediction_drift``, ``multivariate``,
``performance``, ``estimated_performance``, ``concept_drift``) is judged once per closed window:
drifting, clean, or not judged (too few rows or labels: no change). ``step`` is its state
machine: the first drifting window makes it ``warning``; ``alert_after`` drifting windows in a
row make it ``alert``; it stays in alert until as many clean windows in a row clear it back to
``ok`` (a warning clears at the first clean window). Only changes of state are events, so an
alert fires once when it starts and once when it ends, however often the monitor is checked.

Events are rows of ``monitor_events``. Those that enter or leave ``alert`` are delivered to the
configured webhooks (``WebhookSender``): a JSON POST signed with HMAC-SHA256 of
``<timestamp>.<body>`` under the alert secret (``X-Assay-Signature: sha256=<hex>``, the time in
``X-Assay-Timestamp``, the event id in ``X-Assay-Event`` for receivers to drop repeats), retried
with exponential backoff, each event claimed by one sender so several server workers never send
it twice. A claim that outlives any sender's retries (the process that held it was killed
mid-delivery) is taken over by the next sender: an alert is delivered at least once, and the
event id lets receivers drop the repeat. Delivery runs on its own thread: a slow or failing
receiver never holds up a score.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from assay.errors import SettingsError
from assay.home_secret import home_secret
from assay.settings import Settings
from assay.store import db, tables

log = logging.getLogger(__name__)

SECRET_FILE = "alert_secret"
STATES = ("ok", "warning", "alert")
STATE_VALUES = {"ok": 0, "warning": 1, "alert": 2}
_BACKOFF_S = 0.5
_MAX_BACKOFF_S = 30.0


@dataclass(frozen=True)
class MonitorState:
    state: str = "ok"
    drifting: int = 0  # drifting windows in a row
    clean: int = 0  # clean windows in a row while in alert
    value: float | None = None
    window_end: float | None = None


def step(current: MonitorState, drifting: bool | None, alert_after: int) -> MonitorState:
    """The state after one window (``drifting`` None: not judged, nothing changes)."""
    if drifting is None:
        return current
    if drifting:
        run = current.drifting + 1
        state = "alert" if current.state == "alert" or run >= alert_after else "warning"
        return replace(current, state=state, drifting=run, clean=0)
    if current.state == "alert":
        clean = current.clean + 1
        if clean >= alert_after:
            return replace(current, state="ok", drifting=0, clean=0)
        return replace(current, drifting=0, clean=clean)
    return replace(current, state="ok", drifting=0, clean=0)


def delivers(from_state: str | None, to_state: str) -> bool:
    """Webhooks hear about alerts starting and ending, not about warnings."""
    return to_state == "alert" or from_state == "alert"


# --- the store -----------------------------------------------------------------------------


def load_states(conn: Connection, model: str) -> dict[str, MonitorState]:
    table = tables.monitor_states
    rows = conn.execute(sa.select(table).where(table.c.model == model)).all()
    return {r.monitor: MonitorState(r.state, r.drifting, r.clean, r.value, r.window_end) for r in rows}


def save_states(
    conn: Connection, model: str, states: Mapping[str, MonitorState], before: Mapping[str, MonitorState]
) -> None:
    table = tables.monitor_states
    now = db.now()
    for monitor, s in states.items():
        values = {
            "state": s.state,
            "drifting": s.drifting,
            "clean": s.clean,
            "value": s.value,
            "window_end": s.window_end,
            "updated_at": now,
        }
        if monitor in before:
            conn.execute(
                sa.update(table).where(table.c.model == model, table.c.monitor == monitor).values(**values)
            )
        else:
            conn.execute(sa.insert(table).values(model=model, monitor=monitor, **values))


def add_event(
    conn: Connection,
    model: str,
    monitor: str,
    *,
    kind: str,
    from_state: str | None,
    to_state: str,
    window: tuple[float, float] | None,
    detail: Mapping[str, Any],
    deliver: bool,
) -> None:
    conn.execute(
        sa.insert(tables.monitor_events).values(
            model=model,
            monitor=monitor,
            kind=kind,
            from_state=from_state,
            to_state=to_state,
            window_start=window[0] if window else None,
            window_end=window[1] if window else None,
            detail=dict(detail),
            delivery="pending" if deliver else "none",
            attempts=0,
            at=db.now(),
        )
    )


def states(engine: Engine, model: str | None = None) -> list[dict[str, Any]]:
    """Every monitor's current state (of one model, or all), for ``assay monitor status`` and gauges."""
    table = tables.monitor_states
    query = sa.select(table).order_by(table.c.model, table.c.monitor)
    if model is not None:
        query = query.where(table.c.model == model)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [
        {
            "model": r.model,
            "monitor": r.monitor,
            "state": r.state,
            "drifting_windows": r.drifting,
            "value": r.value,
            "window_end": r.window_end,
            "updated_at": _utc(r.updated_at).isoformat(),
        }
        for r in rows
    ]


def events(engine: Engine, model: str | None = None, *, limit: int = 100) -> list[dict[str, Any]]:
    """The latest events, newest first."""
    table = tables.monitor_events
    query = sa.select(table).order_by(table.c.id.desc()).limit(limit)
    if model is not None:
        query = query.where(table.c.model == model)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [_event(r) for r in rows]


def _event(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "model": r.model,
        "monitor": r.monitor,
        "kind": r.kind,
        "from": r.from_state,
        "to": r.to_state,
        "window": None
        if r.window_start is None
        else {"start": _iso(r.window_start), "end": _iso(r.window_end)},
        "detail": r.detail,
        "delivery": r.delivery,
        "attempts": r.attempts,
        "at": _utc(r.at).isoformat(),
    }


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat()


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


# --- webhooks ------------------------------------------------------------------------------


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the HMAC of ``<timestamp>.<body>``."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


Post = Callable[[str, bytes, Mapping[str, str], float], int]


def _post(url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> int:
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:  # a 4xx/5xx answer: its status, and its socket closed
        exc.close()
        return int(exc.code)


class WebhookSender:
    """Delivers pending events to every URL, retrying each up to ``retries`` times."""

    def __init__(
        self,
        engine: Engine,
        urls: Sequence[str],
        secret: bytes,
        *,
        retries: int = 5,
        timeout_s: float = 5.0,
        post: Post | None = None,
        sleep: Callable[[float], None] = time.sleep,
        on_result: Callable[[str], None] | None = None,
        reclaim_after_s: float | None = None,
    ) -> None:
        self.engine = engine
        self.urls = list(urls)
        self.secret = secret
        self.retries = max(1, retries)
        self.timeout_s = timeout_s
        # A live sender finishes an event within every URL's retries, each a timeout and a backoff;
        # a claim older than that belongs to a sender that died.
        self.reclaim_after_s = (
            reclaim_after_s
            if reclaim_after_s is not None
            else len(self.urls) * self.retries * (timeout_s + _MAX_BACKOFF_S) + 60.0
        )
        self.post = post or _post
        self.sleep = sleep
        self.on_result = on_result
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def deliver_pending(self) -> int:
        """Send every pending event (and every one whose sender died mid-delivery) now, in this
        thread; returns how many were sent."""
        if not self.urls:
            return 0
        table = tables.monitor_events
        now = time.time()
        claimable = sa.or_(
            table.c.delivery == "pending",
            sa.and_(
                table.c.delivery == "sending",
                # no claim time: claimed before claims were dated
                sa.or_(table.c.claimed_at.is_(None), table.c.claimed_at < now - self.reclaim_after_s),
            ),
        )
        with self.engine.connect() as conn:
            ids = conn.execute(sa.select(table.c.id).where(claimable).order_by(table.c.id)).scalars().all()
        sent = 0
        for event_id in ids:
            with self.engine.begin() as conn:
                claimed = conn.execute(
                    sa.update(table)
                    .where(table.c.id == event_id, claimable)
                    .values(delivery="sending", claimed_at=time.time())
                ).rowcount
                row = (
                    conn.execute(sa.select(table).where(table.c.id == event_id)).first() if claimed else None
                )
            if row is None:
                continue  # another worker has it
            attempts, ok = self._send(_event(row))
            with self.engine.begin() as conn:
                conn.execute(
                    sa.update(table)
                    .where(table.c.id == event_id)
                    .values(delivery="sent" if ok else "failed", attempts=attempts)
                )
            sent += ok
        return sent

    def _send(self, event: dict[str, Any]) -> tuple[int, bool]:
        body = orjson.dumps(event)
        delivered = True
        attempts = 0
        for url in self.urls:
            for attempt in range(self.retries):
                attempts += 1
                timestamp = str(int(time.time()))
                headers = {
                    "Content-Type": "application/json",
                    "User-Agent": "assay-monitoring",
                    "X-Assay-Event": str(event["id"]),
                    "X-Assay-Timestamp": timestamp,
                    "X-Assay-Signature": sign(self.secret, timestamp, body),
                }
                try:
                    status = self.post(url, body, headers, self.timeout_s)
                    error = None if 200 <= status < 300 else f"HTTP {status}"
                except Exception as exc:  # a receiver that is down, slow or unreachable
                    error = repr(exc)
                if error is None:
                    self._count("sent")
                    break
                self._count("retried" if attempt + 1 < self.retries else "failed")
                log.warning(
                    "webhook %s for event %s failed (attempt %d): %s", url, event["id"], attempt + 1, error
                )
                if attempt + 1 < self.retries:
                    self.sleep(min(_BACKOFF_S * 2**attempt, _MAX_BACKOFF_S))
            else:
                delivered = False
        return attempts, delivered

    def _count(self, result: str) -> None:
        if self.on_result is not None:
            self.on_result(result)

    # --- a background thread (the server's) ------------------------------------------

    def start(self) -> None:
        if self._thread is None and self.urls:
            self._thread = threading.Thread(target=self._run, name="assay-webhooks", daemon=True)
            self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(30.0)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.deliver_pending()
            except Exception:
                log.exception("delivering webhooks failed; retrying later")

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5.0)


def webhook_urls(settings: Settings) -> list[str]:
    """The configured webhook URLs (http or https only)."""
    urls = [u.strip() for u in settings.alert_webhooks.split(",") if u.strip()]
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise SettingsError(f"alert_webhooks: {url!r} is not an http(s) URL", field="alert_webhooks")
    return urls


def alert_secret(settings: Settings) -> bytes:
    """The secret that signs webhook bodies: the setting, else a random one kept (0600) in the home,
    so every worker signs alike and receivers keep one secret across restarts."""
    return home_secret(settings.home, SECRET_FILE, settings.alert_secret, "alert_secret")


def sender_from(settings: Settings, engine: Engine, **kwargs: Any) -> WebhookSender:
    urls = webhook_urls(settings)
    return WebhookSender(
        engine, urls, alert_secret(settings) if urls else b"", retries=settings.alert_retries, **kwargs
    )
