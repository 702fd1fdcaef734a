"""uvicorn's HTTP and WebSocket protocols, with the deadlines and limits uvicorn leaves out.

uvicorn closes a connection that idles between two requests (keep-alive, 5 s), but has no
deadline for a request while it is being sent: a client that connects and says nothing, sends
its head a byte at a time, or never finishes its body keeps a descriptor of the worker for ever
(1 000 such connections were all still open after 60 s). Its `limit_concurrency` answers 503
only once a request head is complete and only to plain HTTP: the WebSocket upgrade is decided
before it, and a connection that sends nothing is never counted against anything.
`GuardedH11Protocol` adds, per connection:

- the head deadline (`web.header_timeout_s`), from the connection's start and again from the
  end of each response: a connection without a complete request head by then is closed, with a
  408 if it had sent part of one. It runs from the phase's start, not from the last byte, so a
  head sent a byte at a time does not keep it open;
- the body deadline (`web.body_timeout_s`), from the end of the head to the body's last byte,
  whether the app is still reading the body or has answered without it: 408 and closed when no
  response has started yet, else closed;
- the cap (`web.max_connections`) on the worker's connections, HTTP and WebSocket together (an
  upgraded connection stays in uvicorn's set): a connection over it is answered 503 and closed
  as soon as it is accepted, before it has sent anything. A client whose request was already on
  its way may see a reset instead of the 503.

`ClosingWSProtocol`: wsproto turns a frame that breaks RFC 6455 (a text message that is not
UTF-8, a reserved opcode or bit, a fragmented control frame) into a `CloseConnection` event with
the right code (1007, 1002), but since the peer sent no close frame, uvicorn dropped the TCP
connection without one and the client saw 1006. Here the server sends that close frame first.

It also lets the app write a whole pre-framed message (`frames.Frame.wire()`) straight to the
transport: the ASGI message `{"type": FRAME_EXTENSION, "frame": bytes}`, offered in the scope's
`extensions`. A batch shared by a filter group is then UTF-8 encoded and framed once for all its
connections instead of once per connection by wsproto; wsproto's state is untouched (it only
tracks fragmented messages, and these are whole frames), and the write waits for the transport
to be writable, closes and disconnects exactly like `websocket.send`.

The closures are counted and logged at most once a minute, one line with the counts, so that a
flood of slow connections costs the log one line a minute, not one a connection.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.wsproto_impl import WSProtocol
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Request

from leireye.config import WebConfig
from leireye.web.api.errors import now_iso

log = logging.getLogger("leireye.web")

TALLY_INTERVAL_S: Final = 60.0
FRAME_EXTENSION: Final = "leireye.websocket.frame"
"""The ASGI message type (and scope extension) of a pre-framed WebSocket message."""


@dataclass(frozen=True)
class HttpLimits:
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int

    @classmethod
    def of(cls, web: WebConfig) -> HttpLimits:
        return cls(web.header_timeout_s, web.body_timeout_s, web.max_connections)


def http_protocol(limits: HttpLimits) -> type[H11Protocol]:
    """The protocol class to give uvicorn (`uvicorn.Config(http=...)`) for these limits."""

    class Protocol(GuardedH11Protocol):
        LIMITS = limits

    return Protocol


class _Tally:
    """Connections closed at a deadline or the cap, by reason; one log line per interval."""

    def __init__(self, interval_s: float = TALLY_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.counts: Counter[str] = Counter()
        self.logged_at = -interval_s

    def add(self, reason: str) -> None:
        self.counts[reason] += 1
        now = time.monotonic()
        if now - self.logged_at >= self.interval_s:
            text = ", ".join(f"{n} {why}" for why, n in self.counts.most_common())
            log.info("closed connections (since the last such line): %s", text)
            self.counts.clear()
            self.logged_at = now


TALLY: Final = _Tally()


def error_bytes(status: int, code: str, detail: str) -> bytes:
    """A whole HTTP/1.1 response in the API's error shape, written straight to the socket by the
    protocol (no app, no h11 state), after which the connection is closed."""
    body = json.dumps({"detail": detail, "error_code": code, "timestamp": now_iso()}).encode()
    head = (
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class GuardedH11Protocol(H11Protocol):
    LIMITS: ClassVar[HttpLimits] = HttpLimits(10.0, 30.0, 512)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase: str | None = None  # "head", "body", or None: no deadline
        self._deadline: asyncio.TimerHandle | None = None
        self._upgraded = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.LIMITS.max_connections:
            TALLY.add("over web.max_connections")
            detail = "Too many connections to this worker (web.max_connections)"
            transport.write(error_bytes(503, "SERVICE_UNAVAILABLE", detail))
            transport.close()
            return
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        self._upgraded = True  # from here on the WebSocket session's own timers apply
        self._cancel()
        super().handle_websocket_upgrade(event)

    def _follow(self) -> None:
        """Start the deadline of the phase the connection has just entered."""
        if self._upgraded or self.transport.is_closing():
            self._cancel()
            return
        state = self.conn.their_state
        phase = "head" if state is h11.IDLE else "body" if state is h11.SEND_BODY else None
        if phase == self._phase:
            return
        self._cancel()
        self._phase = phase
        if phase is not None:
            limits = self.LIMITS
            delay = limits.header_timeout_s if phase == "head" else limits.body_timeout_s
            self._deadline = self.loop.call_later(delay, self._expired)

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._phase = None

    def _expired(self) -> None:
        phase, self._deadline = self._phase, None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if phase == "head":
            began = bool(self.conn.trailing_data[0])
            TALLY.add("slow request head" if began else "no request")
            if began:
                detail = "The request head did not arrive in time (web.header_timeout_s)"
                self.transport.write(error_bytes(408, "REQUEST_TIMEOUT", detail))
        else:
            TALLY.add("slow request body")
            if cycle is not None and not cycle.response_started:
                detail = "The request body did not arrive in time (web.body_timeout_s)"
                self.transport.write(error_bytes(408, "REQUEST_TIMEOUT", detail))
        if cycle is not None and not cycle.response_complete:
            # The app, if still waiting for the body, gets `http.disconnect`; what it sends
            # from now on is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()


class ClosingWSProtocol(WSProtocol):
    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        extensions = self.scope.get("extensions")
        if extensions is not None:
            extensions[FRAME_EXTENSION] = {}

    async def send(self, message: Any) -> None:
        if message["type"] != FRAME_EXTENSION:
            await super().send(message)
            return
        await self.writable.wait()
        if (
            self.disconnected
            or self.close_sent
            or not self.handshake_complete
            or self.conn.state is not ConnectionState.OPEN
        ):
            raise ClientDisconnected()
        if not self.transport.is_closing():
            self.transport.write(message["frame"])

    def handle_close(self, event: CloseConnection) -> None:
        if self.close_sent or self.conn.state is not ConnectionState.OPEN:
            super().handle_close(event)  # the peer's own close frame (REMOTE_CLOSING)
            return
        # Still OPEN: wsproto made this event from a protocol violation; say so, then close.
        self.close_sent = True
        self.queue.put_nowait(
            {"type": "websocket.disconnect", "code": event.code, "reason": event.reason}
        )
        if not self.transport.is_closing():
            reply = CloseConnection(code=event.code, reason=event.reason)
            self.transport.write(self.conn.send(reply))
            self.transport.close()
