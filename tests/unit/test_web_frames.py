"""Frames made once per filter group: the same messages as each session made alone, the same
skips and `dropped` counts, and wire bytes a WebSocket client reads back."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
from wsproto.frame_protocol import FrameProtocol, Opcode

from leireye.web.frames import Frame, PacketRun, frame_header
from leireye.web.session import Session
from leireye.wire import Close
from tests.unit.test_web_session import new_session, packets, subscribed


def read_frames(data: bytes) -> list[tuple[Opcode, Any]]:
    client = FrameProtocol(client=True, extensions=[])
    client.receive_bytes(data)
    return [(f.opcode, f.payload) for f in client.received_frames()]


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_wire_bytes_are_one_frame_a_client_reads_back(size: int) -> None:
    text = "é" * (size // 2) + "a" * (size % 2)
    assert read_frames(Frame(text, 1).wire()) == [(Opcode.TEXT, text)]
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert read_frames(Frame(data, 1).wire()) == [(Opcode.BINARY, bytearray(data))]


def test_frame_header_lengths() -> None:
    assert frame_header(1, 125) == b"\x81\x7d"
    assert frame_header(2, 126) == b"\x82\x7e\x00\x7e"
    assert frame_header(1, 65536) == b"\x81\x7f" + (65536).to_bytes(8, "big")


def everything(session: Session) -> list[Any]:
    out: list[Any] = []
    while (item := session.next_outgoing()) is not None:
        out.append(item)
    return out


def test_a_group_taking_a_run_whole_shares_its_frames() -> None:
    sessions = [new_session(max_message_bytes=4096, outbox=1000) for _ in range(3)]
    for s in sessions:
        everything(s)
        subscribed(s, options={"batch": True})
        everything(s)
    run = PacketRun(*packets(1, 100))
    for s in sessions:
        s.deliver_run(run)
    items = [[s.next_item() for _ in range(3)] for s in sessions]
    assert all(isinstance(f, Frame) for f in items[0])
    for other in items[1:]:
        assert all(a is b for a, b in zip(items[0], other, strict=True))  # the same objects


def feed(op: tuple[Any, ...], shared: list[Session], alone: list[Session]) -> None:
    kind = op[0]
    if kind == "deliver":
        ids, messages = packets(op[1], op[2])
        run = PacketRun(ids, messages)
        for s in shared:
            s.deliver_run(run, lost=op[3])
        for s in alone:
            s.deliver(ids.copy(), list(messages), lost=op[3])
    elif kind == "read":
        for s in (shared[op[1]], alone[op[1]]):
            for _ in range(op[2]):
                s.next_outgoing()


@pytest.mark.parametrize("seed", range(12))
def test_shared_runs_deliver_what_each_session_made_alone(seed: int) -> None:
    """Sessions of one group with different outboxes, batch or not, reading at their own
    pace (so some skip, some take a part of a run, some overlap ids): each one's messages,
    notices and counts equal those of a twin fed the same packets on its own."""
    rng = random.Random(seed)
    kinds = [({"batch": True}, 16), ({"batch": True}, 300), ({}, 40), ({"batch": True}, 64)]
    shared, alone = [], []
    for options, outbox in kinds:
        limit = rng.choice([2100, 4096])
        pair = [new_session(max_message_bytes=limit, outbox=outbox) for _ in range(2)]
        for s in pair:
            everything(s)
            subscribed(s, options=options)
            everything(s)
        shared.append(pair[0])
        alone.append(pair[1])
    next_id = 1
    for _ in range(200):
        if rng.random() < 0.5:
            n = rng.randint(0, 60)
            first = next_id - rng.choice([0, 0, 0, 5])  # now and then an overlap
            feed(("deliver", max(1, first), n, rng.choice([0, 0, 0, 9])), shared, alone)
            next_id = max(next_id, first + n)
        else:
            feed(("read", rng.randrange(len(kinds)), rng.randint(0, 30)), shared, alone)
        for a, b in zip(shared, alone, strict=True):
            assert (a.dropped, a.queued, a.stream_lost) == (b.dropped, b.queued, b.stream_lost)
    for a, b in zip(shared, alone, strict=True):
        got, want = everything(a), everything(b)
        assert got == want
        assert not any(isinstance(m, Close) for m in got)


def test_a_run_part_has_its_own_ids_messages_and_records() -> None:
    ids, messages = packets(10, 6)
    records = np.zeros(6, dtype=[("seq", "u8")])
    records["seq"] = ids
    run = PacketRun(ids, messages, records)
    part = run.take([1, 4])
    assert part.ids.tolist() == [11, 14]
    assert part.messages == [messages[1], messages[4]]
    assert part.records is not None and part.records["seq"].tolist() == [11, 14]
    tail = run.take(slice(3, None))
    assert tail.ids.tolist() == [13, 14, 15] and tail.messages == messages[3:]
