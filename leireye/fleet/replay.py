"""A restarted central refills its ring from the journal (`leireye.fleet.journal`).

After a clean stop or a crash on the same kernel boot (`journal.resume_point`) the supervisor
creates the ring with its base just before the journal's replayable suffix; `replay` fetches
each entry's message from its sensor's packets stream by sequence, decodes it and writes it to
the ring, so each record gets the id it had in the last run (checked). Nothing is acknowledged
and nothing is counted in the sensor table again.

What cannot be replayed is logged and its ids are skipped (`RingWriter.skip_to`: readers count
them lost): entries older than a stream's first message (gone with its retention) and those of
a sensor no longer in the table are cut from the front, so only the suffix after them is
replayed; a message that is gone or does not match further on (deleted from inside the stream,
another count) leaves a hole of its own ids.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, cast

import nats.errors
import numpy as np
from nats.js import JetStreamContext

from leireye.fleet.model import FleetError, decode_batch, stream_name
from leireye.fleet.tracker import Fleet
from leireye.ring import RingWriter

log = logging.getLogger("leireye.ingest")


async def replay(
    js: JetStreamContext,
    plan: np.ndarray,
    fleet: Fleet,
    writer: RingWriter,
    stopping: Callable[[], bool],
) -> int:
    """Write the planned entries to the ring; return how many records were replayed."""
    names = {t.index: t.name for t in fleet.sensors.values()}
    start = await _usable_from(js, plan, names)
    if start:
        first, end = int(plan["first_id"][0]), int(plan["first_id"][start])
        log.warning("replay: %d packets (ids %d..%d) not replayed: gone from their streams",
                    end - first, first, end - 1)  # fmt: skip
    replayed = 0
    for entry in plan[start:]:
        first, count = int(entry["first_id"]), int(entry["count"])
        if stopping():
            log.info("replay stopped at id %d", first)
            break
        writer.skip_to(first)  # no-op unless an entry before it failed
        name = names[int(entry["sensor"])]
        stream, seq = stream_name(name, "packets"), int(entry["seq"])
        try:
            msg = await js.get_msg(stream, seq=seq)
            batch = decode_batch(name, cast(Any, msg.headers), msg.data or b"")
            if len(batch.records) != count:
                raise FleetError(f"{len(batch.records)} records, the journal says {count}")
        except (TimeoutError, nats.errors.Error, FleetError) as exc:
            log.warning("replay: ids %d..%d (%s message %d) not replayed: %s",
                        first, first + count - 1, stream, seq, exc)  # fmt: skip
            writer.skip_to(first + count)
            continue
        records = batch.records
        records["sensor"] = entry["sensor"]
        frames = None
        if batch.raw is not None and writer.ring.raw_bytes:
            frames = batch.raw.view(f"S{batch.raw.shape[1]}").reshape(-1)
        got = writer.write(records, cast(Any, frames))
        assert got == first, f"replayed id {got}, the journal says {first}"
        replayed += count
    log.info("replay: %d packets of the last run back in the ring with their ids", replayed)
    return replayed


async def _usable_from(js: JetStreamContext, plan: np.ndarray, names: dict[int, str]) -> int:
    """The index of the first entry after the last one that cannot be replayed (its sensor is
    unknown, or its message is older than its stream's first one)."""
    firsts: dict[int, int] = {}
    for index in {int(i) for i in plan["sensor"]}:
        name = names.get(index)
        if name is None:
            firsts[index] = -1
            continue
        try:
            info = await js.stream_info(stream_name(name, "packets"))
            firsts[index] = int(info.state.first_seq)
        except (TimeoutError, nats.errors.Error) as exc:
            log.warning("replay: stream of sensor %s: %s", name, exc)
            firsts[index] = -1
    start = 0
    for k, entry in enumerate(plan):
        first_seq = firsts[int(entry["sensor"])]
        if first_seq < 0 or int(entry["seq"]) < first_seq:
            start = k + 1
    return start
