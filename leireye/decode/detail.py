"""One stored frame, layer by layer, for the packet detail view (`describe_frame`), and a hex dump.

The ring keeps the first `raw_bytes` of every frame (256 by default), so the bytes handed in here
are often shorter than the frame was on the wire. Each header is read with dpkt's class for it
(the dispatch-less variants of `reference_record`: the walk from layer to layer is ours, so
dpkt's known escapes in its automatic dispatch never run). A header that does not fit in the
stored bytes ends the list with a `Truncated` layer; an application message read from a cut
payload is marked `"truncated": true`. Whatever dpkt raises on hostile bytes (its contract's
errors and the stray ones in `DPKT_ESCAPES`) ends the list with a `Malformed` layer instead.

Every layer is `{"layer": name, "offset": int, "length": int, "fields": {...}}`, offsets and
lengths in bytes of the stored frame; every value is a str, int, bool, list or dict (no None).
"""

from __future__ import annotations

from typing import Final

import dpkt
import dpkt.arp
import dpkt.dns
import dpkt.ethernet
import dpkt.http
import dpkt.ip6
import dpkt.ssl
import dpkt.tcp
import dpkt.udp

from leireye.record import LinkType, tcp_flag_names

from . import checksum, rules
from .detail_app import tcp_app, udp_app
from .detail_walk import Fields, Walk, named
from .headers import (
    DPKT_ESCAPES,
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
from .names import (
    ETHERTYPE_NAMES,
    ICMP6_CODES,
    ICMP6_TYPES,
    ICMP_CODES,
    ICMP_TYPES,
    IP_PROTO_NAMES,
    TCP_SERVICES,
)

TCP_OPTION_NAMES: Final = {
    0: "EOL", 1: "NOP", 2: "MSS", 3: "WS", 4: "SACK_PERM", 5: "SACK", 8: "TS",
    19: "MD5", 28: "UTO", 29: "TCP-AO", 30: "MPTCP", 34: "TFO",
}  # fmt: skip


def describe_frame(raw: bytes, linktype: int, wire_len: int) -> list[dict[str, object]]:
    """The layers of one stored frame, outermost first (see the module docstring for the shape).

    Never raises for any bytes: a layer dpkt cannot read ends the list with a Malformed layer.
    """
    walk = Walk(bytes(raw), int(wire_len))
    try:
        _link(walk, int(linktype))
    except DPKT_ESCAPES as error:
        walk.malformed(error)
    return walk.layers


def hex_dump(raw: bytes) -> str:
    """`hexdump -C` style: offset, 16 bytes in hex (two groups of 8), the printable ASCII."""
    lines = []
    for off in range(0, len(raw), 16):
        chunk = raw[off : off + 16]
        hexes = "  ".join(" ".join(f"{b:02x}" for b in half) for half in (chunk[:8], chunk[8:]))
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        lines.append(f"{off:08x}  {hexes:<48}  |{text}|")
    return "\n".join(lines)


def _mac(addr: bytes) -> str:
    return ":".join(f"{b:02x}" for b in addr)


# -- link and network layers ------------------------------------------------------------------


def _link(w: Walk, linktype: int) -> None:
    if linktype == LinkType.EN10MB:
        eth = w.head(Ethernet, 0, "Ethernet")
        if eth is not None:
            fields: Fields = {"dst": _mac(eth.dst), "src": _mac(eth.src)}
            fields["ethertype"] = ethertype_text(eth.type)
            w.add("Ethernet", 0, 14, fields | _type_name(eth.type))
            _ethertype(w, 14, eth.type)
    elif linktype in (LinkType.LINUX_SLL, LinkType.LINUX_SLL2):
        v2 = linktype == LinkType.LINUX_SLL2
        name, size = ("SLL2", 20) if v2 else ("SLL", 16)
        sll = w.head(SLL2 if v2 else SLL, 0, name)
        if sll is not None:
            fields = {"packet_type": sll.type, "arphrd": sll.hrd}
            fields["address"] = _mac(sll.hdr[: min(sll.hlen, 8)])
            if v2:
                fields["interface_index"] = sll.intindex
            fields["ethertype"] = ethertype_text(sll.ethtype)
            w.add(name, 0, size, fields | _type_name(sll.ethtype))
            _ethertype(w, size, sll.ethtype)
    elif linktype in (LinkType.NULL, LinkType.LOOP):
        head = w.head(NullFamily if linktype == LinkType.NULL else LoopFamily, 0, "Loopback")
        if head is not None:
            family = head.family
            if linktype == LinkType.NULL and family > 0xFFFF:
                family = int.from_bytes(family.to_bytes(4, "little"), "big")
            w.add("Loopback", 0, 4, {"family": family})
            if family == 2:
                _ipv4(w, 4)
            elif family in rules.IPV6_FAMILIES:
                _ipv6(w, 4)
            else:
                w.data(4, len(w.raw), {})
    elif linktype in (LinkType.RAW, LinkType.RAW_OLD):
        if w.fits("IP", 0, 1):
            version = w.raw[0] >> 4
            if version == 6:
                _ipv6(w, 0)
            else:
                _ipv4(w, 0)
    elif linktype == LinkType.IPV4:
        _ipv4(w, 0)
    elif linktype == LinkType.IPV6:
        _ipv6(w, 0)
    else:
        w.add("Unsupported", 0, len(w.raw), {"linktype": linktype})


def ethertype_text(ethertype: int) -> str:
    """`0x0800 (IPv4)`, or `0x88b5` for a type without a name."""
    name = ETHERTYPE_NAMES.get(ethertype)
    return f"0x{ethertype:04x} ({name})" if name else f"0x{ethertype:04x}"


def _type_name(ethertype: int) -> Fields:
    return named(ETHERTYPE_NAMES, ethertype, "ethertype_name")


def _ethertype(w: Walk, at: int, ethertype: int) -> None:
    tags = 0
    while ethertype in rules.VLAN_TYPES and tags < rules.MAX_VLAN_TAGS:
        tag = w.head(dpkt.ethernet.VLANtag8021Q, at, "802.1Q")
        if tag is None:
            return
        fields: Fields = {"tpid": ethertype_text(ethertype), "id": tag.id, "priority": tag.pri}
        fields |= {"dei": bool(tag.cfi), "ethertype": ethertype_text(tag.type)}
        w.add("802.1Q", at, 4, fields | _type_name(tag.type))
        ethertype, at, tags = tag.type, at + 4, tags + 1
    if ethertype <= rules.LLC_MAX:
        w.add("LLC", at, len(w.raw) - at, {"length": ethertype})
    elif ethertype == rules.ETH_P_IP:
        _ipv4(w, at)
    elif ethertype == rules.ETH_P_IPV6:
        _ipv6(w, at)
    elif ethertype == rules.ETH_P_ARP:
        _arp(w, at)
    elif ethertype in rules.MPLS_TYPES:
        _mpls(w, at)
    else:
        w.data(at, len(w.raw), {})


def _mpls(w: Walk, at: int) -> None:
    for _ in range(rules.MAX_MPLS_LABELS):
        label = w.head(dpkt.ethernet.MPLSlabel, at, "MPLS")
        if label is None:
            return
        fields: Fields = {"label": label.val, "tc": label.exp, "bottom": bool(label.s)}
        w.add("MPLS", at, 4, fields | {"ttl": label.ttl})
        at += 4
        if label.s:
            break
    if w.fits("IP", at, 1):
        version = w.raw[at] >> 4
        if version == 4:
            _ipv4(w, at)
        elif version == 6:
            _ipv6(w, at)
        else:
            w.data(at, len(w.raw), {})


def _arp(w: Walk, at: int) -> None:
    arp = w.head(dpkt.arp.ARP, at, "ARP")
    if arp is None:
        return
    fields: Fields = {"hardware_type": arp.hrd, "protocol_type": arp.pro, "opcode": arp.op}
    if arp.op in (1, 2):
        fields["opcode_name"] = "request" if arp.op == 1 else "reply"
    ipv4 = arp.pro == rules.ETH_P_IP and arp.hln == 6 and arp.pln == 4
    for side in ("sender", "target"):
        hw, proto = getattr(arp, side[0] + "ha"), getattr(arp, side[0] + "pa")
        fields[f"{side}_mac"] = _mac(hw)
        fields[f"{side}_ip"] = rules.address_text(proto) if ipv4 else proto.hex()
    w.add("ARP", at, 28, fields)


def _ipv4(w: Walk, at: int) -> None:
    ip = w.head(IPv4, at, "IPv4")
    if ip is None:
        return
    header_len = ip.hl * 4
    flags = [name for name, bit in (("DF", ip.df), ("MF", ip.mf)) if bit]
    fields: Fields = {
        "version": ip.v, "ihl": ip.hl, "tos": ip.tos, "total_length": ip.len, "id": ip.id,
        "flags": flags, "df": bool(ip.df), "mf": bool(ip.mf), "fragment_offset": ip.offset * 8,
        "ttl": ip.ttl, "protocol": ip.p,
        "src": rules.address_text(ip.src), "dst": rules.address_text(ip.dst),
    }  # fmt: skip
    fields |= _proto_name(ip.p)
    w.add("IPv4", at, header_len, fields)
    if not w.fits("IPv4 options", at, header_len):
        fields |= checksum.covered_fields(ip.sum, b"", 0, cut=True)
        return
    fields |= checksum.header_fields(ip.sum, w.raw[at : at + header_len], 10)
    end = at + max(ip.len, header_len) if ip.len else len(w.raw)
    if ip.offset:
        w.data(at + header_len, end, {"fragment": True})
    else:
        _transport(w, ip.p, at + header_len, end, (ip.src, ip.dst), bool(ip.mf))


def _proto_name(proto: int) -> Fields:
    return named(IP_PROTO_NAMES, proto, "protocol_name")


def _ipv6(w: Walk, at: int) -> None:
    ip6 = w.head(IPv6, at, "IPv6")
    if ip6 is None:
        return
    fields: Fields = {
        "version": ip6.v, "traffic_class": ip6.fc, "flow_label": ip6.flow,
        "payload_length": ip6.plen, "next_header": ip6.nxt, "hop_limit": ip6.hlim,
        "src": rules.address_text(ip6.src), "dst": rules.address_text(ip6.dst),
    }  # fmt: skip
    w.add("IPv6", at, 40, fields | _proto_name(ip6.nxt))
    end = at + 40 + ip6.plen if ip6.plen else len(w.raw)
    at += 40
    next_header, more_fragments = ip6.nxt, False
    for _ in range(rules.MAX_IPV6_EXT):
        if next_header not in rules.IPV6_EXT:
            break
        name = f"IPv6 {IP_PROTO_NAMES[next_header]}"
        if next_header == rules.IPV6_EXT_FRAG:
            frag = w.head(dpkt.ip6.IP6FragmentHeader, at, name)
            if frag is None:
                return
            fields = {"next_header": frag.nxt, "fragment_offset": frag.frag_off * 8}
            w.add(name, at, 8, fields | {"more_fragments": bool(frag.m_flag), "id": frag.id})
            next_header, at, more_fragments = frag.nxt, at + 8, bool(frag.m_flag)
            if frag.frag_off:
                w.data(at, end, {"fragment": True})
                return
            continue
        ext = w.head(ExtHeader, at, name)
        if ext is None:
            return
        size = (ext.len + 2) * 4 if next_header == rules.IPV6_EXT_AH else (ext.len + 1) * 8
        w.add(name, at, size, {"next_header": ext.nxt, "header_length": size})
        if not w.fits(name, at, size):
            return
        next_header, at = ext.nxt, at + size
    _transport(w, next_header, at, end, (ip6.src, ip6.dst), more_fragments)


def _transport(
    w: Walk, proto: int, at: int, end: int, ends: tuple[bytes, bytes], fragment: bool
) -> None:
    """The header after IP at `at`; `end` is where the IP packet says its payload ends; `ends`
    the source and destination addresses (for the checksums' pseudo-header); `fragment` when
    more fragments follow (the checksums cover the reassembled packet)."""
    stored = len(w.raw)
    cut = end > stored or (end == stored and w.wire_len > stored)
    segment = w.raw[at:end]

    def pseudo() -> bytes:
        return checksum.pseudo_header(*ends, proto, end - at)

    if proto == 6:
        tcp = w.head(dpkt.tcp.TCP, at, "TCP")
        if tcp is None:
            return
        size = tcp.off * 4
        fields: Fields = {
            "src_port": tcp.sport, "dst_port": tcp.dport, "seq": tcp.seq, "ack": tcp.ack,
            "data_offset": tcp.off, "flags": tcp_flag_names(tcp.flags), "window": tcp.win,
            "urgent": tcp.urp, "options": _tcp_options(tcp.opts),
        }  # fmt: skip
        fields |= _window_scale(tcp.opts)
        fields |= checksum.covered_fields(tcp.sum, segment, 16, cut, pseudo(), fragment=fragment)
        w.add("TCP", at, size, fields)
        if w.fits("TCP options", at, size) and _payload_stored(w, "TCP", at + size, end):
            by_content = tcp_app(w, at + size, end, tcp.sport, tcp.dport)
            fields |= _application(tcp.sport, tcp.dport, end - at - size, by_content)
    elif proto == 17:
        udp = w.head(dpkt.udp.UDP, at, "UDP")
        if udp is None:
            return
        fields = {"src_port": udp.sport, "dst_port": udp.dport, "length": udp.ulen}
        v4 = len(ends[0]) == 4
        fields |= checksum.covered_fields(
            udp.sum, segment, 6, cut, pseudo(), zero_means_none=v4, fragment=fragment
        )
        w.add("UDP", at, 8, fields)
        if _payload_stored(w, "UDP", at + 8, end):
            udp_app(w, at + 8, end, udp.sport, udp.dport)
    elif proto in (1, 58):
        v6 = proto == 58
        name = "ICMPv6" if v6 else "ICMP"
        icmp = w.head(ICMP6 if v6 else ICMP, at, name)
        if icmp is None:
            return
        types, codes = (ICMP6_TYPES, ICMP6_CODES) if v6 else (ICMP_TYPES, ICMP_CODES)
        fields = {"type": icmp.type, "code": icmp.code}
        fields |= checksum.covered_fields(
            icmp.sum, segment, 2, cut, pseudo() if v6 else b"", fragment=fragment
        )
        fields |= named(types, icmp.type, "type_name")
        if (icmp.type, icmp.code) in codes:
            fields["code_name"] = codes[icmp.type, icmp.code]
        if icmp.type in rules.ICMP_ID_TYPES[v6]:  # as the decoders read it (`rules`)
            body = w.raw[at + rules.ICMP_ID_OFFSET : min(end, stored)]
            if len(body) >= 2:
                fields["identifier"] = int.from_bytes(body[:2], "big")
            if len(body) >= 4:
                fields["sequence"] = int.from_bytes(body[2:4], "big")
        w.add(name, at, 4, fields, cut=end > stored)
    else:
        w.data(at, end, _proto_name(proto))


def _payload_stored(w: Walk, transport: str, at: int, end: int) -> bool:
    """False (with a Truncated layer) when the stored bytes end where a payload begins."""
    return at >= end or w.fits(f"{transport} payload", at, 1)


def _window_scale(opts: bytes) -> Fields:
    """The window-scale option of this segment (only a SYN carries one), as the shift it
    announces: the sender's later windows are to be multiplied by 2**shift. The detail shows
    one packet, so the scaled window of other segments is not known here."""
    for option in dpkt.tcp.parse_opts(opts):
        if option is not None and option[0] == 3 and len(option[1]) == 1:
            shift = option[1][0]
            return {"window_scale": f"shift {shift} (×{1 << min(shift, 14)}) for later segments"}
    return {}


def _application(sport: int, dport: int, length: int, by_content: bool) -> Fields:
    """Why the segment has its application label (`rules`: content first, then the port of a
    segment that carries data), or which one its port suggests when it has none."""
    if by_content:
        return {"application_by": "content"}
    found = rules.tcp_service(sport, dport)
    if found is None:
        return {}
    name, app = found
    low, high = min(sport, dport), max(sport, dport)
    port = low if low in TCP_SERVICES else high
    if length > 0:
        return {"application_by": f"port {port} ({name}): the payload does not show {app.label}"}
    return {"suggested_application": f"{name} (port {port}): no payload, so no label"}


def _tcp_options(opts: bytes) -> list[str]:
    names = []
    for option in dpkt.tcp.parse_opts(opts):
        if option is None:
            names.append("malformed")
            break
        kind, data = option
        name = TCP_OPTION_NAMES.get(kind, f"option {kind}")
        if kind in (2, 3) and data:
            name += f"={int.from_bytes(data, 'big')}"
        names.append(name)
    return names
