"""The fleet's contract: subjects, streams, the packet batch on the wire, and the sensor table.

A fleet is sensors publishing into NATS JetStream and one central reading every sensor's streams
(docs/fleet.md). This module is what both sides agree on; it has no NATS client in it.

Subjects and streams
--------------------
Sensor `S` publishes on `leireye.S.packets`, `leireye.S.flows`, `leireye.S.stats` and
`leireye.S.status`, each into its own stream (`LEIREYE_S_PACKETS`, …), created by the sensor with
the retention of its `fleet.streams` config. One stream per sensor and kind keeps retention per
sensor (a busy uplink does not push a quiet branch out of a shared stream) and lets the central
follow each sensor's packets in that sensor's order.

A packet batch
--------------
One NATS message carries up to `fleet.batch_records` records that the sensor read from its ring,
in id order. The body is `count` rows of `RECORD_DTYPE` (256 bytes each), then `count` rows of
`raw_bytes` bytes (the first bytes of each frame), the whole compressed when the header says
so: zstd level 1 (`LE-Encoding: zstd`, Arrow's codec), 6.7 times faster than zlib level 1 on
the realistic mix for smaller bodies (docs/performance.md, "Fleet"); `zlib` is read too. The
headers (`BatchHeader`) say which sensor ids it holds and how many ids the sensor could not
send before it (its ring overwrote them while NATS was slow or down), so the central counts
every loss exactly. `Nats-Msg-Id` is `S:run:first_id`: a batch sent twice (a publish
retried after a timeout, a restarted publisher) is dropped by JetStream's duplicate window.

Ids start over at 1 when the sensor restarts (a new ring): `LE-Run` (the ring's creation time, ns)
tells one run of a sensor from the next, so the message ids of two runs never collide and a
reader can tell ids going back from a restart.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import msgspec
import numpy as np
import pyarrow as pa

from leireye.errors import LeirEyeError
from leireye.record import RECORD_DTYPE

SUBJECT_PREFIX: Final = "leireye"
Kind = Literal["packets", "flows", "stats", "status"]
KINDS: Final[tuple[Kind, ...]] = ("packets", "flows", "stats", "status")

BATCH_VERSION: Final = 1
COMPRESS_MIN_BYTES: Final = 4096  # smaller bodies are sent as they are
_ZSTD: Final = pa.Codec("zstd", compression_level=1)


class FleetError(LeirEyeError):
    """A fleet message or config that cannot be used (says which and why)."""


def subject(sensor: str, kind: Kind) -> str:
    return f"{SUBJECT_PREFIX}.{sensor}.{kind}"


def stream_name(sensor: str, kind: Kind) -> str:
    """`LEIREYE_<SENSOR>_<KIND>`; stream names may hold neither dots nor wildcards, and sensor
    names are limited to [A-Za-z0-9_-] (config.SensorName), so this is one-to-one."""
    return f"LEIREYE_{sensor}_{kind.upper()}"


def sensor_of_subject(subj: str) -> tuple[str, str]:
    """`leireye.S.packets` -> (`S`, `packets`); FleetError for anything else."""
    parts = subj.split(".")
    if len(parts) != 3 or parts[0] != SUBJECT_PREFIX or parts[2] not in KINDS:
        raise FleetError(f"not a fleet subject: {subj!r}")
    return parts[1], parts[2]


# -- packet batches ------------------------------------------------------------------------------

H_FIRST: Final = "LE-First-Id"  # the sensor id of the first record
H_LAST: Final = "LE-Last-Id"  # the sensor id of the last record
H_COUNT: Final = "LE-Count"
H_LOST: Final = "LE-Lost"  # ids the sensor could not send between the previous batch and this
H_RAW: Final = "LE-Raw-Bytes"  # raw bytes per record in the body
H_ENCODING: Final = "LE-Encoding"  # "zstd", "zlib" or "none"
H_VERSION: Final = "LE-Batch"  # BATCH_VERSION; the central refuses another
H_LAYOUT: Final = "LE-Record-Crc"  # CRC of RECORD_DTYPE's description (ring.layout)
H_RUN: Final = "LE-Run"  # the sensor run (its ring's creation time, ns); ids start over with it
H_CONTENT: Final = "LE-Content"  # on the flows subject: "minutes" (`minutemsg`); else flows
MINUTES: Final = "minutes"
MSG_ID: Final = "Nats-Msg-Id"


def record_crc() -> int:
    return zlib.crc32(repr(RECORD_DTYPE.descr).encode()) & 0xFFFF_FFFF


@dataclass(frozen=True)
class BatchHeader:
    sensor: str
    first_id: int
    last_id: int
    count: int
    lost: int
    raw_bytes: int
    run: int = 0

    def headers(self, encoding: str) -> dict[str, str]:
        return {
            MSG_ID: f"{self.sensor}:{self.run}:{self.first_id}",
            H_RUN: str(self.run),
            H_FIRST: str(self.first_id),
            H_LAST: str(self.last_id),
            H_COUNT: str(self.count),
            H_LOST: str(self.lost),
            H_RAW: str(self.raw_bytes),
            H_ENCODING: encoding,
            H_VERSION: str(BATCH_VERSION),
            H_LAYOUT: str(record_crc()),
        }


@dataclass(frozen=True)
class Batch:
    header: BatchHeader
    records: np.ndarray  # RECORD_DTYPE, `count` rows
    raw: np.ndarray | None  # (count, raw_bytes) uint8, None when raw_bytes == 0


def encode_batch(
    sensor: str,
    records: np.ndarray,
    raw: np.ndarray | None,
    lost: int,
    compress: bool = True,
    run: int = 0,
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one batch message. `records` must be non-empty, in id order."""
    if len(records) == 0:
        raise FleetError("an empty batch is never sent")
    raw_bytes = 0 if raw is None else int(raw.shape[1])
    header = BatchHeader(
        sensor,
        int(records["seq"][0]),
        int(records["seq"][-1]),
        len(records),
        lost,
        raw_bytes,
        run,
    )
    body = np.ascontiguousarray(records).tobytes()
    if raw is not None and raw_bytes:
        body += np.ascontiguousarray(raw).tobytes()
    encoding = "none"
    if compress and len(body) >= COMPRESS_MIN_BYTES:
        body, encoding = _ZSTD.compress(body, asbytes=True), "zstd"
    return body, header.headers(encoding)


