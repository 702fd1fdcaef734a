"""The ICMP identifier in the record: echo (and the other messages of `rules.ICMP_ID_TYPES`)
put it in `src_port` and `dst_port` under F_HAS_ICMP_ID, never F_HAS_PORTS; other messages and
messages cut before it have none. Both decoders read every frame and must agree
(`decode_checked`), the packet detail shows the same identifier, and nothing that reads ports
takes it for one."""

from __future__ import annotations

import json
import struct

import dpkt
import numpy as np
import pytest

from leireye.client.columns import arrays_of, decode_columns
from leireye.config import StatsConfig
from leireye.decode.detail import describe_frame
from leireye.record import (
    F_HAS_ADDR,
    F_HAS_ICMP,
    F_HAS_ICMP_ID,
    F_HAS_PORTS,
    F_TRUNCATED,
    DecodeError,
    LinkType,
)
from leireye.stats.accumulator import StatsAccumulator
from leireye.web.columns import encode_columns
from leireye.web.encode import PacketEncoder
from leireye.web.filters import PacketFilter, parse_filters
from tests.decode_compare import decode_both, decode_checked, record_info
from tests.traffic import frames as fb

ECHO_ID, ECHO_SEQ = 0xBEEF, 7
T0, NS = 1_700_000_000 * 10**9, 10**9


def _echo(
    icmp_type: int, ident: int = ECHO_ID, seq: int = ECHO_SEQ, data: bytes = b"ping"
) -> bytes:
    return struct.pack("!HH", ident, seq) + data


def icmp4(icmp_type: int, body: bytes, code: int = 0) -> bytes:
    return fb.ether(fb.ipv4(dpkt.icmp.ICMP(type=icmp_type, code=code, data=body), 1), 0x0800)


def icmp6(icmp_type: int, body: bytes, code: int = 0) -> bytes:
    return fb.ether(fb.ipv6(dpkt.icmp6.ICMP6(type=icmp_type, code=code, data=body), 58), 0x86DD)


def _id_of(record: np.void) -> int | None:
    flags = int(record["flags"])
    assert not flags & F_HAS_PORTS
    if not flags & F_HAS_ICMP_ID:
        assert (int(record["src_port"]), int(record["dst_port"])) == (0, 0)
        return None
    assert int(record["src_port"]) == int(record["dst_port"])
    return int(record["src_port"])


def _detail(frame: bytes, layer: str, stored: int | None = None) -> dict[str, object]:
    layers = describe_frame(frame[:stored], LinkType.EN10MB, len(frame))
    fields: dict[str, object] = next(x["fields"] for x in layers if x["layer"] == layer)
    return fields


@pytest.mark.parametrize(
    ("make", "icmp_type", "text"),
    [
        (icmp4, 8, "ICMP echo request"),
        (icmp4, 0, "ICMP echo reply"),
        (icmp4, 13, "ICMP timestamp request"),
        (icmp4, 14, "ICMP timestamp reply"),
        (icmp4, 17, "ICMP address mask request"),
        (icmp4, 18, "ICMP address mask reply"),
        (icmp6, 128, "ICMPv6 echo request"),
        (icmp6, 129, "ICMPv6 echo reply"),
    ],
)
def test_messages_with_an_identifier_carry_it_in_both_port_fields(
    make: object, icmp_type: int, text: str
) -> None:
    frame = make(icmp_type, _echo(icmp_type))  # type: ignore[operator]
    r = decode_checked(frame)
    assert _id_of(r) == ECHO_ID
    assert int(r["flags"]) == F_HAS_ADDR | F_HAS_ICMP | F_HAS_ICMP_ID
    assert (int(r["icmp_type"]), int(r["error"]), record_info(r)) == (icmp_type, 0, text)
    layer = "ICMPv6" if make is icmp6 else "ICMP"
    fields = _detail(frame, layer)
    assert (fields["identifier"], fields["sequence"]) == (ECHO_ID, ECHO_SEQ)


@pytest.mark.parametrize(
    ("frame", "layer"),
    [
        # destination unreachable quoting a UDP datagram: its bytes 4..6 are not an id
        (icmp4(3, bytes(4) + fb.ipv4(fb.udp(5353, 53), 17), code=3), "ICMP"),
        (icmp4(11, bytes(4) + fb.ipv4(fb.udp(5353, 53), 17)), "ICMP"),
        (icmp4(5, b"\x0a\x00\x00\x01" + bytes(28), code=1), "ICMP"),  # redirect
        (icmp6(1, bytes(4) + fb.ipv6(fb.udp(5353, 53), 17), code=4), "ICMPv6"),
        (icmp6(135, bytes(20)), "ICMPv6"),  # neighbour solicitation
        (icmp6(133, bytes(12)), "ICMPv6"),  # router solicitation
    ],
)
def test_messages_without_an_identifier_have_none(frame: bytes, layer: str) -> None:
    r = decode_checked(frame)
    assert _id_of(r) is None
    assert int(r["flags"]) == F_HAS_ADDR | F_HAS_ICMP
    assert "identifier" not in _detail(frame, layer)


