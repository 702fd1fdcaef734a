"""Where a sensor's packets stream stands: what a publisher reads before it publishes, on its
start and after any doubt (docs/fleet.md, "Order and exactly once", "Restarts")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from leireye.fleet.model import H_COUNT, H_LAST, H_LOST, H_RUN

WALK_BACK_MAX: Final = 10_000  # stored messages a restart looks at to settle its counters


async def stored_last(js: JetStreamContext, stream: str, run: int) -> tuple[int, int]:
    """The stream's last sequence, and the last id it holds of run `run` (0: none)."""
    info = await js.stream_info(stream)
    last_seq = info.state.last_seq
    if not last_seq:
        return 0, 0
    try:
        msg = await js.get_msg(stream, seq=last_seq)
    except NotFoundError:  # expired or deleted: the duplicate window covers a resend
        return last_seq, 0
    headers = msg.headers or {}
    if headers.get(H_RUN) != str(run):
        return last_seq, 0
    return last_seq, int(headers.get(H_LAST, "0"))


@dataclass(frozen=True)
class Stored:
    """The batches of a run the stream holds after a known id, added up."""

    records: int = 0
    lost: int = 0
    batches: int = 0
    bytes: int = 0
    last_id: int = 0


async def stored_after(
    js: JetStreamContext, stream: str, run: int, last_seq: int, known: int
) -> Stored:
    """The batches of run `run` the stream holds with ids after `known` (those a publisher
    published and died before it saw acknowledged), read back from the stream's end."""
    records = lost = batches = size = 0
    last = known
    for seq in range(last_seq, max(0, last_seq - WALK_BACK_MAX), -1):
        try:
            msg = await js.get_msg(stream, seq=seq)
        except NotFoundError:
            break
        h = msg.headers or {}
        if h.get(H_RUN) != str(run) or int(h.get(H_LAST, "0")) <= known:
            break
        last = max(last, int(h[H_LAST]))
        records += int(h.get(H_COUNT, "0"))
        lost += int(h.get(H_LOST, "0"))
        batches += 1
        size += len(msg.data or b"")
    return Stored(records, lost, batches, size, last)
