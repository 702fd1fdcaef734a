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
`Supervisor.call_in_loop`).

Who may call: the socket file is root's, mode 0660, group the web user's (so only root and that
group can connect at all), and every connection's peer is checked with SO_PEERCRED (by the pool
thread that takes it): its pid must be one of the web workers the supervisor started now
(`peers`), running as the web user (`uid`). Anything else (another process of the web user, a
capture process, root's own shell) gets a 403 reply and one line in the log (at most one per
`REFUSAL_LOG_S`, with a count of the rest). The `leireye user` and `token` commands do not use
the channel: they read and edit the files as root.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, BinaryIO, Final

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
REFUSAL_LOG_S: Final = 10.0  # the most often a kind of refusal (busy, foreign peer) is logged
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
    def __init__(
        self,
        path: Path,
        handle: Handler,
        peers: Callable[[], Collection[int]],
        *,
        uid: int | None = None,
        group: int | None = None,
    ) -> None:
        """Serve `handle` on `path` to the processes whose pid is in `peers()` at connect time
        (and whose uid is `uid`, when given); the socket file gets group `group` (root only)."""
        self.path = path
        self.handle = handle
        self.peers = peers
        self.uid = uid
        self.refusals = RefusalLog()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        server = self

        class _Connection(socketserver.StreamRequestHandler):
            timeout = READ_TIMEOUT_S

            def handle(self) -> None:
                if server._admit(self.connection):
                    server._serve(self.rfile, self.wfile)  # type: ignore[arg-type]
                    return
                with contextlib.suppress(OSError):  # read first: closing on unread data resets
                    self.rfile.readline(MAX_MESSAGE_BYTES + 1)
                    self.wfile.write(encode(REFUSED) + b"\n")

        old = os.umask(0o177)
        try:
            self._server = _Server(str(path), _Connection)
        finally:
            os.umask(old)
        if group is not None and os.geteuid() == 0:
            os.chown(path, 0, group)
        os.chmod(path, 0o660 if group is not None else 0o600)
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

    def _admit(self, connection: socket.socket) -> bool:
        pid, uid, _ = peer_credentials(connection)
        if pid in self.peers() and (self.uid is None or uid == self.uid):
            return True
        self.refusals.refused(pid, uid)
        return False

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


REFUSED: Final = failure(403, "FORBIDDEN", "only the sensor's web workers may call this")
_PEERCRED: Final = struct.Struct("3i")  # struct ucred: pid, uid, gid


def peer_credentials(connection: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process that connected (as of its `connect`)."""
    raw = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    pid, uid, gid = _PEERCRED.unpack(raw)
    return pid, uid, gid


class RefusalLog:
    """Logs refused callers, at most one line per `interval_s` (a caller that retries in a loop
    must not flood the log), with how many were refused meanwhile."""

    def __init__(self, interval_s: float = REFUSAL_LOG_S) -> None:
        self.interval_s = interval_s
        self.count = 0  # every refusal, logged or not
        self._unlogged = 0
        self._next = 0.0
        self._lock = threading.Lock()

    def refused(self, pid: int, uid: int) -> None:
        now = time.monotonic()
        with self._lock:
            self.count += 1
            if now < self._next:
                self._unlogged += 1
                return
            others, self._unlogged = self._unlogged, 0
            self._next = now + self.interval_s
        more = f" ({others} more refused since the last report)" if others else ""
        log.warning("control channel: refused a connection from pid %d uid %d: not a web "
                    "worker of this sensor%s", pid, uid, more)  # fmt: skip


def socket_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / "control.sock"


__all__ = ["ControlServer", "Handler", "socket", "socket_path"]
