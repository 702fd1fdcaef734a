"""Small dpkt-based frame builders, for tests and examples (not used by the decoder)."""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence

import dpkt
import dpkt.ip
import dpkt.ip6
import dpkt.tcp
import dpkt.udp

SRC_MAC = bytes.fromhex("020000000001")
DST_MAC = bytes.fromhex("020000000002")


def ether(payload: bytes, ethertype: int, tags: Sequence[tuple[int, int]] = ()) -> bytes:
    """An Ethernet frame; `tags` are (TPID, VLAN id) pairs, outermost first."""
    head = DST_MAC + SRC_MAC
    for tpid, vid in tags:
        head += struct.pack("!HH", tpid, vid)
    return head + struct.pack("!H", ethertype) + payload


def ipv4(
    payload: dpkt.Packet | bytes,
    proto: int,
    src: str = "10.0.0.1",
    dst: str = "10.0.0.2",
    **fields: int,
) -> bytes:
    ip = dpkt.ip.IP(
        src=ipaddress.IPv4Address(src).packed,
        dst=ipaddress.IPv4Address(dst).packed,
        p=proto,
        data=payload,
        **fields,
    )
    return bytes(ip)


def ipv6(
    payload: dpkt.Packet | bytes,
    nxt: int,
    src: str = "fd00::1",
    dst: str = "fd00::2",
    ext: bytes = b"",
) -> bytes:
    """An IPv6 packet; `ext` (extension headers, already chained) goes before the payload and `nxt`
    is then the first extension header's number."""
    body = bytes(payload)
    ip6 = dpkt.ip6.IP6(
        src=ipaddress.IPv6Address(src).packed,
        dst=ipaddress.IPv6Address(dst).packed,
        nxt=nxt,
        hlim=64,
    )
    ip6.data = payload if not ext else ext + body
    ip6.plen = len(ext) + len(body)
    return bytes(ip6)


def tcp(
    sport: int, dport: int, flags: int = dpkt.tcp.TH_ACK, payload: bytes = b"", opts: bytes = b""
) -> dpkt.tcp.TCP:
    seg = dpkt.tcp.TCP(
        sport=sport, dport=dport, seq=1000, ack=2000, flags=flags, win=512, data=payload
    )
    if opts:
        seg.opts = opts
        seg.off = 5 + len(opts) // 4
    return seg


def udp(sport: int, dport: int, payload: bytes = b"") -> dpkt.udp.UDP:
    return dpkt.udp.UDP(sport=sport, dport=dport, ulen=8 + len(payload), data=payload)


def tcp4(sport: int, dport: int, flags: int = dpkt.tcp.TH_ACK, payload: bytes = b"") -> bytes:
    """Ethernet / IPv4 / TCP."""
    return ether(ipv4(tcp(sport, dport, flags, payload), 6), 0x0800)


def udp4(sport: int, dport: int, payload: bytes = b"") -> bytes:
    """Ethernet / IPv4 / UDP."""
    return ether(ipv4(udp(sport, dport, payload), 17), 0x0800)


def sll(packet: bytes, protocol: int) -> bytes:
    return struct.pack("!HHH8sH", 0, 1, 6, SRC_MAC + b"\0\0", protocol) + packet


def sll2(packet: bytes, protocol: int) -> bytes:
    return struct.pack("!HHiHBB8s", protocol, 0, 1, 1, 0, 6, SRC_MAC + b"\0\0") + packet


def null(packet: bytes, family: int, byteorder: str = "little") -> bytes:
    return family.to_bytes(4, byteorder) + packet  # type: ignore[arg-type]
