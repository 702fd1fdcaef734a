"""One frame's transport header and payload, for Follow Stream: `transport_payload`.

The walk goes link -> VLAN tags -> IPv4 or IPv6 (extension headers) -> TCP or UDP, with the
decoder's constants (`leireye.decode.rules`). The headers of nearly every frame (Ethernet, VLAN,
IPv4, IPv6, TCP, UDP) are fixed structs read here: dpkt's classes cost ~10 us a header, which
made a 16 MiB stream take seconds. The rarer ones (SLL, SLL2, loopback, IPv6 extension headers)
use the dispatch-less dpkt classes of `leireye.decode.headers`. A frame that is not TCP or UDP,
an IP fragment, or one too short for its headers gives None: Follow Stream counts it skipped.

A frame cut short (the ring keeps only its first `raw_bytes`) still yields what it holds: the
IP length says how long the payload was, and `missing` is how many of its bytes are not here.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Final

from leireye.decode import rules
from leireye.decode.headers import DPKT_ESCAPES, SLL, SLL2, ExtHeader, LoopFamily, NullFamily
from leireye.record import LinkType

TCP: Final = 6
UDP: Final = 17
_U16: Final = struct.Struct("!H")
_IPV4: Final = struct.Struct("!B1xH2xH1xB")  # version/IHL, total length, flags/offset, proto
_IPV6: Final = struct.Struct("!BxxxHB")  # version, payload length, next header
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
    except (*DPKT_ESCAPES, OSError):  # OSError: inet_ntoa/inet_ntop of a cut address
        return None


def _link(buf: bytes, linktype: int) -> Payload | None:
    if linktype == LinkType.EN10MB:
        return _ethertype(buf, 14, _U16.unpack_from(buf, 12)[0])
    if linktype == LinkType.LINUX_SLL:
        return _ethertype(buf, 16, SLL(buf).ethtype)
    if linktype == LinkType.LINUX_SLL2:
        return _ethertype(buf, 20, SLL2(buf).ethtype)
    if linktype in (LinkType.NULL, LinkType.LOOP):
        family = (NullFamily if linktype == LinkType.NULL else LoopFamily)(buf).family
        if linktype == LinkType.NULL and family > 0xFFFF:
            family = int.from_bytes(family.to_bytes(4, "little"), "big")
        if family == 2:
            return _ipv4(buf, 4)
        return _ipv6(buf, 4) if family in rules.IPV6_FAMILIES else None
    if linktype in (LinkType.RAW, LinkType.RAW_OLD, LinkType.IPV4, LinkType.IPV6):
        version = buf[0] >> 4 if buf else 0
        return _ipv4(buf, 0) if version == 4 else _ipv6(buf, 0) if version == 6 else None
    return None


def _ethertype(buf: bytes, off: int, ethertype: int) -> Payload | None:
    for _ in range(rules.MAX_VLAN_TAGS):
        if ethertype not in rules.VLAN_TYPES:
            break
        (ethertype,) = _U16.unpack_from(buf, off + 2)
        off += 4
    if ethertype == rules.ETH_P_IP:
        return _ipv4(buf, off)
    if ethertype == rules.ETH_P_IPV6:
        return _ipv6(buf, off)
    return None


def _ipv4(buf: bytes, off: int) -> Payload | None:
    first, total, fragment, proto = _IPV4.unpack_from(buf, off)
    header = (first & 15) * 4
    if first >> 4 != 4 or header < 20 or fragment & 0x3FFF:  # fragments are not reassembled
        return None
    if total == 0:  # segmentation offload: the length is the frame's
        total = len(buf) - off
    if total < header:
        return None
    src = socket.inet_ntoa(buf[off + 12 : off + 16])
    dst = socket.inet_ntoa(buf[off + 16 : off + 20])
    start = off + header
    return _transport(proto, src, dst, buf, start, off + total)


def _ipv6(buf: bytes, off: int) -> Payload | None:
    first, plen, nh = _IPV6.unpack_from(buf, off)
    if first >> 4 != 6:
        return None
    at = off + 40
    end = at + plen if plen else len(buf)
    for _ in range(rules.MAX_IPV6_EXT):
        if nh not in rules.IPV6_EXT:
            break
        if nh == rules.IPV6_EXT_FRAG:
            if _U16.unpack_from(buf, at + 2)[0] & 0xFFF9:  # a later fragment, or more to come
                return None
            nh, at = buf[at], at + 8
            continue
        ext = ExtHeader(buf[at : at + 2])
        size = (ext.len + 2) * 4 if nh == rules.IPV6_EXT_AH else (ext.len + 1) * 8
        nh, at = ext.nxt, at + size
    src = socket.inet_ntop(socket.AF_INET6, buf[off + 8 : off + 24])
    dst = socket.inet_ntop(socket.AF_INET6, buf[off + 24 : off + 40])
    return _transport(nh, src, dst, buf, at, end)


def _transport(proto: int, src: str, dst: str, buf: bytes, start: int, end: int) -> Payload | None:
    """The transport header at `start`; the IP length says the payload ends at `end` (the
    frame may end before)."""
    if proto == TCP:
        sport, dport, seq, _ack, offset, flags = _TCP.unpack_from(buf, start)
        header = (offset >> 4) * 4
        if header < 20 or start + header > end:
            return None
        data = buf[start + header : end]
        missing = max(0, end - max(start + header, len(buf)))
        return Payload(TCP, src, sport, dst, dport, seq, flags, data, missing)
    if proto == UDP:
        sport, dport = _PORTS.unpack_from(buf, start)
        data = buf[start + 8 : end]
        missing = max(0, end - max(start + 8, len(buf)))
        return Payload(UDP, src, sport, dst, dport, 0, 0, data, missing)
    return None
