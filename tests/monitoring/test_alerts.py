"""Alert states, concept drift detectors and webhook delivery (signed, retried, sent once)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.engine import Engine

from assay.monitoring import alerts
from assay.monitoring.alerts import MonitorState, WebhookSender, step
from assay.monitoring.detectors import ADWIN, DDM, error_stream_events
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
    # DDM also cries wolf on low error rates now and then (which is why only ADWIN alerts).
    assert any(2000 <= i < 2100 for i in drifts)
    ddm = DDM()
    assert [ddm.update(0.0) for _ in range(100)] == [None] * 100  # no error yet: nothing to compare
    assert ddm.update(1.0) is None


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
