"""How ``assay serve`` runs uvicorn: its HTTP protocol, guarded against slow and oversized clients.

uvicorn's httptools protocol (the fast parser ``assay serve`` uses) leaves a
server open to anyone who can connect:

* no limit on the size of a request line or headers: httptools keeps an
  unfinished header value in memory however long it grows (four connections
  streaming 250 MB headers took a server to 1.26 GB);
* no deadline for headers: the keep-alive timeout only runs between
  requests, so a connection that never finishes (or never starts) a request
  is kept for good;
* no deadline for a body: a client that announces 1,000 bytes and sends 10
  holds a request slot, and 512 of them answered everyone else 503.

(h11 caps an unfinished event at ``h11_max_incomplete_event_size``, 16 KiB,
but has no timeouts either and parses several times slower;
``limit_concurrency`` counts every connection of a worker and answers 503 to
all once a few clients hold them, so it would hand the attack the service.)

``GuardedHttpToolsProtocol`` adds, per connection:

* a header deadline, ``header_timeout_s``, from the connection's start (or a
  later request's first byte) to the end of its headers: 408 and closed
  after (closed without a word when it never sent a byte);
* a header size cap, ``max_header_bytes``, on request line plus headers,
  checked on what has arrived while the headers are unfinished, so memory
  stays bounded: 431 and closed above;
* a body deadline, ``body_timeout_s``, from the end of the headers to the
  end of the body: 408 and closed after, which ends the request (the app
  sees the client gone, and frees its slot);
* a cap on open connections per client address (the TCP peer, not
  ``X-Forwarded-For``), ``max_connections_per_address``: a connection over
  it is answered 429 and closed as soon as it is accepted.

The limits come from the app's settings, which the app's lifespan hands to
the server as lifespan state (``SERVER_SETTINGS``), once per worker, before
the worker accepts its first connection. Refusals made here are counted in
the app's metrics (errors by code).
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from assay.errors import AssayError, SettingsError, TooManyRequests
from assay.settings import Settings
from assay.web.errors import error_body
from assay.web.limits import BODY_TIMED_OUT, SERVER_METRICS, SERVER_SETTINGS, HeadersTooLarge, RequestTimeout

# The connections each running server holds open, per client address; one server per worker.
_OPEN: weakref.WeakKeyDictionary[ServerState, dict[str, int]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Guards:
    """The connection limits of one worker (see the module doc); the defaults are the settings' defaults."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_header_bytes: int = 64 * 1024
    max_connections_per_address: int = 128

    def __post_init__(self) -> None:
        for name in ("header_timeout_s", "body_timeout_s", "max_header_bytes"):
            if not getattr(self, name) > 0:
                raise SettingsError(f"setting {name} must be more than 0; got {getattr(self, name)!r}")
        if self.max_connections_per_address < 0:
            raise SettingsError(
                "setting max_connections_per_address must be 0 (no cap) or more; "
                f"got {self.max_connections_per_address!r}"
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> Guards:
        return cls(
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            max_header_bytes=settings.max_header_bytes,
            max_connections_per_address=settings.max_connections_per_address,
        )


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header and body deadlines, a header size cap and a per-address cap.

    Requests that arrive whole in one read (nearly all) arm no timer and are not measured:
    deadlines are armed only when a read leaves headers or a body unfinished, and headers are
    measured only when the reads that carried them passed the cap.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        settings = app_state.get(SERVER_SETTINGS)
        self.guards = Guards.from_settings(settings) if settings is not None else Guards()
        self._max_header_bytes = self.guards.max_header_bytes  # read on every request
        self._open = _OPEN.setdefault(server_state, {})
        self._address: str | None = None  # counted against the per-address cap while set
        self._reading_headers = True
        self._reading_body = False
        self._header_bytes = 0  # bytes read while this request's headers were unfinished
        self._too_large = False
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    # --- the connection ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        cap = self.guards.max_connections_per_address
        if cap and self.client is not None:
            address = self.client[0]
            held = self._open.get(address, 0)
            if held >= cap:
                self._refuse(
                    TooManyRequests(
                        f"more than {cap} connections open from this address", code="too_many_connections"
                    )
                )
                return
            self._open[address] = held + 1
            self._address = address
        # Armed before any byte arrives: a connection that never sends one is closed too.
        self._header_timer = self.loop.call_later(self.guards.header_timeout_s, self._headers_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timers()
        self._release_address()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        # The connection passes to another protocol, whose close this one never sees.
        self._stop_timers()
        self._release_address()
        super().handle_websocket_upgrade()

    def data_received(self, data: bytes) -> None:
        if self._reading_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        # The common read (a whole request) leaves nothing counted and nothing unfinished: three
        # attribute checks and out.
        if self._too_large:
            self._refuse_headers()
        elif self._reading_headers:
            if not self._header_bytes:
                return  # between requests: the wait for the next one is keep-alive's
            if self._header_bytes > self._max_header_bytes:
                # Checked after each read, so at most one read's worth beyond the cap is ever held.
                self._refuse_headers()
            elif self._header_timer is None:
                # Part of a request's headers came: they have until the deadline.
                self._header_timer = self.loop.call_later(self.guards.header_timeout_s, self._headers_late)
        elif self._reading_body and self._body_timer is None:
            self._body_timer = self.loop.call_later(self.guards.body_timeout_s, self._body_late)

    # --- parser callbacks ------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        if (
            self._header_bytes > self._max_header_bytes
            and self._parsed_header_size() > self._max_header_bytes
        ):
            # Only measured when this request's reads, body included, passed the cap: rare.
            self._too_large = True
        self._reading_headers = False
        self._header_bytes = 0
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        if self._too_large:
            return  # never handed to the app; data_received answers 431 after this read
        self._reading_body = True
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._too_large:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._reading_body = False
        self._reading_headers = True
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        if not self._too_large:
            super().on_message_complete()

    # --- deadlines -------------------------------------------------------------------------

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or not self._reading_headers:
            return
        if self._header_bytes == 0:
            # Never started a request (an idle or pre-opened connection): nothing to answer.
            if self.cycle is None:
                self.transport.close()
            return
        self._refuse(
            RequestTimeout(
                f"the request headers did not arrive within {self.guards.header_timeout_s:g}s",
                field="headers",
            )
        )

    def _body_late(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or not self._reading_body:
            return
        if self.flow.read_paused:
            # This side stopped reading (a pipelined request waits its turn, or the app has not
            # taken what came): the client is not the one holding the body back.
            self._body_timer = self.loop.call_later(self.guards.body_timeout_s, self._body_late)
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            # The app is still waiting for the body: answer 408 here, and let the app see its
            # client gone (marked, so that it counts a timeout rather than a hang-up).
            extensions = cycle.scope.get("extensions")
            if extensions is None:
                extensions = {}
                cycle.scope["extensions"] = extensions
            extensions[BODY_TIMED_OUT] = {"timeout_s": self.guards.body_timeout_s}
            self._write_error(
                RequestTimeout(
                    f"the request body did not arrive within {self.guards.body_timeout_s:g}s", field="body"
                )
            )
        else:
            self._count(RequestTimeout.code)  # answered already; the rest of the body never came
        if cycle is not None:
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()

    # --- helpers ---------------------------------------------------------------------------

    def _refuse_headers(self) -> None:
        self._refuse(
            HeadersTooLarge(
                f"the request line and headers are larger than {self._max_header_bytes} bytes",
                field="headers",
            )
        )

    def _refuse(self, error: AssayError) -> None:
        """Answer ``error`` and close; after the response in progress, if there is one."""
        if self.transport.is_closing():
            return  # already refused, or the request was malformed (uvicorn answered 400)
        self._count(error.code)
        self._stop_timers()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and not cycle.disconnected:
            # A pipelined request broke a limit while an earlier one is being answered:
            # finish that answer, then close (uvicorn closes when keep-alive is off).
            cycle.keep_alive = False
            self.flow.pause_reading()
            return
        self._write_error(error)
        self.transport.close()

    def _write_error(self, error: AssayError) -> None:
        body = error_body(error)
        content = [STATUS_LINE[error.status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.append(b"content-type: application/json\r\n")
        if error.status == 429:
            content.append(b"retry-after: 1\r\n")
        content.extend([b"content-length: %d\r\n" % len(body), b"connection: close\r\n\r\n", body])
        self.transport.write(b"".join(content))

    def _count(self, code: str) -> None:
        metrics = self.app_state.get(SERVER_METRICS)
        if metrics is not None:
            metrics.error(code)

    def _parsed_header_size(self) -> int:
        """Request line and headers of the request being parsed, in bytes (as parsed, near enough)."""
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def _stop_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None

    def _release_address(self) -> None:
        if self._address is None:
            return
        left = self._open[self._address] - 1
        if left:
            self._open[self._address] = left
        else:
            del self._open[self._address]
        self._address = None
