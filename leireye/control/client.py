"""The web workers' end of the control channel (asyncio)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec

from leireye.control.protocol import MAX_MESSAGE_BYTES, AnyRequest, Reply, decode_reply, encode
from leireye.errors import RefusedError

TIMEOUT_S = 15.0  # a capture start waits for the new capture to report


class ControlError(RefusedError):
    """The supervisor refused the request (`status`, `code` as the API should answer), or could
    not be reached (503)."""


class ControlClient:
    def __init__(self, path: Path, timeout_s: float = TIMEOUT_S) -> None:
        self.path = path
        self.timeout_s = timeout_s

    async def call(self, request: AnyRequest) -> object:
        """The reply's data; ControlError when the supervisor refused or is unreachable."""
        try:
            reply = await asyncio.wait_for(self._exchange(request), self.timeout_s)
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            raise ControlError(
                503, "SERVICE_UNAVAILABLE", f"the supervisor did not answer ({exc!r})"
            ) from None
        except msgspec.DecodeError:
            raise ControlError(502, "BAD_GATEWAY", "bad reply from the supervisor") from None
        if not reply.ok:
            raise ControlError(reply.status, reply.code, reply.detail, reply.retry_after)
        return reply.data

    async def _exchange(self, request: AnyRequest) -> Reply:
        reader, writer = await asyncio.open_unix_connection(
            str(self.path), limit=MAX_MESSAGE_BYTES + 2
        )
        try:
            writer.write(encode(request) + b"\n")
            await writer.drain()
            line = await reader.readline()
        finally:
            writer.close()
        return decode_reply(line)
