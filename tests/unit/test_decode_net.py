"""Network and transport layers: IPv4 lengths and fragments, IPv6 extension headers, ARP, ICMP,
TCP/UDP header checks. Both paths decode every frame and must agree."""

from __future__ import annotations

import struct

import dpkt
import pytest

from leireye.record import (
    F_HAS_ADDR,
    F_HAS_ICMP,
    F_HAS_ICMP_ID,
    F_HAS_PORTS,
    F_MALFORMED,
    F_TRUNCATED,
    App,
    DecodeError,
    Proto,
)
from tests.decode_compare import decode_checked, record_info
from tests.records import ip_to_halves
from tests.traffic import frames as fb

one = decode_checked
info = record_info


def eth4(packet: bytes) -> bytes:
    return fb.ether(packet, 0x0800)


def eth6(packet: bytes) -> bytes:
    return fb.ether(packet, 0x86DD)


def test_ipv4_options_are_skipped() -> None:
    ip = dpkt.ip.IP(
        src=b"\x0a\0\0\1", dst=b"\x0a\0\0\2", p=6, opts=b"\x94\x04\x00\x00", data=fb.tcp(1, 22)
    )
    ip.hl = 6
    r = one(eth4(bytes(ip)))
    assert (r["app"], r["src_port"], info(r)) == (App.NONE, 1, "1 → 22 [ACK]")


def test_ipv4_bad_header_length_or_version_records_nothing() -> None:
    packet = bytearray(fb.ipv4(fb.tcp(1, 2), 6))
    for first in (0x44, 0x65):
        packet[0] = first
        r = one(eth4(bytes(packet)))
        assert (r["error"], r["flags"], r["ip_version"], r["src_lo"]) == (
            DecodeError.MALFORMED,
            F_MALFORMED,
            0,
            0,
        )
        assert info(r) == "IPv4 [malformed]"


def test_ipv4_total_length_below_header_keeps_the_addresses() -> None:
    packet = bytearray(fb.ipv4(fb.tcp(1, 2), 6))
    packet[2:4] = struct.pack("!H", 19)
    r = one(eth4(bytes(packet)))
    assert (r["error"], r["flags"], r["ip_version"]) == (
        DecodeError.MALFORMED,
        F_MALFORMED | F_HAS_ADDR,
        4,
    )


def test_ipv4_total_length_zero_runs_to_the_frame_end() -> None:
    packet = bytearray(fb.ipv4(fb.udp(1000, 9999, b"abc"), 17))
    packet[2:4] = b"\0\0"
    assert info(one(eth4(bytes(packet)))) == "1000 → 9999 len=3"


def test_ethernet_padding_is_not_payload() -> None:
    frame = eth4(fb.ipv4(fb.tcp(50000, 9999), 6))
    r = one(frame + bytes(60 - len(frame)))
    assert info(r) == "50000 → 9999 [ACK]"


def test_ipv4_options_cut_by_the_frame() -> None:
    ip = dpkt.ip.IP(p=6, opts=bytes(8), data=b"")
    ip.hl = 7
    r = one(eth4(bytes(ip)[:24]))
    assert (r["error"], r["flags"], info(r)) == (
        DecodeError.TRUNCATED,
        F_TRUNCATED | F_HAS_ADDR,
        "IPv4 [truncated]",
    )


def test_ipv4_fragments() -> None:
    first = one(eth4(fb.ipv4(fb.udp(4000, 5300, bytes(100)), 17, mf=1)))
    assert (first["flags"], first["src_port"]) == (F_HAS_ADDR | F_HAS_PORTS, 4000)
    later = one(eth4(fb.ipv4(bytes(100), 17, offset=185)))
    assert (later["flags"], later["proto"], later["ip_proto"]) == (F_HAS_ADDR, Proto.UDP, 17)
    assert info(later) == "IPv4 fragment UDP off=1480"


