"""A real nats-server with JetStream for the central's tests, and a real nats-py publisher that
plays the fleet's sensors (their streams, packet batches, stats and status)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import numpy as np

from leireye.fleet.model import KINDS, encode_batch, json_message, stream_name, subject
from leireye.record import RECORD_DTYPE
from tests.waiting import wait_for

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
TS0 = 1_700_000_000_000_000_000


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def nats_server(port: int = 0) -> Iterator[str]:
    """`nats-server -js` on `port` (0: a free one) of the loopback, with its own store; yields
    its URL."""
    port = port or free_tcp_port()
    store = Path(tempfile.mkdtemp(prefix="leireye-nats-"))
    proc = subprocess.Popen(
        [NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def listening() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"nats-server exited with {proc.returncode}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for(listening, 10, "nats-server to listen")
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(store, ignore_errors=True)


def records(first_id: int, count: int, raw_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows with sensor ids `first_id..`; `ts_ns` = TS0 + id, so the central's copy (whose `seq`
    is its own id) still says which sensor id it was; raw bytes = the id, repeated."""
    ids = np.arange(first_id, first_id + count, dtype=np.uint64)
    rows = np.zeros(count, dtype=RECORD_DTYPE)
    rows["seq"] = ids
    rows["ts_ns"] = TS0 + ids.astype(np.int64)
    rows["wire_len"] = rows["cap_len"] = raw_bytes
    rows["linktype"] = 1
    raw = np.repeat((ids % 251).astype(np.uint8)[:, None], raw_bytes, axis=1)
    return rows, raw


class Fleet:
    """The sensors' side, over one NATS connection per call (each call its own event loop)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _run(self, coro: Any) -> Any:
        return asyncio.run(coro)

    def create_streams(self, *sensors: str) -> None:
        async def go() -> None:
            nc = await nats.connect(self.url)
            js = nc.jetstream()
            for sensor in sensors:
                for kind in KINDS:
                    await js.add_stream(
                        name=stream_name(sensor, kind), subjects=[subject(sensor, kind)]
                    )
            await nc.close()

        self._run(go())

    def publish(
        self, sensor: str, kind: str, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        self.publish_many([(sensor, kind, body, headers)])

    def publish_many(self, messages: list[tuple[str, str, bytes, dict[str, str] | None]]) -> None:
        async def go() -> None:
            nc = await nats.connect(self.url)
            js = nc.jetstream()
            for sensor, kind, body, headers in messages:
                await js.publish(subject(sensor, kind), body, headers=headers)  # type: ignore[arg-type]
            await nc.close()

        self._run(go())

    def batch(
        self, sensor: str, first_id: int, count: int, lost: int = 0, raw_bytes: int = 128
    ) -> tuple[str, str, bytes, dict[str, str]]:
        rows, raw = records(first_id, count, raw_bytes)
        body, headers = encode_batch(sensor, rows, raw, lost)
        return sensor, "packets", body, headers

    def status(self, sensor: str, **fields: Any) -> tuple[str, str, bytes, None]:
        return (
            sensor,
            "status",
            json_message({"sensor": sensor, "state": "capturing", **fields}),
            None,
        )

    def stats(self, sensor: str, **fields: Any) -> tuple[str, str, bytes, None]:
        return sensor, "stats", json_message({"sensor": sensor, **fields}), None