def test_ids_of_a_batch_are_each_their_own() -> None:
    """The fast path reads a whole batch at once: mixed types, versions and ids in one."""
    frames = [icmp4(8, _echo(8, ident=i)) for i in (1, 2, 65535, 0)]
    frames += [icmp6(129, _echo(129, ident=300)), icmp4(3, bytes(36)), fb.udp4(5000, 53)]
    records = decode_both(frames, LinkType.EN10MB)
    assert [_id_of(r) for r in records[:6]] == [1, 2, 65535, 0, 300, None]
    udp = records[6]
    assert int(udp["flags"]) & F_HAS_PORTS and not int(udp["flags"]) & F_HAS_ICMP_ID


@pytest.mark.parametrize("make", [icmp4, icmp6])
@pytest.mark.parametrize("keep", [0, 1, 2, 3])
def test_an_echo_cut_before_its_identifier_keeps_type_and_code_only(
    make: object, keep: int
) -> None:
    """The frame ends `keep` bytes after the 4-byte header: no id (or half of one), no error;
    the type and code are read as before."""
    frame = make(8 if make is icmp4 else 128, _echo(8))  # type: ignore[operator]
    header_end = len(frame) - 8
    cut = frame[: header_end + keep]
    r = decode_checked(cut, wire_len=len(frame))
    layer = "ICMP" if make is icmp4 else "ICMPv6"
    if keep < 2:
        assert _id_of(r) is None
        assert "identifier" not in _detail(frame, layer, len(cut))
    else:
        assert _id_of(r) == ECHO_ID
        assert _detail(frame, layer, len(cut))["identifier"] == ECHO_ID
    assert int(r["flags"]) & F_HAS_ICMP and not int(r["flags"]) & F_TRUNCATED
    assert int(r["error"]) == DecodeError.NONE


def test_a_cut_inside_the_icmp_header_is_truncated_without_an_id() -> None:
    frame = icmp4(8, _echo(8))
    r = decode_checked(frame[:36], wire_len=len(frame))  # 2 bytes of ICMP
    assert (int(r["error"]), int(r["flags"]) & F_HAS_ICMP, _id_of(r)) == (
        DecodeError.TRUNCATED, 0, None,
    )  # fmt: skip


def test_the_identifier_must_lie_inside_the_ip_payload() -> None:
    """An IPv4 total length that ends the ICMP message after its header: the bytes after it
    (Ethernet padding, say) are not an identifier."""
    packet = bytearray(fb.ipv4(dpkt.icmp.ICMP(type=8, data=_echo(8)), 1))
    packet[2:4] = struct.pack("!H", 20 + 4)
    packet[10:12] = b"\0\0"
    r = decode_checked(fb.ether(bytes(packet), 0x0800))
    assert (_id_of(r), int(r["error"]), int(r["icmp_type"])) == (None, 0, 8)
    r6 = bytearray(icmp6(128, _echo(128)))
    r6[14 + 4 : 14 + 6] = struct.pack("!H", 5)  # the payload length: header and one byte
    assert _id_of(decode_checked(bytes(r6))) is None


def test_no_port_reader_takes_the_identifier_for_a_port() -> None:
    """The packet messages, the binary columns, the `port` filters and the top ports see no
    port in an echo whose identifier equals the port asked for."""
    frames = [icmp4(8, _echo(8, ident=443)), icmp6(128, _echo(128, ident=443)), fb.tcp4(5000, 443)]
    records = decode_both(frames, LinkType.EN10MB)
    records["seq"] = np.arange(1, 4)
    for key, tcp in (("port", True), ("src_port", False), ("dst_port", True)):
        flt = parse_filters({key: 443})
        assert isinstance(flt, PacketFilter)
        assert flt.mask(records).tolist() == [False, False, tcp], key
    data = [json.loads(m)["data"] for m in PacketEncoder().encode(records)]
    assert [(d["src_port"], d["dst_port"]) for d in data] == [(None, None)] * 2 + [(5000, 443)]
    columns = arrays_of(decode_columns(encode_columns(records)))
    assert columns["src_port"].tolist() == [-1, -1, 5000]
    assert columns["dst_port"].tolist() == [-1, -1, 443]
    stats = StatsAccumulator(StatsConfig(), T0)
    stats.ingest(records, T0)
    top = stats.snapshot(T0 + 2 * NS).top_ports
    assert [(p.protocol, p.port, p.packets) for p in top] == [("TCP", 443, 1)]