def test_tcp_header_problems() -> None:
    ok = fb.ipv4(fb.tcp(1234, 9999), 6)
    cut = one(eth4(ok[:30]))
    assert (cut["error"], cut["flags"], info(cut)) == (
        DecodeError.TRUNCATED,
        F_TRUNCATED | F_HAS_ADDR,
        "TCP [truncated]",
    )
    short = bytearray(ok)
    short[2:4] = struct.pack("!H", 30)  # the IP length ends inside the TCP header
    r = one(eth4(bytes(short)))
    assert (r["error"], info(r)) == (DecodeError.MALFORMED, "TCP [malformed]")
    bad_offset = bytearray(ok)
    bad_offset[32] = 0x40
    r = one(eth4(bytes(bad_offset)))
    assert (r["error"], r["src_port"], r["flags"] & F_HAS_PORTS) == (DecodeError.MALFORMED, 0, 0)
    options_cut = one(eth4(fb.ipv4(fb.tcp(1234, 9999, 0x02, opts=bytes(12)), 6))[:60])
    assert (options_cut["error"], options_cut["src_port"], options_cut["tcp_flags"]) == (
        DecodeError.TRUNCATED,
        1234,
        2,
    )


def test_udp_and_sctp_headers() -> None:
    assert info(one(eth4(fb.ipv4(fb.udp(1, 2), 17))[:38])) == "UDP [truncated]"
    sctp = struct.pack("!HHII", 5000, 5001, 1, 0) + bytes(16)
    r = one(eth4(fb.ipv4(sctp, 132)))
    assert (r["proto"], r["src_port"], r["flags"], info(r)) == (
        Proto.SCTP,
        5000,
        F_HAS_ADDR | F_HAS_PORTS,
        "SCTP 5000 → 5001",
    )


def test_other_ip_protocols() -> None:
    assert (
        info(one(eth4(fb.ipv4(bytes(20), 47)))),
        one(eth4(fb.ipv4(bytes(20), 47)))["proto"],
    ) == ("IPv4 GRE", Proto.IPV4)
    r = one(eth6(fb.ipv6(bytes(20), 253)))
    assert (r["proto"], r["ip_proto"], info(r)) == (Proto.IPV6, 253, "IPv6 proto 253")
    assert info(one(eth6(fb.ipv6(bytes(20), 50)))) == "IPv6 ESP"


def opts_header(nxt: int, units: int = 0) -> bytes:
    return bytes([nxt, units]) + bytes(6 + 8 * units)


def test_ipv6_extension_headers_are_walked() -> None:
    ext = opts_header(43) + bytes([60, 0, 0, 0]) + bytes(4) + opts_header(6, units=1)
    r = one(eth6(fb.ipv6(fb.tcp(40000, 443), 0, ext=ext)))
    assert (r["ip_proto"], r["proto"], r["app"], r["dst_port"]) == (6, Proto.TCP, App.NONE, 443)
    assert (int(r["src_hi"]), int(r["src_lo"])) == ip_to_halves("fd00::1")


def test_ipv6_ah_and_first_fragment() -> None:
    ah = bytes([44, 1, 0, 0]) + bytes(8)  # (1 + 2) * 4 = 12 bytes
    frag = bytes([17, 0, 0, 1]) + b"\x12\x34\x56\x78"  # offset 0, more fragments
    r = one(eth6(fb.ipv6(fb.udp(5000, 53), 51, ext=ah + frag)))
    assert (r["ip_proto"], r["src_port"], r["app"]) == (17, 5000, App.DNS)


def test_ipv6_later_fragment_has_no_ports() -> None:
    frag = bytes([17, 0]) + struct.pack("!H", 1448) + b"\x12\x34\x56\x78"
    r = one(eth6(fb.ipv6(bytes(40), 44, ext=frag)))
    assert (r["ip_proto"], r["proto"], r["flags"], info(r)) == (
        17,
        Proto.UDP,
        F_HAS_ADDR,
        "IPv6 fragment UDP off=1448",
    )


