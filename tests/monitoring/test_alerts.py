"""Alert states, concept drift detectors and webhook delivery (signed, retried, sent once, taken over
from a sender killed mid-delivery)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.engine import Engine

from assay.monitoring import alerts
from assay.monitoring.alerts import MonitorState, WebhookSender, step
from assay.monitoring.detectors import ADWIN, DDM, error_stream_events
from assay.monitoring.monitor import rising_detections
from assay.settings import Settings

# --- the state machine ---------------------------------------------------------------------


def _run(verdicts: list[bool | None], k: int = 3) -> list[str]:
    s, out = MonitorState(), []
    for v in verdicts:
        s = step(s, v, k)
        out.append(s.state)
    return out


def test_an_alert_needs_k_drifting_windows_in_a_row_and_as_many_clean_ones_to_clear() -> None:
    assert _run([True, True, False, True, True, True]) == [
        "warning",
        "warning",
        "ok",
        "warning",
        "warning",
        "alert",
    ]
    assert _run([True] * 3 + [True, False, True, False, False, False]) == [
        "warning",
        "warning",
        "alert",
        "alert",
        "alert",
        "alert",
        "alert",
        "alert",
        "ok",
    ]
    # An unjudged window changes nothing.
    assert _run([True, None, True, None, True]) == ["warning", "warning", "warning", "warning", "alert"]
    assert _run([True, False], k=1) == ["alert", "ok"]


# --- detectors -----------------------------------------------------------------------------


def test_adwin_finds_a_rise_in_the_error_rate_and_stays_quiet_without_one() -> None:
    g = np.random.default_rng(0)
    for seed in range(3):
        quiet = (np.random.default_rng(seed).random(20_000) < 0.1).astype(float)
        assert [e for e in error_stream_events(np.arange(20_000.0), quiet) if e["detector"] == "adwin"] == []
    errors = np.r_[g.random(4000) < 0.1, g.random(4000) < 0.3].astype(float)
    found = [e for e in error_stream_events(np.arange(8000.0), errors) if e["detector"] == "adwin"]
    assert len(found) == 1  # the cuts of one change are one event
    assert 4000 <= found[0]["index"] < 4600 and found[0]["error_rate_after"] > found[0]["error_rate_before"]
    adwin = ADWIN()
    for x in errors:
        adwin.update(x)
    assert abs(adwin.mean - 0.3) < 0.05  # the window kept only the new regime


def test_ddm_detects_a_jump_soon_after_it_happens() -> None:
    g = np.random.default_rng(1)
    ddm = DDM()
    drifts = []
    for i, x in enumerate(np.r_[g.random(2000) < 0.05, g.random(2000) < 0.5]):
        if ddm.update(float(x)) == "drift":
            drifts.append(i)
            ddm.reset()
    assert drifts and 2000 <= drifts[0] < 2200
    ddm = DDM()
    assert [ddm.update(0.0) for _ in range(600)] == [None] * 600  # no error yet: nothing to compare
    assert ddm.update(1.0) is None


@pytest.mark.parametrize("rate", [0.02, 0.1, 0.3])
def test_ddm_drifts_are_dated_after_a_known_change_and_absent_without_one(rate: float) -> None:
    for seed in range(3):
        g = np.random.default_rng(40 + seed)
        at = 1_767_225_600.0 + np.arange(20_000) * 30.0
        quiet = (g.random(20_000) < rate).astype(float)
        assert [
            e for e in error_stream_events(at, quiet) if e["detector"] == "ddm" and e["level"] == "drift"
        ] == []
        change = 12_000
        errors = np.r_[g.random(change) < rate, g.random(20_000 - change) < rate * 2.5].astype(float)
        drifts = [
            e for e in error_stream_events(at, errors) if e["detector"] == "ddm" and e["level"] == "drift"
        ]
        assert drifts, f"no DDM drift after the error rate rose from {rate} (seed {seed})"
        first = drifts[0]
        assert at[change] <= first["at"] < at[change + 5000] and first["index"] >= change
        assert first["error_rate"] > first["error_rate_min"]


def test_rising_detections_feed_the_concept_monitor_from_either_detector() -> None:
    ddm = {"detector": "ddm", "level": "drift", "error_rate": 0.3, "error_rate_min": 0.1}
    warning = {**ddm, "level": "warning"}
    up = {"detector": "adwin", "level": "drift", "error_rate_before": 0.1, "error_rate_after": 0.3}
    down = {**up, "error_rate_before": 0.3, "error_rate_after": 0.1}
    assert rising_detections([ddm, warning, up, down]) == [ddm, up]


# --- webhooks ------------------------------------------------------------------------------


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []
    fail_first = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        cls = type(self)
        if cls.fail_first > 0:
            cls.fail_first -= 1
            self.send_response(503)
        else:
            cls.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> tuple[str, type[_Receiver]]:
    handler = type("Handler", (_Receiver,), {"received": [], "fail_first": 0})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler
    server.shutdown()
    server.server_close()


def _event(store: Engine, to: str = "alert") -> None:
    with store.begin() as conn:
        alerts.add_event(
            conn,
            "m",
            "data_drift",
            kind="state",
            from_state="warning",
            to_state=to,
            window=(0.0, 86400.0),
            detail={"share": 0.6},
            deliver=alerts.delivers("warning", to),
        )


def test_an_alert_is_posted_signed_after_retries_and_only_once(
    store: Engine, receiver: tuple[str, type]
) -> None:
    url, handler = receiver
    handler.fail_first = 2
    _event(store)
    _event(store, to="ok")  # warning -> ok: not an alert, not delivered
    sleeps: list[float] = []
    results: list[str] = []
    sender = WebhookSender(store, [url], b"s3cret", retries=4, sleep=sleeps.append, on_result=results.append)
    assert sender.deliver_pending() == 1
    assert sender.deliver_pending() == 0  # already sent
    assert len(handler.received) == 1 and sleeps == [0.5, 1.0] and results == ["retried", "retried", "sent"]
    headers, body = handler.received[0]
    expected = hmac.new(
        b"s3cret", headers["x-assay-timestamp"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    assert headers["x-assay-signature"] == f"sha256={expected}"
    event = json.loads(body)
    assert (
        event["to"] == "alert"
        and event["monitor"] == "data_drift"
        and headers["x-assay-event"] == str(event["id"])
    )
    assert [e["delivery"] for e in alerts.events(store)] == ["none", "sent"]


def test_a_receiver_that_never_answers_marks_the_event_failed(store: Engine) -> None:
    _event(store)

    def down(url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> int:
        raise ConnectionRefusedError("down")

    sender = WebhookSender(store, ["http://127.0.0.1:9/x"], b"k", retries=3, post=down, sleep=lambda s: None)
    assert sender.deliver_pending() == 0
    (event,) = alerts.events(store)
    assert event["delivery"] == "failed" and event["attempts"] == 3


_SENDER = """
import sys
from assay.monitoring.alerts import WebhookSender
from assay.store import db
WebhookSender(db.connect(sys.argv[1]), [sys.argv[2]], b"k", retries=1, timeout_s=600).deliver_pending()
"""


def test_a_delivery_whose_sender_was_killed_is_taken_over_after_the_timeout(
    store: Engine, receiver: tuple[str, type]
) -> None:
    _event(store)
    # A receiver that takes the request and never answers: the sender hangs mid-delivery.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    hanging = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
    url = store.url.render_as_string(hide_password=False)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    sender = subprocess.Popen([sys.executable, "-c", _SENDER, url, hanging], env=env)
    try:
        deadline = time.monotonic() + 60
        while alerts.events(store)[0]["delivery"] != "sending":
            assert sender.poll() is None and time.monotonic() < deadline, "the sender never claimed the event"
            time.sleep(0.05)
        time.sleep(0.2)  # well inside its request
        os.kill(sender.pid, signal.SIGKILL)
        sender.wait(10)
    finally:
        if sender.poll() is None:
            sender.kill()
        silent.close()
    (event,) = alerts.events(store)
    assert event["delivery"] == "sending"  # stuck: nobody will finish it

    target, handler = receiver
    # A live sender's claim is respected until it cannot be alive any more...
    assert WebhookSender(store, [target], b"k", retries=1).deliver_pending() == 0
    assert alerts.events(store)[0]["delivery"] == "sending" and handler.received == []
    # ...then the event is taken over and delivered, once.
    late = WebhookSender(store, [target], b"k", retries=1, reclaim_after_s=0.1)
    time.sleep(0.2)
    assert late.deliver_pending() == 1 and late.deliver_pending() == 0
    assert len(handler.received) == 1 and json.loads(handler.received[0][1])["id"] == event["id"]
    assert alerts.events(store)[0]["delivery"] == "sent"


def test_webhook_settings_are_checked_and_the_secret_is_kept_in_the_home(tmp_path: Path) -> None:
    settings = Settings.load(
        home=tmp_path, environ={"ASSAY_ALERT_WEBHOOKS": "https://a.example/x, http://b:8/y"}
    )
    assert alerts.webhook_urls(settings) == ["https://a.example/x", "http://b:8/y"]
    secret = alerts.alert_secret(settings)
    assert secret == alerts.alert_secret(settings) and len(secret) == 64
    assert (tmp_path / alerts.SECRET_FILE).stat().st_mode & 0o077 == 0
    with pytest.raises(Exception, match="not an http"):
        alerts.webhook_urls(Settings.load(home=tmp_path, environ={"ASSAY_ALERT_WEBHOOKS": "ftp://x/y"}))