MAX_BATCH_BODY: Final = 256 << 20  # a decompressed body above this is refused, not allocated


def decode_batch(sensor: str, headers: dict[str, str] | None, body: bytes) -> Batch:
    """A batch message back to arrays; FleetError (saying what) for anything malformed: the
    central counts such a message and goes on."""
    h = headers or {}
    try:
        if h.get(H_VERSION) != str(BATCH_VERSION):
            raise FleetError(f"batch version {h.get(H_VERSION)!r}, expected {BATCH_VERSION}")
        if h.get(H_LAYOUT) != str(record_crc()):
            raise FleetError("the sensor's record layout differs from the central's")
        count, raw_bytes = int(h[H_COUNT]), int(h[H_RAW])
        header = BatchHeader(
            sensor,
            int(h[H_FIRST]),
            int(h[H_LAST]),
            count,
            int(h[H_LOST]),
            raw_bytes,
            int(h.get(H_RUN, "0")),
        )
    except (KeyError, ValueError) as exc:
        raise FleetError(f"batch headers unusable: {exc}") from None
    if not 0 < count <= 1 << 20 or not 0 <= raw_bytes <= 65535 or header.lost < 0:
        raise FleetError(f"batch header out of range: count {count}, raw_bytes {raw_bytes}")
    expected = count * (RECORD_DTYPE.itemsize + raw_bytes)
    if expected > MAX_BATCH_BODY:
        raise FleetError(f"batch of {expected} bytes is above {MAX_BATCH_BODY}")
    encoding = h.get(H_ENCODING, "none")
    if encoding == "zlib":
        inflater = zlib.decompressobj()
        try:
            body = inflater.decompress(body, expected + 1)
        except zlib.error as exc:
            raise FleetError(f"batch body does not inflate: {exc}") from None
    elif encoding == "zstd":
        try:  # a body that inflates to any other size is refused, not allocated
            body = _ZSTD.decompress(body, decompressed_size=expected, asbytes=True)
        except (OSError, pa.ArrowException) as exc:
            raise FleetError(f"batch body does not inflate: {exc}") from None
    elif encoding != "none":
        raise FleetError(f"unknown batch encoding {encoding!r}")
    if len(body) != expected:
        raise FleetError(f"batch body is {len(body)} bytes, its header says {expected}")
    split = count * RECORD_DTYPE.itemsize
    records = np.frombuffer(body, dtype=RECORD_DTYPE, count=count).copy()
    raw = None
    if raw_bytes:
        raw = np.frombuffer(body, dtype=np.uint8, offset=split).reshape(count, raw_bytes).copy()
    return Batch(header, records, raw)


