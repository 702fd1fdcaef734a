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

`recount` puts in the sensor table what a crash kept out of it: the table is written once a
second with, per sensor, the packets sequence its counters count up to (`packets_seq`; the
counting and that sequence change together, between two of its writes), so the journaled
batches above it were written to the ring and not counted. They are read back for their
headers and counted as the ingest would have (`packets`, `lost` from `LE-Lost` and the id gap,
`missed_messages` from a sequence gap: a batch that could not be decoded in that second shows
there, not in `bad_batches`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, cast

import nats.errors
import numpy as np
from nats.js import JetStreamContext

from leireye.fleet.model import H_LAST, FleetError, decode_batch, stream_name
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


async def recount(
    js: JetStreamContext, entries: np.ndarray, fleet: Fleet, stopping: Callable[[], bool]
) -> int:
    """Count in the sensor table the journaled batches its saved counters do not count yet
    (written to the ring in the last second before a crash: the table is written once a
    second, with the packets sequence it counts up to). Each is read back from its stream for
    its header, in journal order, so `packets`, `lost` and `missed_messages` come out as if
    the dead run had written the table last; one gone from its stream counts its journaled
    records only. Return how many batches were counted."""
    tracks = {t.index: t for t in fleet.sensors.values()}
    counted = 0
    for entry in entries:
        if stopping():
            break
        track = tracks.get(int(entry["sensor"]))
        seq = int(entry["seq"])
        if track is None or track.counted_seq < 0 or seq <= track.counted_seq:
            continue  # unknown, or counted already
        stream = stream_name(track.name, "packets")
        if "packets" not in track.sequences:  # the batch before: where lost ids count from
            track.sequences["packets"] = track.counted_seq
            track.last_id = await _last_id(js, stream, track.counted_seq)
        try:
            msg = await js.get_msg(stream, seq=seq)
            batch = decode_batch(track.name, cast(Any, msg.headers), msg.data or b"")
        except (TimeoutError, nats.errors.Error, FleetError) as exc:
            log.warning("%s message %d: not counted from its header: %s", stream, seq, exc)
            track.sequences["packets"] = seq
            track.packets += int(entry["count"])
            track.last_id = 0
        else:
            track.on_message("packets", seq, 0)
            track.on_batch(batch.header, int(batch.records["wire_len"].sum()))
        counted += 1
    if counted:
        log.info("%d batches written in the last run's last second counted", counted)
    return counted


async def _last_id(js: JetStreamContext, stream: str, seq: int) -> int:
    if seq <= 0:
        return 0
    try:
        msg = await js.get_msg(stream, seq=seq)
    except (TimeoutError, nats.errors.Error):
        return 0
    return int((msg.headers or {}).get(H_LAST, 0))


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
