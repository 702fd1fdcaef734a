"""Link layers: every link type, VLAN tags (stacked), LLC, MPLS. Each frame is decoded by both
paths, which must agree; the assertions then check the fast path's record."""

from __future__ import annotations

import base64
import struct

import pytest

from leireye.record import (
    F_HAS_ADDR,
    F_HAS_PORTS,
    F_MALFORMED,
    F_TRUNCATED,
    NO_VLAN,
    App,
    DecodeError,
    LinkType,
    Proto,
)
from tests.decode_compare import decode_both, decode_checked, record_info
from tests.records import ip_to_halves
from tests.traffic import frames as fb

HOSTILE_MPLS = base64.b64decode("AIgAAAAAAQAAAAAAiEcAAP///43/JA==")


one = decode_checked
info = record_info


def test_ethernet_ipv4_tcp_fills_every_field() -> None:
    frame = fb.ether(fb.ipv4(fb.tcp(54321, 9999, 0x12), 6, "192.0.2.1", "198.51.100.7"), 0x0800)
    r = decode_both([frame], LinkType.EN10MB, [len(frame) + 100])[0]
    assert (r["seq"], r["ts_ns"], r["wire_len"], r["cap_len"]) == (
        0,
        1,
        len(frame) + 100,
        len(frame),
    )
    assert (r["linktype"], r["ethertype"], r["vlan"], r["ip_version"]) == (1, 0x0800, NO_VLAN, 4)
    assert (int(r["src_hi"]), int(r["src_lo"])) == ip_to_halves("192.0.2.1")
    assert (int(r["dst_hi"]), int(r["dst_lo"])) == ip_to_halves("198.51.100.7")
    assert (r["ip_proto"], r["src_port"], r["dst_port"], r["tcp_flags"]) == (6, 54321, 9999, 0x12)
    assert (r["proto"], r["app"], r["error"]) == (Proto.TCP, App.NONE, DecodeError.NONE)
    assert r["flags"] == F_HAS_ADDR | F_HAS_PORTS
    assert info(r) == "54321 → 9999 [SYN, ACK]"


def test_single_vlan_tag() -> None:
    frame = fb.ether(fb.ipv4(fb.udp(40000, 9999, b"x" * 12), 17), 0x0800, tags=[(0x8100, 0x2064)])
    r = one(frame)
    assert (r["vlan"], r["ethertype"], r["proto"]) == (
        100,
        0x0800,
        Proto.UDP,
    )  # priority bits dropped
    assert info(r) == "40000 → 9999 len=12"


@pytest.mark.parametrize(
    "tags",
    [
        [(0x88A8, 10), (0x8100, 20)],
        [(0x9100, 10), (0x88A8, 20), (0x8100, 30)],
        [(0x8100, 10)] * 8,
    ],
)
def test_stacked_vlan_tags_keep_the_outermost_id(tags: list[tuple[int, int]]) -> None:
    frame = fb.ether(fb.ipv6(fb.udp(5353, 5353, b""), 17), 0x86DD, tags=tags)
    r = one(frame)
    assert (r["vlan"], r["ethertype"], r["ip_version"], r["app"]) == (10, 0x86DD, 6, App.MDNS)


def test_a_ninth_tag_is_left_as_the_ethertype() -> None:
    r = one(fb.ether(bytes(40), 0x8100, tags=[(0x8100, 7)] * 8))
    assert (r["vlan"], r["ethertype"], r["error"], info(r)) == (7, 0x8100, 0, "802.1Q")


def test_truncated_vlan_tag() -> None:
    r = one(fb.ether(b"\x00\x05", 0x8100))
    assert (r["error"], r["flags"], r["ethertype"], r["vlan"]) == (
        DecodeError.TRUNCATED,
        F_TRUNCATED,
        0x8100,
        NO_VLAN,
    )
    assert info(r) == "802.1Q [truncated]"


def test_llc_and_stp_frames() -> None:
    stp = fb.DST_MAC + fb.SRC_MAC + struct.pack("!H", 38) + b"\x42\x42\x03" + bytes(35)
    llc = fb.DST_MAC + fb.SRC_MAC + struct.pack("!H", 20) + b"\xaa\xaa\x03" + bytes(17)
    assert (info(one(stp)), one(stp)["ethertype"], one(stp)["proto"]) == ("STP", 0, Proto.OTHER)
    assert info(one(llc)) == "LLC"


def test_other_ethertypes_are_named() -> None:
    assert info(one(fb.ether(bytes(46), 0x88CC))) == "LLDP"
    assert info(one(fb.ether(bytes(46), 0x1234))) == "ethertype 0x1234"


@pytest.mark.parametrize("size", [0, 1, 13])
def test_short_ethernet_frame(size: int) -> None:
    r = one(bytes(range(size)))
    assert (r["error"], r["flags"], info(r)) == (
        DecodeError.TRUNCATED,
        F_TRUNCATED,
        "Ethernet [truncated]",
    )


