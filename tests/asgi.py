"""A minimal in-process ASGI client: HTTP requests and WebSocket sessions against an ASGI app,
with no socket, no server and no thread of its own.

Starlette's `TestClient` needs httpx, which the project does not depend on; this speaks the ASGI
protocol (https://asgi.readthedocs.io/en/latest/specs/www.html) directly, so the app under test
runs exactly as uvicorn would call it: routing, middleware, exception handlers, streaming
responses, and the WebSocket shell with its receiver and sender tasks. The app's lifespan is not
started: a test that needs the hub's loop drives `Hub.step` and `Hub.tick` itself.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from starlette.types import ASGIApp, Message

from tests.waiting import scaled

CLIENT = ("127.0.0.1", 50000)
SERVER = ("localhost", 80)  # a Host the sensor answers to (web.allowed_hosts)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def _scope(kind: str, target: str, headers: Iterable[tuple[str, str]]) -> dict[str, Any]:
    url = urlsplit(target)
    return {
        "type": kind,
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "scheme": "http" if kind == "http" else "ws",
        "path": unquote(url.path),
        "raw_path": url.path.encode(),
        "query_string": url.query.encode(),
        "root_path": "",
        "headers": [(b"host", b"localhost")]
        + [(k.lower().encode(), v.encode()) for k, v in headers],
        "client": CLIENT,
        "server": SERVER,
    }


async def request(
    app: ASGIApp,
    method: str,
    target: str,
    *,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> Reply:
    """One HTTP request; the whole response, streamed bodies joined."""
    scope = _scope("http", target, [*headers, ("content-length", str(len(body)))])
    scope["method"] = method
    done = asyncio.Event()
    sent_request = False
    status = 0
    reply_headers: dict[str, str] = {}
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal sent_request
        if not sent_request:
            sent_request = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()  # the client stays connected until the response is complete
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            for key, value in message.get("headers", []):
                reply_headers[key.decode("latin-1").lower()] = value.decode("latin-1")
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                done.set()

    await asyncio.wait_for(app(scope, receive, send), scaled(10))
    assert done.is_set(), "the app returned without completing its response"
    return Reply(status, reply_headers, b"".join(chunks))


@dataclass
class Closed:
    """The app closed the WebSocket (or refused the handshake) with `code`."""

    code: int
    reason: str = ""


@dataclass
class WebSocket:
    """One WebSocket session with the app running as a task on the current event loop."""

    app: ASGIApp
    target: str
    headers: Iterable[tuple[str, str]] = ()
    _to_app: asyncio.Queue[Message] = field(default_factory=asyncio.Queue)
    _from_app: asyncio.Queue[Message] = field(default_factory=asyncio.Queue)
    _task: asyncio.Task[None] | None = None
    closed: Closed | None = None

    async def connect(self) -> Closed | None:
        """Open the session: None once accepted, or the refusal."""
        scope = _scope("websocket", self.target, self.headers)
        scope["subprotocols"] = []
        self._task = asyncio.create_task(self.app(scope, self._to_app.get, self._from_app.put))
        await self._to_app.put({"type": "websocket.connect"})
        message = await self._next(5)
        if message["type"] == "websocket.accept":
            return None
        assert message["type"] == "websocket.close", message
        self.closed = Closed(message.get("code", 1000), message.get("reason") or "")
        return self.closed

    async def send(self, message: dict[str, Any]) -> None:
        await self._to_app.put({"type": "websocket.receive", "text": json.dumps(message)})

    async def receive(self, timeout: float = 5) -> dict[str, Any] | Closed:
        """The next message the app sent (parsed JSON), or how it closed; fails after
        `timeout` (scaled) seconds without either."""
        if self.closed is not None:
            return self.closed
        message = await self._next(timeout)
        if message["type"] == "websocket.close":
            self.closed = Closed(message.get("code", 1000), message.get("reason") or "")
            return self.closed
        assert message["type"] == "websocket.send", message
        parsed: dict[str, Any] = json.loads(message["text"])
        return parsed

    def pending(self) -> list[dict[str, Any]]:
        """Every message the app has sent and the test has not read yet (no waiting)."""
        out: list[dict[str, Any]] = []
        while not self._from_app.empty():
            message = self._from_app.get_nowait()
            if message["type"] == "websocket.close":
                self.closed = Closed(message.get("code", 1000), message.get("reason") or "")
                break
            out.append(json.loads(message["text"]))
        return out

    async def disconnect(self) -> None:
        """The client goes away; waits for the app to finish with the session."""
        await self._to_app.put({"type": "websocket.disconnect", "code": 1000})
        if self._task is not None:
            await asyncio.wait_for(self._task, scaled(5))

    async def _next(self, timeout: float) -> Message:
        return await asyncio.wait_for(self._from_app.get(), scaled(timeout))
