"""The capture status of a multi-process capture: one status block per shard, read as one.

Each capture shard keeps its own block (`NAME-status` for shard 0, `NAME-status-k` for the
others), so every process still has exactly one writer for its block and the supervisor keeps
one heartbeat and one restart counter per process. Readers (the web workers' `status` messages,
`/health`) want one capture: `sum_statuses` adds the counters (packets, bytes, kernel and
interface drops, decode errors by kind, restarts) and keeps what describes the whole capture
(state: capturing while any shard captures; interface, both filters, link type, snaplen and pid
of shard 0; every shard's error text, prefixed with its shard).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from leireye.ring.shards import shard_name
from leireye.ring.status import CaptureState, CaptureStatus, StatusBlock


def sum_statuses(statuses: Sequence[CaptureStatus]) -> CaptureStatus:
    if len(statuses) == 1:
        return statuses[0]
    first = statuses[0]
    states = [s.state for s in statuses]
    state = first.state
    if CaptureState.CAPTURING in states:
        state = CaptureState.CAPTURING
    elif CaptureState.ERROR in states:
        state = CaptureState.ERROR
    by_kind: Counter[str] = Counter()
    for s in statuses:
        by_kind.update(s.decode_errors_by_kind)
    errors = [f"shard {k}: {s.last_error}" for k, s in enumerate(statuses) if s.last_error]
    started = [s.started_at_ns for s in statuses if s.started_at_ns]
    beats = [s.heartbeat_ns for s in statuses if s.capturing and s.heartbeat_ns]
    return CaptureStatus(
        state=state,
        capturing=any(s.capturing for s in statuses),
        interface=first.interface,
        bpf=first.bpf,
        effective_bpf=first.effective_bpf,
        linktype=first.linktype,
        snaplen=first.snaplen,
        pid=first.pid,
        started_at_ns=min(started, default=0),
        updated_ns=max(s.updated_ns for s in statuses),
        packets_captured=sum(s.packets_captured for s in statuses),
        bytes_captured=sum(s.bytes_captured for s in statuses),
        kernel_drops=sum(s.kernel_drops for s in statuses),
        if_drops=sum(s.if_drops for s in statuses),
        decode_errors=sum(s.decode_errors for s in statuses),
        decode_errors_by_kind=dict(by_kind),
        last_error="; ".join(errors),
        heartbeat_ns=min(beats, default=first.heartbeat_ns),
        restarts=sum(s.restarts for s in statuses),
    )


class StatusSet:
    """The status blocks of every capture shard; `read()` is their sum, `read_all()` each."""

    def __init__(self, blocks: Sequence[StatusBlock]) -> None:
        self.blocks = list(blocks)

    @classmethod
    def attach(cls, status_name: str, shards: int = 1) -> StatusSet:
        blocks: list[StatusBlock] = []
        try:
            for k in range(shards):
                blocks.append(StatusBlock.attach(shard_name(status_name, k)))
        except BaseException:
            for block in blocks:
                block.close()
            raise
        return cls(blocks)

    def read_all(self) -> list[CaptureStatus]:
        return [block.read() for block in self.blocks]

    def read(self) -> CaptureStatus:
        return sum_statuses(self.read_all())

    def close(self) -> None:
        for block in self.blocks:
            block.close()