def test_linux_cooked_v1_and_v2() -> None:
    packet = fb.ipv4(fb.tcp(443, 50000, 0x10), 6)
    for linktype, frame in (
        (LinkType.LINUX_SLL, fb.sll(packet, 0x0800)),
        (LinkType.LINUX_SLL2, fb.sll2(packet, 0x0800)),
    ):
        r = one(frame, linktype)
        assert (r["linktype"], r["ethertype"], r["proto"], r["app"]) == (
            linktype,
            0x0800,
            Proto.TCP,
            App.NONE,
        )
        assert info(r) == "443 → 50000 [ACK]"
    assert info(one(b"\0" * 15, LinkType.LINUX_SLL)) == "SLL [truncated]"
    assert info(one(b"\0" * 19, LinkType.LINUX_SLL2)) == "SLL2 [truncated]"


def test_cooked_capture_with_a_vlan_tag() -> None:
    inner = struct.pack("!HH", 42, 0x0806) + bytes(28)
    r = one(fb.sll(inner, 0x8100), LinkType.LINUX_SLL)
    assert (r["vlan"], r["ethertype"], r["proto"]) == (42, 0x0806, Proto.ARP)


@pytest.mark.parametrize(
    ("linktype", "header"),
    [
        (LinkType.NULL, (2).to_bytes(4, "little")),
        (LinkType.NULL, (2).to_bytes(4, "big")),  # written on a big-endian host
        (LinkType.LOOP, (2).to_bytes(4, "big")),
    ],
)
def test_loopback_ipv4(linktype: int, header: bytes) -> None:
    r = one(header + fb.ipv4(fb.udp(1111, 2222, b"hi"), 17), linktype)
    assert (r["ethertype"], r["ip_version"], info(r)) == (0x0800, 4, "1111 → 2222 len=2")


@pytest.mark.parametrize("family", [10, 24, 28, 30])
def test_loopback_ipv6_families(family: int) -> None:
    r = one(fb.null(fb.ipv6(fb.udp(1, 2), 17), family), LinkType.NULL)
    assert (r["ethertype"], r["ip_version"], r["proto"]) == (0x86DD, 6, Proto.UDP)


def test_loopback_other_family_and_truncation() -> None:
    assert info(one((7).to_bytes(4, "big") + bytes(20), LinkType.LOOP)) == "loopback family 7"
    assert info(one(b"\2\0\0", LinkType.NULL)) == "Loopback [truncated]"


@pytest.mark.parametrize("linktype", [LinkType.RAW, LinkType.RAW_OLD])
def test_raw_ip(linktype: int) -> None:
    assert one(fb.ipv4(fb.tcp(1, 22), 6), linktype)["dst_port"] == 22
    assert one(fb.ipv6(fb.tcp(1, 22), 6), linktype)["ethertype"] == 0x86DD
    bad = one(b"\x50" + bytes(30), linktype)
    assert (bad["error"], bad["flags"], bad["ethertype"], info(bad)) == (
        DecodeError.MALFORMED,
        F_MALFORMED,
        0,
        "IP [malformed]",
    )
    assert info(one(b"", linktype)) == "IP [truncated]"


def test_ipv4_and_ipv6_link_types() -> None:
    assert one(fb.ipv4(fb.udp(1, 53), 17), LinkType.IPV4)["ethertype"] == 0x0800
    assert one(fb.ipv6(fb.udp(1, 53), 17), LinkType.IPV6)["ethertype"] == 0x86DD
    assert info(one(fb.ipv6(fb.udp(1, 53), 17), LinkType.IPV4)) == "IPv4 [malformed]"


def test_unsupported_link_type() -> None:
    r = one(bytes(60), 147)
    assert (r["error"], r["flags"], r["linktype"], info(r)) == (
        DecodeError.UNSUPPORTED_LINKTYPE,
        0,
        147,
        "link type 147",
    )


def test_mpls_label_stack_with_ipv4_inside() -> None:
    labels = struct.pack("!II", 100 << 12 | 64, 200 << 12 | 1 << 8 | 64)
    r = one(fb.ether(labels + fb.ipv4(fb.tcp(5000, 80, 0x02), 6), 0x8847))
    assert (r["ethertype"], r["ip_version"], r["app"], info(r)) == (
        0x8847,
        4,
        App.NONE,
        "5000 → 80 [SYN]",
    )


def test_mpls_without_bottom_of_stack_or_ip() -> None:
    assert info(one(fb.ether(struct.pack("!I", 64) * 8 + bytes(20), 0x8847))) == "MPLS"
    assert info(one(fb.ether(struct.pack("!I", 1 << 8) + b"\xff" * 20, 0x8847))) == "MPLS"
    assert info(one(fb.ether(struct.pack("!I", 64) * 3, 0x8847))) == "MPLS [truncated]"


def test_hostile_mpls_frame_from_the_field_notes() -> None:
    r = one(HOSTILE_MPLS)
    assert (r["ethertype"], r["error"], info(r)) == (0x8847, DecodeError.NONE, "MPLS")
