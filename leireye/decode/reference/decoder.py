"""The reference decoder: one frame, one dpkt object per layer, the rules of `rules` read plainly.

It is the "obviously correct" path the fast one is tested against, so it is written for reading,
not for speed. Each header is unpacked by its dpkt class; the walk from layer to layer is ours,
because dpkt's own automatic dispatch does not follow the rules: its Ethernet peels at most two
VLAN tags and guesses MPLS payloads (and raises IndexError on a short label stack), its IPv6
checks only the first extension header for a fragment (and raises AttributeError after ESP), its
ICMP decodes quoted packets with anything that may raise in them. So the classes used here are
dpkt's with the payload switch emptied, or dpkt's header tables with nothing after them.

dpkt's application parsers (DNS, HTTP, TLS, DHCP, NTP) are asked first; where they refuse a
payload, with their contract's errors or any of the stray ones they are known to let escape, the
hand-written dissector reads it instead (see `dissect`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dpkt
import dpkt.arp
import dpkt.ethernet
import dpkt.ip6
import dpkt.sctp
import dpkt.tcp
import dpkt.udp
import numpy as np
import numpy.typing as npt

from leireye.decode import rules
from leireye.decode.batch import DecodedBatch, count_errors
from leireye.decode.headers import (
    ICMP,
    ICMP6,
    SLL,
    SLL2,
    Ethernet,
    ExtHeader,
    IPv4,
    IPv6,
    LoopFamily,
    NullFamily,
)
from leireye.decode.reference.app import tcp_app, udp_app
from leireye.decode.reference.record import Record, fits, header, mapped
from leireye.record import (
    F_HAS_ADDR,
    F_HAS_ICMP,
    F_HAS_ICMP_ID,
    F_HAS_PORTS,
    RECORD_DTYPE,
    DecodeError,
    LinkType,
    Proto,
)


def _link(r: Record, frame: bytes, linktype: int) -> None:
    if linktype == LinkType.EN10MB:
        eth = header(r, Ethernet, frame, 0, "Ethernet")
        if eth is not None:
            _ethertype(r, eth.data, 14, eth.type)
    elif linktype == LinkType.LINUX_SLL:
        sll = header(r, SLL, frame, 0, "SLL")
        if sll is not None:
            _ethertype(r, sll.data, 16, sll.ethtype)
    elif linktype == LinkType.LINUX_SLL2:
        sll2 = header(r, SLL2, frame, 0, "SLL2")
        if sll2 is not None:
            _ethertype(r, sll2.data, 20, sll2.ethtype)
    elif linktype in (LinkType.NULL, LinkType.LOOP):
        cls: Any = NullFamily if linktype == LinkType.NULL else LoopFamily
        head = header(r, cls, frame, 0, "Loopback")
        if head is not None:
            family = head.family
            if linktype == LinkType.NULL and family > 0xFFFF:
                family = int.from_bytes(family.to_bytes(4, "little"), "big")
            if family == 2:
                _ipv4(r, head.data, 4, implied=True)
            elif family in rules.IPV6_FAMILIES:
                _ipv6(r, head.data, 4, implied=True)
            else:
                r.info = rules.family_text(family)
    elif linktype in (LinkType.RAW, LinkType.RAW_OLD):
        version = frame[0] >> 4 if frame else None
        if version == 4:
            _ipv4(r, frame, 0, implied=True)
        elif version == 6:
            _ipv6(r, frame, 0, implied=True)
        else:
            r.fail(DecodeError.TRUNCATED if version is None else DecodeError.MALFORMED, "IP")
    elif linktype == LinkType.IPV4:
        _ipv4(r, frame, 0, implied=True)
    elif linktype == LinkType.IPV6:
        _ipv6(r, frame, 0, implied=True)
    else:
        r.error = DecodeError.UNSUPPORTED_LINKTYPE
        r.info = rules.linktype_text(linktype)


def _ethertype(r: Record, buf: bytes, at: int, ethertype: int) -> None:
    tags = 0
    while ethertype in rules.VLAN_TYPES and tags < rules.MAX_VLAN_TAGS:
        tag = header(r, dpkt.ethernet.VLANtag8021Q, buf, at, "802.1Q")
        if tag is None:
            r.ethertype = ethertype
            return
        if tags == 0:
            r.vlan = tag.id
        ethertype, buf, at, tags = tag.type, buf[4:], at + 4, tags + 1
    if ethertype <= rules.LLC_MAX:
        r.info = rules.llc_text(buf[:2] == b"\x42\x42")
        return
    r.ethertype = ethertype
    if ethertype == rules.ETH_P_IP:
        _ipv4(r, buf, at)
    elif ethertype == rules.ETH_P_IPV6:
        _ipv6(r, buf, at)
    elif ethertype == rules.ETH_P_ARP:
        _arp(r, buf, at)
    elif ethertype in rules.MPLS_TYPES:
        _mpls(r, buf, at)
    else:
        r.info = rules.ethertype_text(ethertype)


def _mpls(r: Record, buf: bytes, at: int) -> None:
    for _ in range(rules.MAX_MPLS_LABELS):
        label = header(r, dpkt.ethernet.MPLSlabel, buf, at, "MPLS")
        if label is None:
            return
        buf, at = buf[4:], at + 4
        if label.s:
            break
    else:
        r.info = "MPLS"
        return
    if not buf:
        r.fail(DecodeError.TRUNCATED, "MPLS")
        return
    version = buf[0] >> 4
    if version == 4:
        _ipv4(r, buf, at)
    elif version == 6:
        _ipv6(r, buf, at)
    else:
        r.info = "MPLS"


def _arp(r: Record, buf: bytes, at: int) -> None:
    r.proto = Proto.ARP
    arp = header(r, dpkt.arp.ARP, buf, at, "ARP")
    if arp is None:
        return
    if arp.pro == rules.ETH_P_IP and arp.hln == 6 and arp.pln == 4:
        r.flags |= F_HAS_ADDR
        r.src, r.dst = mapped(arp.spa), mapped(arp.tpa)
        spa: int | None = int.from_bytes(arp.spa, "big")
    else:
        spa = None
    tpa, sha = int.from_bytes(arp.tpa, "big"), int.from_bytes(arp.sha, "big")
    r.info = rules.arp_text(arp.op, spa, tpa, sha)


def _ipv4(r: Record, buf: bytes, at: int, implied: bool = False) -> None:
    if implied:
        r.ethertype = rules.ETH_P_IP
    ip = header(r, IPv4, buf, at, "IPv4")
    if ip is None:
        return
    if ip.v != 4:
        r.fail(DecodeError.MALFORMED, "IPv4")
        return
    r.ip_version, r.ip_proto, r.flags = 4, ip.p, r.flags | F_HAS_ADDR
    r.src, r.dst, r.proto = mapped(ip.src), mapped(ip.dst), rules.ip_proto_of(4, ip.p)
    header_len = ip.hl * 4
    if not fits(r, buf, at, header_len, "IPv4"):
        return
    if ip.len and ip.len < header_len:
        r.fail(DecodeError.MALFORMED, "IPv4")
        return
    declared_end = at + ip.len if ip.len else r.cap_len
    if ip.offset:
        r.info = rules.fragment_text(4, ip.p, ip.offset * 8)
        return
    _transport(r, ip.data, at + header_len, declared_end)


def _ipv6(r: Record, buf: bytes, at: int, implied: bool = False) -> None:
    if implied:
        r.ethertype = rules.ETH_P_IPV6
    ip6 = header(r, IPv6, buf, at, "IPv6")
    if ip6 is None:
        return
    if ip6.v != 6:
        r.fail(DecodeError.MALFORMED, "IPv6")
        return
    r.ip_version, r.flags = 6, r.flags | F_HAS_ADDR
    r.src = (int.from_bytes(ip6.src[:8], "big"), int.from_bytes(ip6.src[8:], "big"))
    r.dst = (int.from_bytes(ip6.dst[:8], "big"), int.from_bytes(ip6.dst[8:], "big"))
    payload = ip6.data[: ip6.plen] if ip6.plen else ip6.data
    declared_end = at + 40 + ip6.plen if ip6.plen else r.cap_len
    at += 40
    next_header = ip6.nxt
    for count in range(rules.MAX_IPV6_EXT + 1):
        r.ip_proto, r.proto = next_header, rules.ip_proto_of(6, next_header)
        if next_header not in rules.IPV6_EXT:
            break
        if count == rules.MAX_IPV6_EXT:
            r.fail(DecodeError.MALFORMED, "IPv6")
            return
        if next_header == rules.IPV6_EXT_FRAG:
            frag = header(r, dpkt.ip6.IP6FragmentHeader, payload, at, "IPv6")
            if frag is None:
                return
            next_header, payload, at = frag.nxt, payload[8:], at + 8
            if frag.frag_off:
                r.ip_proto, r.proto = next_header, rules.ip_proto_of(6, next_header)
                r.info = rules.fragment_text(6, next_header, frag.frag_off * 8)
                return
        else:
            ext = header(r, ExtHeader, payload, at, "IPv6")
            if ext is None:
                return
            size = (ext.len + 2) * 4 if next_header == rules.IPV6_EXT_AH else (ext.len + 1) * 8
            if not fits(r, payload, at, size, "IPv6"):
                return
            next_header, payload, at = ext.nxt, payload[size:], at + size
    _transport(r, payload, at, declared_end)


def _transport(r: Record, buf: bytes, at: int, declared_end: int) -> None:
    proto = r.ip_proto
    cut = declared_end > r.cap_len
    if proto == 6:
        tcp = header(r, dpkt.tcp.TCP, buf, at, "TCP")
        if tcp is None:
            return
        r.sport, r.dport, r.tcp_flags = tcp.sport, tcp.dport, tcp.flags
        r.flags |= F_HAS_PORTS
        if fits(r, buf, at, tcp.off * 4, "TCP"):
            tcp_app(r, tcp.data, declared_end - at - tcp.off * 4, cut)
    elif proto == 17:
        udp = header(r, dpkt.udp.UDP, buf, at, "UDP")
        if udp is None:
            return
        r.sport, r.dport, r.flags = udp.sport, udp.dport, r.flags | F_HAS_PORTS
        udp_app(r, udp.data, declared_end - at - 8, cut)
    elif proto == 132:
        sctp = header(r, dpkt.sctp.SCTP, buf[:12], at, "SCTP")
        if sctp is not None:
            r.sport, r.dport, r.flags = sctp.sport, sctp.dport, r.flags | F_HAS_PORTS
            r.info = rules.sctp_text(sctp.sport, sctp.dport)
    elif proto in (1, 58):
        v6 = proto == 58
        icmp_cls: Any = ICMP6 if v6 else ICMP
        icmp = header(r, icmp_cls, buf, at, "ICMPv6" if v6 else "ICMP")
        if icmp is not None:
            r.icmp_type, r.icmp_code, r.flags = icmp.type, icmp.code, r.flags | F_HAS_ICMP
            r.info = rules.icmp_text(v6, icmp.type, icmp.code)
            rest = icmp.data  # the message after type, code and checksum
            if icmp.type in rules.ICMP_ID_TYPES[v6] and len(rest) >= 2:
                r.sport = r.dport = int.from_bytes(rest[:2], "big")
                r.flags |= F_HAS_ICMP_ID
    else:
        r.info = rules.ip_other_text(r.ip_version, proto)


def _decode(frame: bytes, ts_ns: int, wire_len: int, linktype: int) -> Record:
    r = Record(ts_ns, wire_len, len(frame), linktype)
    try:
        _link(r, frame, linktype)
    except Exception:  # a bug of ours or an unforeseen dpkt escape: recorded, never raised
        r.error = DecodeError.INTERNAL
        r.info = "[decoder error]"
    return r


def decode_reference(frame: bytes, ts_ns: int, wire_len: int, linktype: int) -> np.void:
    """One frame as one RECORD_DTYPE record (`seq` 0). Never raises for any bytes."""
    out = np.zeros(1, dtype=RECORD_DTYPE)
    out[0] = _decode(bytes(frame), ts_ns, wire_len, linktype).as_tuple()
    return out[0]  # type: ignore[no-any-return]


def reference_batch(
    frames: Sequence[bytes],
    ts_ns: Sequence[int] | npt.NDArray[np.int64],
    wire_lens: Sequence[int] | npt.NDArray[np.integer[Any]],
    linktype: int,
) -> DecodedBatch:
    """`decode_reference` over a batch, with the same result type as `decode.decode_batch`."""
    out = np.zeros(len(frames), dtype=RECORD_DTYPE)
    for i, (frame, ts, wire_len) in enumerate(zip(frames, ts_ns, wire_lens, strict=True)):
        out[i] = _decode(bytes(frame), int(ts), int(wire_len), linktype).as_tuple()
    return DecodedBatch(out, count_errors(out))