# -- the central's sensor table ------------------------------------------------------------------

SensorStateName = Literal["live", "silent", "never"]


class SensorState(msgspec.Struct, frozen=True):
    """What the central knows of one sensor; written by its ingest, read by its web workers."""

    name: str
    index: int  # the value of the record's `sensor` field for this sensor's packets
    state: SensorStateName
    last_message_ns: int  # 0: none yet
    packets: int  # records received from it
    lost: int  # ids it reported it could not send, plus ids missing in its streams
    bad_batches: int  # messages the central could not decode (counted, skipped)
    status: dict[str, Any] | None = None  # its last `status` message, as it sent it
    stats: dict[str, Any] | None = None  # its last `stats` snapshot, as it sent it
    # messages of any of its streams that were gone (retention) before the central read them
    missed_messages: int = 0
    flows: int = 0  # ended flows received from it (and written to the central's flow store)
    flows_missed: int = 0  # flow events it reported it could not send (its messages' `missed`)
    bytes: int = 0  # wire lengths of the records received from it
    # the packets-stream sequence its counters count up to (-1: unknown); after a crash the
    # journaled batches above it are counted from the journal (`leireye.fleet.replay.recount`)
    packets_seq: int = -1
    minutes: int = 0  # host and app minute rows received from it (written to the flow store)
    minutes_missed: int = 0  # minute rows it reported it could not send


class SensorTable(msgspec.Struct, frozen=True):
    """The file `<state_dir>/central/sensors.json`, replaced atomically about once a second.
    Indexes are given in order of first sight and never change (they are in the ring's records);
    `updated_ns` lets a reader tell a stalled ingest."""

    updated_ns: int
    sensors: list[SensorState]

    def names(self) -> dict[int, str]:
        return {s.index: s.name for s in self.sensors}

    def index_of(self, name: str) -> int | None:
        return next((s.index for s in self.sensors if s.name == name), None)


SENSOR_TABLE_FILE: Final = "central/sensors.json"


def write_sensor_table(path: Path, table: SensorTable) -> None:
    """Write `table` to `path` atomically (a temporary file in the same directory, renamed),
    mode 0640: the web user's group reads it, nobody else."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "wb") as out:
        out.write(msgspec.json.encode(table))
    os.replace(tmp, path)


def read_sensor_table(path: Path) -> SensorTable | None:
    """The table, or None when the central has not written one yet."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return msgspec.json.decode(data, type=SensorTable)
    except msgspec.DecodeError as exc:
        raise FleetError(f"{path}: {exc}") from None


def json_message(payload: dict[str, Any]) -> bytes:
    """`stats`, `status` and `flows` messages are JSON objects that carry `sensor`."""
    return json.dumps(payload, separators=(",", ":")).encode()
