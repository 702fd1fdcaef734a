"""Follow Stream's reassembly (`leireye.store.follow`) on crafted segments."""

from __future__ import annotations

import random

import pytest

from leireye.record import LinkType
from leireye.store.follow import Conversation, Segment, Stream, ascii_text, follow
from leireye.store.payload import transport_payload
from tests.tcpframes import ACK, FIN, RST, SYN, frame

C, S = ("10.0.0.1", 40000), ("10.0.0.2", 80)
ISN_C, ISN_S = 1000, 5000


def run(frames: list[bytes], **kw: object) -> Stream:
    return follow([(i * 1000, LinkType.EN10MB, f) for i, f in enumerate(frames)], **kw)  # type: ignore[arg-type]


def handshake() -> list[bytes]:
    return [
        frame(C, S, ISN_C, flags=SYN),
        frame(S, C, ISN_S, flags=SYN | ACK),
        frame(C, S, ISN_C + 1, flags=ACK),
    ]


def test_in_order_both_directions_interleaved() -> None:
    frames = [
        *handshake(),
        frame(C, S, ISN_C + 1, b"GET / HTTP/1.1\r\n"),
        frame(C, S, ISN_C + 17, b"Host: x\r\n\r\n"),
        frame(S, C, ISN_S + 1, b"HTTP/1.1 200 OK\r\n\r\n"),
        frame(C, S, ISN_C + 28, b"GET /2 HTTP/1.1\r\n\r\n"),
        frame(S, C, ISN_S + 20, b"bye"),
    ]
    st = run(frames)
    assert (st.transport, st.client, st.server) == ("TCP", C, S)
    assert [(s.direction, s.offset, s.data) for s in st.segments] == [
        ("client", 0, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("server", 0, b"HTTP/1.1 200 OK\r\n\r\n"),
        ("client", 27, b"GET /2 HTTP/1.1\r\n\r\n"),
        ("server", 19, b"bye"),
    ]
    assert st.segments[0].ts_ns == 3000
    assert st.data("client") == b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\n\r\n"
    assert st.gap_bytes() == 0 and st.retransmitted == 0 and not st.truncated


def test_client_is_the_syn_sender_even_when_the_server_speaks_first() -> None:
    frames = [frame(S, C, ISN_S, flags=SYN | ACK), frame(S, C, ISN_S + 1, b"220 ready\r\n")]
    st = run(frames)
    assert (st.client, st.server) == (C, S)
    assert st.segments == [Segment("server", 0, b"220 ready\r\n", 0, 1000)]


def test_reordered_segments_are_placed_and_delivered_when_contiguous() -> None:
    frames = [
        *handshake(),
        frame(C, S, ISN_C + 6, b"world"),
        frame(S, C, ISN_S + 1, b"ok"),
        frame(C, S, ISN_C + 1, b"hello"),
    ]
    st = run(frames)
    assert st.data("client") == b"helloworld"
    # the server's reply became deliverable first: the client's bytes waited for "hello"
    assert [s.direction for s in st.segments] == ["server", "client"]
    assert st.segments[1] == Segment("client", 0, b"helloworld", 0, 5000)


def test_retransmission_with_different_content_keeps_the_first_copy() -> None:
    frames = [
        *handshake(),
        frame(C, S, ISN_C + 1, b"abcdef"),
        frame(C, S, ISN_C + 1, b"abXdef"),  # same range, one byte different
        frame(C, S, ISN_C + 4, b"DEFghi"),  # overlaps 3 bytes (all different), adds 3
    ]
    st = run(frames)
    assert st.data("client") == b"abcdefghi"
    assert st.retransmitted == 6 + 3
    assert st.conflicts == 1 + 3


def test_overlap_filling_holes_between_pieces() -> None:
    frames = [
        *handshake(),
        frame(C, S, ISN_C + 3, b"CD"),
        frame(C, S, ISN_C + 7, b"GH"),
        frame(C, S, ISN_C + 1, b"abcdefghij"),
    ]
    st = run(frames)
    assert st.data("client") == b"abCDefGHij"
    assert (st.retransmitted, st.conflicts) == (4, 4)


def test_gaps_are_marked_with_their_size_including_before_a_fin() -> None:
    frames = [
        *handshake(),
        frame(C, S, ISN_C + 1, b"aaaa"),
        frame(C, S, ISN_C + 9, b"cccc"),  # 4 bytes lost before
        frame(C, S, ISN_C + 20, b"", flags=FIN | ACK),  # 7 bytes lost before the FIN (offset 19)
    ]
    st = run(frames)
    client = [(s.offset, s.data, s.gap) for s in st.segments if s.direction == "client"]
    assert client == [(0, b"aaaa", 0), (4, b"", 4), (8, b"cccc", 0), (12, b"", 7)]
    assert st.gap_bytes("client") == 11
    assert st.ended == {"client": "fin"}


def test_lost_first_segment_after_syn_is_a_leading_gap() -> None:
    st = run([*handshake(), frame(C, S, ISN_C + 11, b"later")])
    assert [(s.offset, s.data, s.gap) for s in st.segments] == [(0, b"", 10), (10, b"later", 0)]


@pytest.mark.parametrize("isn", [2**32 - 3, 2**32 - 1])
def test_sequence_wrap_around(isn: int) -> None:
    frames = [
        frame(C, S, isn, flags=SYN),
        frame(C, S, isn + 1, b"0123456789"),
        frame(C, S, isn + 21, b"KLMNO"),  # reordered across the wrap
        frame(C, S, isn + 11, b"ABCDEFGHIJ"),
        frame(C, S, isn + 26, b"", flags=FIN | ACK),
    ]
    st = run(frames)
    assert st.data("client") == b"0123456789ABCDEFGHIJKLMNO"
    assert st.gap_bytes() == 0 and st.ended == {"client": "fin"}


def test_stream_longer_than_4_gib_of_sequence_space_keeps_counting() -> None:
    chunk = bytes(range(256)) * 256  # 64 KiB
    frames = [frame(C, S, ISN_C, flags=SYN)]
    seq = ISN_C + 1
    for _ in range(4):  # jump the sequence by ~1 GiB four times, one segment each time
        frames.append(frame(C, S, seq, chunk[:100]))
        seq += 2**30
    st = run(frames, max_bytes=2**40)
    offsets = [(s.offset, s.gap) for s in st.segments]
    assert offsets[-1][0] == 3 * 2**30  # past 2**32 - 1 would have wrapped back to 0
    assert st.payload_bytes() == 400


def test_no_syn_starts_at_the_lowest_offset_seen() -> None:
    frames = [frame(C, S, 500, b"world"), frame(S, C, 9, b"hi"), frame(C, S, 495, b"hello")]
    st = run(frames)
    assert (st.client, st.server) == (C, S)  # the first frame's sender
    assert st.data("client") == b"helloworld"


def test_rst_ends_a_direction_and_data_on_syn_counts() -> None:
    frames = [
        frame(C, S, ISN_C, b"fastopen", flags=SYN),
        frame(S, C, ISN_S, flags=SYN | ACK),
        frame(C, S, ISN_C + 9, b"more"),
        frame(S, C, ISN_S + 1, b"", flags=RST | ACK),
    ]
    st = run(frames)
    assert st.data("client") == b"fastopenmore"
    assert st.ended == {"server": "rst"}


def test_other_conversations_and_non_tcp_frames_are_skipped() -> None:
    other = ("10.0.0.3", 1234)
    frames = [
        *handshake(),
        frame(other, S, 1, b"not ours"),
        frame(C, S, ISN_C + 1, b"ours", udp=True),
        b"\x00" * 10,
        frame(C, S, ISN_C + 1, b"ours"),
    ]
    st = run(frames, conversation=Conversation("TCP", S, C))
    assert st.data() == b"ours" and st.skipped == 3 and st.frames == 4


def test_cut_frames_leave_gaps_that_a_whole_retransmission_fills() -> None:
    whole = frame(C, S, ISN_C + 1, b"x" * 100)
    cut = whole[:-60]
    st = run([*handshake(), cut, frame(C, S, ISN_C + 101, b"tail")])
    assert [(s.offset, len(s.data), s.gap) for s in st.segments] == [(0, 40, 0), (40, 0, 60),
                                                                     (100, 4, 0)]  # fmt: skip
    assert st.cut_frames == 1
    st = run([*handshake(), cut, whole])
    assert st.data() == b"x" * 100 and st.gap_bytes() == 0


def test_udp_datagrams_in_capture_order_ipv6_and_vlan() -> None:
    a, b = ("fd00::1", 5353), ("fd00::2", 53)
    frames = [
        frame(a, b, 0, b"q1", udp=True, v6=True, vlan=7),
        frame(b, a, 0, b"answer", udp=True, v6=True, vlan=7),
        frame(a, b, 0, b"q2", udp=True, v6=True, vlan=7),
    ]
    st = run(frames)
    assert st.transport == "UDP" and st.client == a
    assert [(s.direction, s.offset, s.data) for s in st.segments] == [
        ("client", 0, b"q1"), ("server", 0, b"answer"), ("client", 2, b"q2"),
    ]  # fmt: skip


def test_the_cap_truncates_and_says_so() -> None:
    frames = [*handshake()]
    for i in range(10):
        frames.append(frame(C, S, ISN_C + 1 + 100 * i, bytes([65 + i]) * 100))
    st = run(frames, max_bytes=250)
    assert st.truncated and st.payload_bytes() == 250
    assert st.data() == b"A" * 100 + b"B" * 100 + b"C" * 50
    st = run(frames, max_bytes=1000)
    assert not st.truncated and st.payload_bytes() == 1000
    udp = [frame(C, S, 0, b"z" * 10, udp=True) for _ in range(3)]
    st = run(udp, max_bytes=25)
    assert st.truncated and st.data() == b"z" * 25


def test_random_segmentation_loss_duplication_and_reorder_against_the_truth() -> None:
    rng = random.Random(15)
    truth = {d: rng.randbytes(20000) for d in ("client", "server")}
    frames = [*handshake()]
    pieces = []
    for direction, data in truth.items():
        src, dst, isn = (C, S, ISN_C) if direction == "client" else (S, C, ISN_S)
        at = 0
        while at < len(data):
            size = rng.randint(1, 1500)
            pieces.append(frame(src, dst, isn + 1 + at, data[at : at + size]))
            if rng.random() < 0.2:  # a retransmission that also covers the next bytes
                pieces.append(frame(src, dst, isn + 1 + at, data[at : at + size + 300]))
            at = min(at + size, len(data))
        pieces.append(frame(src, dst, isn + 1 + at, b"", flags=FIN | ACK))
    rng.shuffle(pieces)
    st = run(frames + pieces)
    assert st.data("client") == truth["client"] and st.data("server") == truth["server"]
    assert st.gap_bytes() == 0 and st.conflicts == 0 and st.retransmitted > 0


def test_payload_of_other_link_types() -> None:
    eth = frame(C, S, 7, b"data")
    ip = eth[14:]
    for linktype, buf in [
        (LinkType.RAW, ip),
        (LinkType.NULL, (2).to_bytes(4, "little") + ip),
        (LinkType.LOOP, (2).to_bytes(4, "big") + ip),
        (LinkType.LINUX_SLL, b"\x00\x00\x00\x01\x00\x06" + b"\x00" * 8 + b"\x08\x00" + ip),
    ]:
        p = transport_payload(buf, linktype)
        assert p is not None and (p.src, p.sport, p.seq, p.data) == ("10.0.0.1", 40000, 7, b"data")
    assert transport_payload(eth, 999) is None
    v6 = frame(("fd00::1", 1), ("fd00::2", 2), 7, b"data", v6=True, vlan=3)
    rng = random.Random(7)
    for linktype in LinkType:
        for buf in (eth, v6, ip):
            for n in range(len(buf)):
                transport_payload(buf[:n], linktype)  # never raises
        for _ in range(300):
            transport_payload(rng.randbytes(rng.randint(0, 80)), linktype)


def test_ascii_text_like_wireshark() -> None:
    assert ascii_text(b"GET /\r\n\t\x00\xff~") == "GET /\r\n\t..~"


def test_store_frames_hands_the_time_range_to_the_reader() -> None:
    from dataclasses import dataclass

    from leireye.store.source import StoreFrames

    @dataclass
    class Stored:
        ts_ns: int
        linktype: int
        data: bytes

    asked: list[tuple[int, int]] = []

    class Reader:
        def between(self, from_ns: int, to_ns: int) -> list[Stored]:
            asked.append((from_ns, to_ns))
            frames = [*handshake(), frame(C, S, ISN_C + 1, b"stored whole")]
            return [Stored(i, LinkType.EN10MB, f) for i, f in enumerate(frames)]

    found = StoreFrames(Reader()).conversation(Conversation("TCP", C, S), 5, None)
    assert found.source == "store" and found.cut_at is None
    assert follow(found.frames, Conversation("TCP", C, S)).data() == b"stored whole"
    assert asked == [(5, 2**63 - 1)]
