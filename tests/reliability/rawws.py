"""A raw WebSocket client for frames a well-behaved library refuses to send: text frames with
invalid UTF-8, reserved opcodes or bits, lengths the payload does not have. Socket reads have a
timeout; every loop is bounded."""

from __future__ import annotations

import base64
import os
import socket
import struct
import time
from dataclasses import dataclass

from tests.waiting import scaled

OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING = 0x1, 0x2, 0x8, 0x9


@dataclass
class Frame:
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        if self.opcode != OP_CLOSE or len(self.payload) < 2:
            return None
        return int(struct.unpack("!H", self.payload[:2])[0])


def frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0,
          length: int | None = None) -> bytes:  # fmt: skip
    """A masked client frame; `length` overrides the announced length."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class RawSocket:
    def __init__(
        self,
        port: int,
        query: str = "",
        timeout: float = 10,
        rcvbuf: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """`rcvbuf`: a small receive buffer (set before connecting, so the TCP window stays
        small) makes a client that stops reading stall the server's sends almost at once.
        `headers`: more handshake headers; a `Host` there replaces the default one."""
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(scaled(timeout))
        self.buf = b""
        try:
            self.status = self._handshake(port, query, headers or {})
        except BaseException:
            self.sock.close()  # a failed handshake leaks no socket into a later test
            raise

    def _handshake(self, port: int, query: str, headers: dict[str, str]) -> int:
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        fields = {"Host": f"127.0.0.1:{port}", **headers}
        request = (
            f"GET /ws/capture{query} HTTP/1.1\r\n"
            + "".join(f"{name}: {value}\r\n" for name, value in fields.items())
            + "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        return int(head.split(b" ", 2)[1])

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the server")
        self.buf += chunk

    def _need(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_frame(self) -> Frame:
        b0, b1 = self._need(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._need(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._need(8))[0]
        return Frame(b0 & 0x0F, self._need(n))

    def frames_until_close(self, timeout: float = 10, limit: int = 10_000) -> list[Frame]:
        """Every frame up to and including a close frame; [...] without one if the socket ends
        first. Fails after `timeout` (scaled) or `limit` frames."""
        deadline = time.monotonic() + scaled(timeout)
        got: list[Frame] = []
        for _ in range(limit):
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                f = self.read_frame()
            except ConnectionError:
                return got
            got.append(f)
            if f.opcode == OP_CLOSE:
                return got
        raise AssertionError(f"no close within {limit} frames")

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
