"""The control server's fixed pool: a flood of connections costs a queue entry each, never a
thread each; past the queue, connections are answered 503 at once and counted. The handler here
blocks on purpose, standing in for slow work (a login waiting for a verification slot)."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from leireye.control.client import ControlClient, ControlError
from leireye.control.protocol import AnyRequest, CaptureStop, Reply, decode_reply, encode
from leireye.control.server import QUEUE, THREADS, ControlServer, socket_path
from tests.waiting import scaled, wait_for


class Blocking:
    """A handler that holds every request until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = 0
        self._lock = threading.Lock()

    def __call__(self, request: AnyRequest) -> Reply:
        with self._lock:
            self.entered += 1
        self.release.wait(scaled(30))
        return Reply(True, "done")


@pytest.fixture
def served() -> Iterator[tuple[ControlServer, Blocking, Path]]:
    with tempfile.TemporaryDirectory(prefix="leireye-ctl-") as state:
        handler = Blocking()
        path = socket_path(state)
        server = ControlServer(path, handler, lambda: {os.getpid()})  # the test plays a worker
        server.start()
        try:
            yield server, handler, path
        finally:
            handler.release.set()
            server.close()


def send(path: Path, request: bool = True) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(scaled(30))
    sock.connect(str(path))
    if request:
        sock.sendall(encode(CaptureStop("a token")) + b"\n")
    return sock


def reply_of(sock: socket.socket) -> Reply:
    with sock:
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return decode_reply(received)


def test_a_flood_is_served_by_a_fixed_pool_and_the_excess_refused_at_once(
    served: tuple[ControlServer, Blocking, Path],
) -> None:
    server, handler, path = served
    threads = threading.active_count()
    held = [send(path) for _ in range(THREADS)]
    wait_for(lambda: handler.entered == THREADS, 10, "every pool thread to take a request")
    held += [send(path) for _ in range(QUEUE)]
    wait_for(lambda: server.queued() == QUEUE, 10, "the queue to fill")

    # Past the queue: answered busy without waiting for the handlers (they are all blocked).
    extra = [send(path, request=False) for _ in range(5)]  # (no race with the refusal)
    for sock in extra:
        assert reply_of(sock) == Reply(False, None, 503, "SERVICE_UNAVAILABLE",
                                       "the supervisor is busy", 1.0)  # fmt: skip
    with pytest.raises(ControlError) as info:  # read as the busy reply, or a closed connection
        asyncio.run(ControlClient(path, scaled(10)).call(CaptureStop("a token")))
    assert (info.value.status, info.value.code) == (503, "SERVICE_UNAVAILABLE")
    assert server.refused == 6
    assert threading.active_count() == threads  # no thread per connection

    handler.release.set()
    assert [reply_of(sock) for sock in held] == [Reply(True, "done")] * (THREADS + QUEUE)
    assert handler.entered == THREADS + QUEUE
    assert asyncio.run(ControlClient(path, scaled(10)).call(CaptureStop("a token"))) == "done"


def test_close_ends_the_pool_and_drops_what_still_waits(
    served: tuple[ControlServer, Blocking, Path],
) -> None:
    server, handler, path = served
    held = [send(path) for _ in range(THREADS + 3)]
    wait_for(lambda: handler.entered == THREADS and server.queued() == 3, 10, "a full pool")
    handler.release.set()
    server.close()
    assert not path.exists()
    assert not any(t.name.startswith("control") and t.is_alive() for t in threading.enumerate())
    for sock in held:
        sock.close()