def test_too_many_or_cut_extension_headers() -> None:
    nine = b"".join(opts_header(60) for _ in range(9))
    assert info(one(eth6(fb.ipv6(b"", 60, ext=nine)))) == "IPv6 [malformed]"
    eight = b"".join(opts_header(60) for _ in range(7)) + opts_header(59)
    assert info(one(eth6(fb.ipv6(b"", 60, ext=eight)))) == "IPv6 no next header"
    cut = one(eth6(fb.ipv6(b"", 0, ext=opts_header(6, units=2)))[:70])
    assert (cut["error"], cut["ip_proto"], info(cut)) == (
        DecodeError.TRUNCATED,
        0,
        "IPv6 [truncated]",
    )
    lying = bytearray(fb.ipv6(b"", 0, ext=opts_header(6, units=2)))
    lying[4:6] = struct.pack("!H", 8)  # payload length says 8, the header needs 24
    assert one(eth6(bytes(lying)))["error"] == DecodeError.MALFORMED


def test_arp_request_and_reply() -> None:
    request = dpkt.arp.ARP(op=1, sha=fb.SRC_MAC, spa=b"\x0a\0\0\1", tha=bytes(6), tpa=b"\x0a\0\0\2")
    r = one(fb.ether(bytes(request), 0x0806))
    assert (r["proto"], r["flags"], r["ip_version"], info(r)) == (
        Proto.ARP,
        F_HAS_ADDR,
        0,
        "ARP who-has 10.0.0.2 tell 10.0.0.1",
    )
    assert (int(r["src_lo"]), int(r["dst_lo"])) == (
        ip_to_halves("10.0.0.1")[1],
        ip_to_halves("10.0.0.2")[1],
    )
    reply = dpkt.arp.ARP(
        op=2,
        sha=bytes.fromhex("aabbccddeeff"),
        spa=b"\x0a\0\0\2",
        tha=fb.SRC_MAC,
        tpa=b"\x0a\0\0\1",
    )
    assert info(one(fb.ether(bytes(reply), 0x0806))) == "ARP 10.0.0.2 is-at aa:bb:cc:dd:ee:ff"


def test_arp_other_layouts_and_truncation() -> None:
    odd = bytes(dpkt.arp.ARP(op=1, hln=8))
    r = one(fb.ether(odd, 0x0806))
    assert (r["flags"], info(r)) == (0, "ARP op 1")
    assert info(one(fb.ether(bytes(dpkt.arp.ARP(op=3)), 0x0806))) == "ARP op 3"
    assert info(one(fb.ether(odd[:20], 0x0806))) == "ARP [truncated]"


@pytest.mark.parametrize(
    ("icmp_type", "code", "text"),
    [
        (8, 0, "ICMP echo request"),
        (0, 0, "ICMP echo reply"),
        (3, 3, "ICMP destination unreachable (port unreachable)"),
        (11, 0, "ICMP time exceeded (TTL exceeded in transit)"),
        (8, 5, "ICMP echo request code 5"),
        (42, 1, "ICMP type 42 code 1"),
    ],
)
def test_icmp(icmp_type: int, code: int, text: str) -> None:
    r = one(eth4(fb.ipv4(dpkt.icmp.ICMP(type=icmp_type, code=code, data=bytes(8)), 1)))
    echo = F_HAS_ICMP_ID if icmp_type in (0, 8) else 0  # see test_decode_icmp
    assert (r["proto"], r["icmp_type"], r["icmp_code"], r["flags"], info(r)) == (
        Proto.ICMP, icmp_type, code, F_HAS_ADDR | F_HAS_ICMP | echo, text,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("icmp_type", "text"),
    [
        (135, "ICMPv6 neighbor solicitation"),
        (136, "ICMPv6 neighbor advertisement"),
        (128, "ICMPv6 echo request"),
        (1, "ICMPv6 destination unreachable (no route)"),
        (134, "ICMPv6 router advertisement"),
    ],
)
def test_icmpv6(icmp_type: int, text: str) -> None:
    r = one(eth6(fb.ipv6(dpkt.icmp6.ICMP6(type=icmp_type, data=bytes(20)), 58)))
    assert (r["proto"], r["icmp_type"], info(r)) == (Proto.ICMPV6, icmp_type, text)


def test_icmp_truncated() -> None:
    r = one(eth4(fb.ipv4(dpkt.icmp.ICMP(type=8, data=b""), 1))[:36])
    assert (r["error"], r["flags"] & F_HAS_ICMP, info(r)) == (
        DecodeError.TRUNCATED,
        0,
        "ICMP [truncated]",
    )
