"""The supervisor's end of the control channel: a Unix-socket server with a fixed thread pool.

Each connection carries one request line and gets one reply line. One thread accepts; `THREADS`
threads serve, taking connections from a queue of at most `QUEUE`. A connection that finds the
queue full is answered `503 SERVICE_UNAVAILABLE` (with `Retry-After`) at once by the accepting
thread and closed, counted in `refused` and logged (at most every `REFUSAL_LOG_S`): a flood of
requests costs the supervisor a queue entry each, never a thread each (a thread per connection
reached 567 threads under 5 000 WebSocket handshakes). Handlers that wait (a login waiting for a
password-verification slot, `leireye.accounts.gate`, at most a second; a capture start, up to
15 s) hold a pool thread meanwhile, so the gate's waiting room is kept smaller than the pool.

Handlers run in the pool's threads; anything that must happen on the supervisor's main loop
(starting and stopping capture processes) is handed to it by the handler itself (see
`Supervisor.call_in_loop`). The socket file is created mode 0600 and given to the web user;
nobody else can connect.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from leireye.control.protocol import (
    MAX_MESSAGE_BYTES,
    AnyRequest,
    Reply,
    decode_request,
    encode,
    failure,
)

log = logging.getLogger("leireye.control")

Handler = Callable[[AnyRequest], Reply]
READ_TIMEOUT_S = 5.0
THREADS = 16
QUEUE = 64
REFUSAL_LOG_S = 10.0
_BUSY = encode(failure(503, "SERVICE_UNAVAILABLE", "the supervisor is busy", 1.0)) + b"\n"


class _Server(socketserver.UnixStreamServer):
    """Accepts in one thread and hands each connection to the pool through a bounded queue."""

    request_queue_size = 128  # the listen backlog: a burst waits here for the accepting thread

    def __init__(self, path: str, handler: type[socketserver.BaseRequestHandler]) -> None:
        super().__init__(path, handler)
        self.pending: queue.Queue[socket.socket | None] = queue.Queue(QUEUE)
        self.refused = 0
        self._refusals_logged = 0
        self._logged_at = -REFUSAL_LOG_S

    def process_request(self, request: Any, client_address: Any) -> None:
        try:
            self.pending.put_nowait(request)
        except queue.Full:
            self._refuse(request)

    def _refuse(self, request: socket.socket) -> None:
        self.refused += 1
        with contextlib.suppress(OSError):
            request.setblocking(False)  # a reply this small fits an empty socket buffer
            request.send(_BUSY)
            request.shutdown(socket.SHUT_WR)
            # Closing with the request unread would reset the connection and discard the reply
            # on the worker's side: read what has arrived (never waiting) first.
            while request.recv(65536):
                pass
        self.shutdown_request(request)
        now = time.monotonic()
        if now - self._logged_at >= REFUSAL_LOG_S:
            log.warning("control channel busy: refused %d connections (%d in all)",
                        self.refused - self._refusals_logged, self.refused)  # fmt: skip
            self._logged_at, self._refusals_logged = now, self.refused

    def serve_pending(self) -> None:
        """A pool thread: serve queued connections until a None arrives."""
        while (request := self.pending.get()) is not None:
            try:
                self.finish_request(request, None)
            except OSError as exc:  # the worker went away: nobody to answer
                log.debug("control connection: %s", exc)
            except Exception:  # a bug: keep the thread serving, leave a trace
                log.exception("control connection failed")
            finally:
                self.shutdown_request(request)

    def stop_pool(self, threads: int) -> None:
        """Once nothing is accepted any more: close what still waits, end every pool thread."""
        with contextlib.suppress(queue.Empty):
            while True:
                request = self.pending.get_nowait()
                if request is not None:
                    self.shutdown_request(request)
        for _ in range(threads):
            self.pending.put(None)


class ControlServer:
    def __init__(self, path: Path, handle: Handler, owner: tuple[int, int] | None) -> None:
        self.path = path
        self.handle = handle
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        server = self

        class _Connection(socketserver.StreamRequestHandler):
            timeout = READ_TIMEOUT_S

            def handle(self) -> None:
                server._serve(self.rfile, self.wfile)  # type: ignore[arg-type]

        old = os.umask(0o177)
        try:
            self._server = _Server(str(path), _Connection)
        finally:
            os.umask(old)
        if owner is not None and os.geteuid() == 0:
            os.chown(path, owner[0], owner[1])
        os.chmod(path, 0o600)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True,
            name="control",
        )  # fmt: skip
        self._pool = [
            threading.Thread(target=self._server.serve_pending, daemon=True, name=f"control-{i}")
            for i in range(THREADS)
        ]

    @property
    def refused(self) -> int:
        """Connections answered busy because the queue was full."""
        return self._server.refused

    def queued(self) -> int:
        """Connections accepted and waiting for a pool thread."""
        return self._server.pending.qsize()

    def start(self) -> None:
        for thread in self._pool:
            thread.start()
        self._thread.start()
        log.info("control channel on %s (%d threads)", self.path, THREADS)

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(2)
        self._server.stop_pool(len(self._pool))
        for thread in self._pool:
            thread.join(2)
        self._server.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _serve(self, rfile: BinaryIO, wfile: BinaryIO) -> None:
        line = rfile.readline(MAX_MESSAGE_BYTES + 1)
        if not line.endswith(b"\n"):
            reply = failure(413 if len(line) > MAX_MESSAGE_BYTES else 400, "BAD_REQUEST",
                            "incomplete control request")  # fmt: skip
        else:
            try:
                request = decode_request(line)
            except msgspec.DecodeError as exc:
                reply = failure(400, "BAD_REQUEST", f"bad control request: {exc}")
            else:
                reply = self._dispatch(request)
        with contextlib.suppress(OSError):
            wfile.write(encode(reply) + b"\n")

    def _dispatch(self, request: AnyRequest) -> Reply:
        try:
            return self.handle(request)
        except Exception:  # a bug in a handler: answer 500, keep serving, leave a trace
            log.exception("control request %s failed", type(request).__name__)
            return failure(500, "INTERNAL_ERROR", "internal error in the supervisor")


def socket_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / "control.sock"


__all__ = ["ControlServer", "Handler", "socket", "socket_path"]
