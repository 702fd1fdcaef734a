"""A sensor's four JetStream streams: created with the retention of `fleet.streams`, or, when
they exist, used as they are and every setting that differs reported.

Each stream (`LEIREYE_<S>_<KIND>`, subject `leireye.<S>.<kind>`, docs/fleet.md) is file-backed,
limits-based (old messages go first when `max_age` or `max_bytes` is reached) and keeps a
`DUPLICATE_WINDOW_S` window of `Nats-Msg-Id`s: a batch published twice (an ack that timed out,
a publisher restarted) is stored once. A stream an operator changed on purpose (a longer
retention, more replicas) is never overwritten by a sensor restart: the sensor says what
differs and goes on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from leireye.config import FleetStreams
from leireye.fleet.model import KINDS, Kind, stream_name, subject

log = logging.getLogger("leireye.fleet")

DUPLICATE_WINDOW_S: Final = 120.0
_GB: Final = 1_000_000_000


@dataclass(frozen=True)
class Wanted:
    """What this sensor asks of one stream."""

    name: str
    subject: str
    max_age_s: float
    max_bytes: int
    replicas: int

    def config(self) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            subjects=[self.subject],
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.OLD,
            storage=StorageType.FILE,
            max_age=self.max_age_s,
            max_bytes=self.max_bytes,
            num_replicas=self.replicas,
            duplicate_window=DUPLICATE_WINDOW_S,
        )


def wanted(sensor: str, kind: Kind, cfg: FleetStreams) -> Wanted:
    return Wanted(
        stream_name(sensor, kind),
        subject(sensor, kind),
        cfg.max_age_h * 3600,
        int(cfg.max_gb * _GB),
        cfg.replicas,
    )


def differences(want: Wanted, found: StreamConfig) -> list[str]:
    """Each setting of `found` that is not what `want` asks, as `STREAM: key is X, config
    says Y` (empty: the stream is as configured)."""
    out: list[str] = []

    def differ(key: str, have: object, asked: object) -> None:
        if have != asked:
            out.append(f"{want.name}: {key} is {have}, config says {asked}")

    subjects = list(found.subjects or [])
    if want.subject not in subjects:
        out.append(f"{want.name}: subjects {subjects} do not hold {want.subject}")
    differ("max_age_s", _seconds(found.max_age), _seconds(want.max_age_s))
    differ("max_bytes", found.max_bytes, want.max_bytes)
    differ("replicas", found.num_replicas, want.replicas)
    differ("storage", _value(found.storage), StorageType.FILE.value)
    differ("retention", _value(found.retention), RetentionPolicy.LIMITS.value)
    differ("duplicate_window_s", _seconds(found.duplicate_window),
           _seconds(DUPLICATE_WINDOW_S))  # fmt: skip
    return out


def _seconds(value: float | None) -> float:
    return round(float(value or 0), 3)


def _value(value: object) -> object:
    return getattr(value, "value", value)


async def ensure_stream(js: JetStreamContext, want: Wanted) -> list[str]:
    """Create the stream `want` names, or verify the one there; the differences found."""
    try:
        info = await js.stream_info(want.name)
    except NotFoundError:
        await js.add_stream(want.config())
        log.info("fleet: created stream %s (%s)", want.name, want.subject)
        return []
    found = differences(want, info.config)
    for line in found:
        log.warning("fleet: stream %s, used as it is", line)
    return found


async def ensure_streams(
    js: JetStreamContext, sensor: str, cfg: FleetStreams, kinds: tuple[Kind, ...] = KINDS
) -> list[str]:
    """Every stream of `kinds` for `sensor`; the differences of those that exist."""
    found: list[str] = []
    for kind in kinds:
        found += await ensure_stream(js, wanted(sensor, kind, cfg))
    return found
