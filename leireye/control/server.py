"""The supervisor's end of the control channel: a threaded Unix-socket server.

Each connection carries one request line and gets one reply line. Handlers run in the server's
threads; anything that must happen on the supervisor's main loop (starting and stopping capture
processes) is handed to it by the handler itself (see `Supervisor.call_in_loop`). The socket file
is created mode 0600 and given to the web user; nobody else can connect.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

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


class _Server(socketserver.ThreadingUnixStreamServer):
    request_queue_size = 128  # a burst of workers' requests must not find the queue full
    daemon_threads = True


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
        self._server.daemon_threads = True
        if owner is not None and os.geteuid() == 0:
            os.chown(path, owner[0], owner[1])
        os.chmod(path, 0o600)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True,
            name="control",
        )  # fmt: skip

    def start(self) -> None:
        self._thread.start()
        log.info("control channel on %s", self.path)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(2)
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
