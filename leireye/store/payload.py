"""One frame's transport header and payload, for Follow Stream: `transport_payload`.

The walk goes link -> VLAN tags -> IPv4 or IPv6 (extension headers) -> TCP or UDP, reading each
header with the dispatch-less dpkt classes of `leireye.decode.headers`; the TCP and UDP headers
are two fixed structs read here. A frame that is not TCP or UDP, a later IP fragment, or one dpkt
cannot read gives None: Follow Stream counts it as skipped.

A frame cut short (the ring keeps only its first `raw_bytes`) still yields what it holds: the
IP length says how long the payload was, and `missing` is how many of its bytes are not here.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Final

from leireye.decode import rules
from leireye.decode.headers import (
    DPKT_ESCAPES,
    SLL,
    SLL2,
    Ethernet,
    ExtHeader,
    IPv4,
    IPv6,
    LoopFamily,
    NullFamily,
)
from leireye.record import LinkType

TCP: Final = 6
UDP: Final = 17
_PORTS: Final = struct.Struct("!HH")
_TCP: Final = struct.Struct("!HHIIBB")  # ports, seq, ack, data offset, flags (low 8 bits)


@dataclass(frozen=True, slots=True)
class Payload:
    """The transport of one frame. Addresses are `ipaddress`-style texts."""

    proto: int  # TCP or UDP
    src: str
    sport: int
    dst: str
    dport: int
    seq: int  # TCP sequence number (0 for UDP)
    flags: int  # TCP flags (TcpFlag bits; 0 for UDP)
    data: bytes  # the payload bytes present in the frame
    missing: int  # payload bytes the frame was cut before

    @property
    def endpoints(self) -> tuple[tuple[str, int], tuple[str, int]]:
        return (self.src, self.sport), (self.dst, self.dport)


def transport_payload(frame: bytes, linktype: int) -> Payload | None:
    """The TCP or UDP payload of one frame, or None (see the module docstring). Never raises."""
    try:
        return _link(bytes(frame), int(linktype))
    except DPKT_ESCAPES:
        return None


def _link(buf: bytes, linktype: int) -> Payload | None:
    if linktype == LinkType.EN10MB:
        return _ethertype(buf, 14, Ethernet(buf).type)
    if linktype == LinkType.LINUX_SLL:
        return _ethertype(buf, 16, SLL(buf).ethtype)
    if linktype == LinkType.LINUX_SLL2:
        return _ethertype(buf, 20, SLL2(buf).ethtype)
    if linktype in (LinkType.NULL, LinkType.LOOP):
        family = (NullFamily if linktype == LinkType.NULL else LoopFamily)(buf).family
        if linktype == LinkType.NULL and family > 0xFFFF:
            family = int.from_bytes(family.to_bytes(4, "little"), "big")
        if family == 2:
            return _ipv4(buf[4:])
        return _ipv6(buf[4:]) if family in rules.IPV6_FAMILIES else None
    if linktype in (LinkType.RAW, LinkType.RAW_OLD, LinkType.IPV4, LinkType.IPV6):
        version = buf[0] >> 4 if buf else 0
        return _ipv4(buf) if version == 4 else _ipv6(buf) if version == 6 else None
    return None


def _ethertype(buf: bytes, off: int, ethertype: int) -> Payload | None:
    for _ in range(rules.MAX_VLAN_TAGS):
        if ethertype not in rules.VLAN_TYPES:
            break
        (ethertype,) = struct.unpack_from("!H", buf, off + 2)
        off += 4
    if ethertype == rules.ETH_P_IP:
        return _ipv4(buf[off:])
    if ethertype == rules.ETH_P_IPV6:
        return _ipv6(buf[off:])
    return None


def _ipv4(buf: bytes) -> Payload | None:
    ip = IPv4(buf)
    if ip.offset != 0 or ip.mf:  # fragments are not reassembled
        return None
    header = ip.hl * 4
    declared = ip.len - header if ip.len else len(ip.data)
    return _transport(ip.p, _v4(ip.src), _v4(ip.dst), bytes(ip.data), declared)


def _ipv6(buf: bytes) -> Payload | None:
    ip = IPv6(buf)
    nh, at = ip.nxt, 40
    end = 40 + ip.plen if ip.plen else len(buf)
    for _ in range(rules.MAX_IPV6_EXT):
        if nh not in rules.IPV6_EXT:
            break
        if nh == rules.IPV6_EXT_FRAG:
            offset_flags = struct.unpack_from("!H", buf, at + 2)[0]
            if offset_flags & 0xFFF9:  # a later fragment, or more to come
                return None
            nh, at = buf[at], at + 8
            continue
        ext = ExtHeader(buf[at:])
        size = (ext.len + 2) * 4 if nh == rules.IPV6_EXT_AH else (ext.len + 1) * 8
        nh, at = ext.nxt, at + size
    return _transport(nh, _v6(ip.src), _v6(ip.dst), buf[at:end], end - at)


def _transport(proto: int, src: str, dst: str, seg: bytes, declared: int) -> Payload | None:
    if proto == TCP:
        sport, dport, seq, _ack, offset, flags = _TCP.unpack_from(seg)
        header = (offset >> 4) * 4
        if header < 20:
            return None
        data = seg[header:declared]
        missing = max(0, declared - max(header, len(seg)))
        return Payload(TCP, src, sport, dst, dport, seq, flags, data, missing)
    if proto == UDP:
        sport, dport = _PORTS.unpack_from(seg)
        data = seg[8:declared]
        missing = max(0, declared - max(8, len(seg)))
        return Payload(UDP, src, sport, dst, dport, 0, 0, data, missing)
    return None


def _v4(addr: bytes) -> str:
    return ".".join(str(b) for b in addr)


def _v6(addr: bytes) -> str:
    return str(ipaddress.IPv6Address(addr))
