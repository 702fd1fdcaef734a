"""Which of the fleet's streams exist: what the central's ingest follows."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from typing import Final

import nats.js.errors
from nats.js import JetStreamContext

from leireye.fleet.model import Kind, stream_name

_PACKETS_STREAM: Final = re.compile(r"LEIREYE_([A-Za-z0-9][A-Za-z0-9_-]{0,62})_PACKETS")
_PAGE: Final = 256  # JetStream's stream list page


async def fleet_streams(
    js: JetStreamContext, sensors: Sequence[str], kinds: Sequence[Kind]
) -> set[str]:
    """The names of the streams that exist: of `sensors` (asked one by one: listing every
    stream may not be allowed to the central's NATS user), or every stream when none is named.
    Raises nats' errors (timeouts, no JetStream) for the caller to log and retry."""
    if sensors:
        found = set()
        for name in sensors:
            for kind in kinds:
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    found.add((await js.stream_info(stream_name(name, kind))).config.name)
        return {s for s in found if s}
    names: set[str] = set()
    offset = 0
    while True:
        page = await js.streams_info(offset)
        names.update(s.config.name for s in page if s.config.name)
        offset += len(page)
        if len(page) < _PAGE:
            return names


def sensors_of(streams: set[str]) -> list[str]:
    """The sensors (of valid names, config.SensorName) that have a packets stream, sorted."""
    return sorted(m.group(1) for s in streams if (m := _PACKETS_STREAM.fullmatch(s)))
