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

import struct
from typing import Any, Final

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

from . import dissect, rules
from .names import (
    DNS_RCODES,
    DNS_TYPES,
    ETHERTYPE_NAMES,
    HTTP_METHODS,
    ICMP6_CODES,
    ICMP6_TYPES,
    ICMP_CODES,
    ICMP_TYPES,
    IP_PROTO_NAMES,
    TLS_HANDSHAKES,
    TLS_RECORDS,
)
from .reference_app import DPKT_ESCAPES
from .reference_record import (
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

Fields = dict[str, object]
Layer = dict[str, object]

MAX_TLS_RECORDS: Final = 16
MAX_DNS_RECORDS: Final = 64
ERROR_TEXT_MAX: Final = 200
TCP_OPTION_NAMES: Final = {
    0: "EOL", 1: "NOP", 2: "MSS", 3: "WS", 4: "SACK_PERM", 5: "SACK", 8: "TS",
    19: "MD5", 28: "UTO", 29: "TCP-AO", 30: "MPTCP", 34: "TFO",
}  # fmt: skip
TLS_VERSIONS: Final = {
    0x0300: "SSL 3.0", 0x0301: "TLS 1.0", 0x0302: "TLS 1.1", 0x0303: "TLS 1.2", 0x0304: "TLS 1.3",
}  # fmt: skip
_DNS_NAME_RDATA: Final = {2: "nsname", 5: "cname", 12: "ptrname"}


class _Walk:
    """The layers found so far, and which one is being read (named by a Malformed layer)."""

    def __init__(self, raw: bytes, wire_len: int) -> None:
        self.raw = raw
        self.wire_len = wire_len
        self.layers: list[Layer] = []
        self.current = "link"
        self.at = 0

    def add(self, name: str, at: int, length: int, fields: Fields, cut: bool = False) -> None:
        layer: Layer = {"layer": name, "offset": at, "length": max(0, length), "fields": fields}
        if cut:
            layer["truncated"] = True
        self.layers.append(layer)

    def start(self, name: str, at: int) -> None:
        self.current, self.at = name, at

    def fits(self, name: str, at: int, need: int) -> bool:
        """Whether `need` bytes from `at` are stored; if not, the Truncated layer ends the list."""
        available = len(self.raw) - at
        if available >= need:
            return True
        fields: Fields = {"layer": name, "needed": need, "available": max(0, available)}
        fields["wire_length"] = self.wire_len
        self.add("Truncated", at, available, fields)
        return False

    def head(self, cls: Any, at: int, name: str) -> Any:
        """`cls` read at `at`, or None when its fixed header is cut short."""
        self.start(name, at)
        if not self.fits(name, at, cls.__hdr_len__):
            return None
        return cls(self.raw[at:])

    def malformed(self, error: BaseException) -> None:
        text = f"{type(error).__name__}: {error}"[:ERROR_TEXT_MAX]
        fields: Fields = {"layer": self.current, "error": rules.clean(text)}
        self.add("Malformed", self.at, len(self.raw) - self.at, fields)


def describe_frame(raw: bytes, linktype: int, wire_len: int) -> list[dict[str, object]]:
    """The layers of one stored frame, outermost first (see the module docstring for the shape).

    Never raises for any bytes: a layer dpkt cannot read ends the list with a Malformed layer.
    """
    walk = _Walk(bytes(raw), int(wire_len))
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


def _named(table: dict[int, str], value: int, key: str) -> Fields:
    """`{key: name}` when `table` names `value`, else nothing (fields hold no None)."""
    return {key: table[value]} if value in table else {}


# -- link and network layers ------------------------------------------------------------------


def _link(w: _Walk, linktype: int) -> None:
    if linktype == LinkType.EN10MB:
        eth = w.head(Ethernet, 0, "Ethernet")
        if eth is not None:
            fields: Fields = {"dst": _mac(eth.dst), "src": _mac(eth.src), "ethertype": eth.type}
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
            w.add(name, 0, size, fields | {"ethertype": sll.ethtype} | _type_name(sll.ethtype))
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
                _data(w, 4, len(w.raw), {})
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


def _type_name(ethertype: int) -> Fields:
    return _named(ETHERTYPE_NAMES, ethertype, "ethertype_name")


def _ethertype(w: _Walk, at: int, ethertype: int) -> None:
    tags = 0
    while ethertype in rules.VLAN_TYPES and tags < rules.MAX_VLAN_TAGS:
        tag = w.head(dpkt.ethernet.VLANtag8021Q, at, "802.1Q")
        if tag is None:
            return
        fields: Fields = {"tpid": ethertype, "id": tag.id, "priority": tag.pri}
        fields |= {"dei": bool(tag.cfi), "ethertype": tag.type}
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
        _data(w, at, len(w.raw), {})


def _mpls(w: _Walk, at: int) -> None:
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
            _data(w, at, len(w.raw), {})


def _arp(w: _Walk, at: int) -> None:
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


def _ipv4(w: _Walk, at: int) -> None:
    ip = w.head(IPv4, at, "IPv4")
    if ip is None:
        return
    header_len = ip.hl * 4
    flags = [name for name, bit in (("DF", ip.df), ("MF", ip.mf)) if bit]
    fields: Fields = {
        "version": ip.v, "ihl": ip.hl, "tos": ip.tos, "total_length": ip.len, "id": ip.id,
        "flags": flags, "df": bool(ip.df), "mf": bool(ip.mf), "fragment_offset": ip.offset * 8,
        "ttl": ip.ttl, "protocol": ip.p, "checksum": ip.sum,
        "src": rules.address_text(ip.src), "dst": rules.address_text(ip.dst),
    }  # fmt: skip
    w.add("IPv4", at, header_len, fields | _proto_name(ip.p))
    if not w.fits("IPv4 options", at, header_len):
        return
    end = at + max(ip.len, header_len) if ip.len else len(w.raw)
    if ip.offset:
        _data(w, at + header_len, end, {"fragment": True})
    else:
        _transport(w, ip.p, at + header_len, end)


def _proto_name(proto: int) -> Fields:
    return _named(IP_PROTO_NAMES, proto, "protocol_name")


def _ipv6(w: _Walk, at: int) -> None:
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
    next_header = ip6.nxt
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
            next_header, at = frag.nxt, at + 8
            if frag.frag_off:
                _data(w, at, end, {"fragment": True})
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
    _transport(w, next_header, at, end)


def _transport(w: _Walk, proto: int, at: int, end: int) -> None:
    """The header after IP at `at`; `end` is where the IP packet says its payload ends."""
    if proto == 6:
        tcp = w.head(dpkt.tcp.TCP, at, "TCP")
        if tcp is None:
            return
        size = tcp.off * 4
        fields: Fields = {
            "src_port": tcp.sport, "dst_port": tcp.dport, "seq": tcp.seq, "ack": tcp.ack,
            "data_offset": tcp.off, "flags": list(reversed(tcp_flag_names(tcp.flags))),
            "window": tcp.win, "checksum": tcp.sum, "urgent": tcp.urp,
            "options": _tcp_options(tcp.opts),
        }  # fmt: skip
        w.add("TCP", at, size, fields)
        if w.fits("TCP options", at, size) and _payload_stored(w, "TCP", at + size, end):
            _tcp_app(w, at + size, end, tcp.sport, tcp.dport)
    elif proto == 17:
        udp = w.head(dpkt.udp.UDP, at, "UDP")
        if udp is None:
            return
        fields = {"src_port": udp.sport, "dst_port": udp.dport, "length": udp.ulen}
        w.add("UDP", at, 8, fields | {"checksum": udp.sum})
        if _payload_stored(w, "UDP", at + 8, end):
            _udp_app(w, at + 8, end, udp.sport, udp.dport)
    elif proto in (1, 58):
        v6 = proto == 58
        name = "ICMPv6" if v6 else "ICMP"
        icmp = w.head(ICMP6 if v6 else ICMP, at, name)
        if icmp is None:
            return
        types, codes = (ICMP6_TYPES, ICMP6_CODES) if v6 else (ICMP_TYPES, ICMP_CODES)
        fields = {"type": icmp.type, "code": icmp.code, "checksum": icmp.sum}
        fields |= _named(types, icmp.type, "type_name")
        if (icmp.type, icmp.code) in codes:
            fields["code_name"] = codes[icmp.type, icmp.code]
        echo = (128, 129) if v6 else (0, 8)
        if icmp.type in echo and len(w.raw) >= at + 8:
            fields["echo_id"], fields["echo_seq"] = struct.unpack_from("!HH", w.raw, at + 4)
        w.add(name, at, 4, fields, cut=end > len(w.raw))
    else:
        _data(w, at, end, _proto_name(proto))


def _payload_stored(w: _Walk, transport: str, at: int, end: int) -> bool:
    """False (with a Truncated layer) when the stored bytes end where a payload begins."""
    return at >= end or w.fits(f"{transport} payload", at, 1)


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


def _data(w: _Walk, at: int, end: int, fields: Fields) -> None:
    if end > at:
        stored = min(end, len(w.raw)) - at
        w.add("Data", at, stored, fields | {"bytes": end - at}, cut=stored < end - at)


# -- applications -----------------------------------------------------------------------------


def _tcp_app(w: _Walk, at: int, end: int, sport: int, dport: int) -> None:
    payload, cut = w.raw[at:end], end > len(w.raw)
    if not payload:
        return
    if payload.startswith(b"SSH-"):
        banner = dissect.ssh_info(payload)
        w.add("SSH", at, len(dissect.first_line(payload)), {"banner": banner}, cut=cut)
    elif dissect.is_tls(payload):
        _tls(w, at, payload, cut)
    elif payload.startswith(b"HTTP/") or any(payload.startswith(m + b" ") for m in HTTP_METHODS):
        _http(w, at, payload, cut)
    elif 53 in (sport, dport) and len(payload) > 2:
        _dns(w, at + 2, payload[2:], cut, "DNS")
    else:
        _data(w, at, end, {})


def _udp_app(w: _Walk, at: int, end: int, sport: int, dport: int) -> None:
    payload, cut = w.raw[at:end], end > len(w.raw)
    found = rules.udp_service(sport, dport)
    if found is not None and found[1] in rules.DNS_APPS and payload:
        _dns(w, at, payload, cut, found[1].label)
    elif payload:
        _data(w, at, end, {"service": found[0]} if found else {})


def _dns(w: _Walk, at: int, msg: bytes, cut: bool, label: str) -> None:
    w.start(label, at)
    try:
        dns = dpkt.dns.DNS(msg)
    except DPKT_ESCAPES:  # e.g. an HTTPS (type 65) record, or a message cut short
        fields = _dns_by_hand(msg)
        if fields is None:
            w.fits(label, at, 12)
            return
        w.add(label, at, len(msg), fields, cut=cut)
        return
    fields = _dns_header(dns.id, dns.qr, dns.opcode, dns.rcode)
    fields["questions"] = [
        {"name": rules.clean(q.name), "type": _dns_type(q.type)} for q in dns.qd[:MAX_DNS_RECORDS]
    ]
    fields["answers"] = [
        _answer(rr.name, rr.type, rr.ttl, _rdata_text(rr.type, rr.rdata, rr))
        for rr in dns.an[:MAX_DNS_RECORDS]
    ]
    w.add(label, at, len(msg), fields, cut=cut)


def _dns_header(ident: int, qr: int, opcode: int, rcode: int) -> Fields:
    fields: Fields = {"id": ident, "qr": bool(qr), "opcode": opcode, "rcode": rcode}
    fields["rcode_name"] = DNS_RCODES.get(rcode, "NOERROR" if rcode == 0 else f"RCODE{rcode}")
    return fields


def _dns_type(qtype: int) -> str:
    return DNS_TYPES.get(qtype) or f"TYPE{qtype}"


def _answer(name: str, rtype: int, ttl: int, data: str) -> Fields:
    return {"name": rules.clean(name), "type": _dns_type(rtype), "ttl": ttl, "data": data}


def _rdata_text(rtype: int, rdata: bytes, rr: Any = None) -> str:
    if rtype in (1, 28) and len(rdata) == (4 if rtype == 1 else 16):
        return rules.address_text(rdata)
    if rr is not None and rtype in _DNS_NAME_RDATA:
        return rules.clean(str(getattr(rr, _DNS_NAME_RDATA[rtype])))
    if rr is not None and rtype == 15:
        preference = rr.preference[0] if isinstance(rr.preference, tuple) else rr.preference
        return rules.clean(f"{preference} {rr.mxname}")
    if rr is not None and rtype in (13, 16):
        return rules.clean(" ".join(f'"{text}"' for text in rr.text))
    return rdata.hex()


def _dns_by_hand(msg: bytes) -> Fields | None:
    """What a message dpkt refuses holds, read as far as the bytes allow."""
    if len(msg) < 12:
        return None
    ident, flags, qdcount, ancount = struct.unpack_from("!4H", msg)
    fields = _dns_header(ident, flags >> 15, (flags >> 11) & 0xF, flags & 0xF)
    questions: list[Fields] = []
    answers: list[Fields] = []
    off = 12
    for _ in range(min(qdcount, MAX_DNS_RECORDS)):
        found = dissect.dns_name(msg, off)
        if found is None or found[1] + 4 > len(msg):
            break
        (qtype,), off = struct.unpack_from("!H", msg, found[1]), found[1] + 4
        questions.append({"name": rules.clean(found[0]), "type": _dns_type(qtype)})
    for _ in range(min(ancount, MAX_DNS_RECORDS) if len(questions) == qdcount else 0):
        found = dissect.dns_name(msg, off)
        if found is None or found[1] + 10 > len(msg):
            break
        rtype, _, ttl, size = struct.unpack_from("!HHIH", msg, found[1])
        off = found[1] + 10 + size
        if off > len(msg):
            break
        answers.append(_answer(found[0], rtype, ttl, _rdata_text(rtype, msg[off - size : off])))
    return fields | {"questions": questions, "answers": answers}


def _http(w: _Walk, at: int, payload: bytes, cut: bool) -> None:
    w.start("HTTP", at)
    request = not payload.startswith(b"HTTP/")
    head = payload.split(b"\r\n\r\n", 1)[0]
    try:
        message = dpkt.http.Request(payload) if request else dpkt.http.Response(payload)
        headers: dict[str, Any] = message.headers
        start = (
            [message.method, message.uri, f"HTTP/{message.version}"]
            if request
            else [f"HTTP/{message.version}", message.status, message.reason]
        )
    except DPKT_ESCAPES:  # headers or body cut short, or not quite HTTP: read the lines
        lines = head.decode("ascii", "replace").split("\r\n")
        start = [*lines[0].split(" ", 2), "", ""][:3]
        pairs = (line.split(":", 1) for line in lines[1:] if ":" in line)
        headers = {name.strip().lower(): value.strip() for name, value in pairs}
    if request:
        fields: Fields = {"method": start[0], "uri": start[1], "version": start[2]}
        for key, header in (("host", "host"), ("user_agent", "user-agent")):
            value = headers.get(header)
            if value is not None:
                fields[key] = ", ".join(value) if isinstance(value, list) else str(value)
    else:
        fields = {"version": start[0], "status": start[1], "reason": start[2]}
    fields = {key: rules.clean(str(value)) for key, value in fields.items()}
    w.add("HTTP", at, min(len(payload), len(head) + 4), fields, cut=cut)


def _tls(w: _Walk, at: int, payload: bytes, cut: bool) -> None:
    pos = 0
    for _ in range(MAX_TLS_RECORDS):
        if len(payload) - pos < 5 or not dissect.is_tls(payload[pos:]):
            return
        w.start("TLS", at + pos)
        rtype, version, length = struct.unpack_from("!BHH", payload, pos)
        body = payload[pos + 5 : pos + 5 + length]
        fields: Fields = {"record_type": rtype, "record_name": TLS_RECORDS[rtype]}
        fields |= {"version": TLS_VERSIONS.get(version, f"0x{version:04x}"), "length": length}
        if rtype == 22 and body:
            fields["handshake_type"] = body[0]
            fields |= _named(TLS_HANDSHAKES, body[0], "handshake_name")
            if body[0] == 1:
                fields |= _client_hello(payload[pos:], body)
        if len(body) < length and not cut:
            fields["continues"] = True  # the record goes on in a later segment
        w.add("TLS", at + pos, 5 + len(body), fields, cut=cut and len(body) < length)
        pos += 5 + length


def _client_hello(record: bytes, body: bytes) -> Fields:
    """SNI and ALPN of a ClientHello: dpkt reads a whole one, a cut one is walked by hand."""
    try:
        hello = dpkt.ssl.TLSHandshake(dpkt.ssl.TLSRecord(record).data).data
        extensions: list[tuple[int, bytes]] = list(getattr(hello, "extensions", []))
    except DPKT_ESCAPES:
        extensions = _extensions_by_hand(body[4:])
    fields: Fields = {}
    for kind, data in extensions:
        if kind == 0 and "sni" not in fields:
            sni = dissect.server_name(data)
            if sni is not None:
                fields["sni"] = rules.clean(sni)
        elif kind == 16 and "alpn" not in fields:
            fields["alpn"] = _alpn(data)
    return fields


def _extensions_by_hand(body: bytes) -> list[tuple[int, bytes]]:
    if len(body) < 35:
        return []
    p = 35 + body[34]
    if p + 2 > len(body):
        return []
    p += 2 + int.from_bytes(body[p : p + 2], "big")
    if p + 1 > len(body):
        return []
    p += 1 + body[p]
    end = min(len(body), p + 2 + int.from_bytes(body[p : p + 2], "big"))
    q, out = p + 2, []
    while q + 4 <= end:
        kind, size = struct.unpack_from("!HH", body, q)
        out.append((kind, body[q + 4 : q + 4 + size]))
        q += 4 + size
    return out


def _alpn(data: bytes) -> list[str]:
    names, p = [], 2
    while p < len(data):
        size = data[p]
        names.append(rules.clean(data[p + 1 : p + 1 + size].decode("utf-8", "backslashreplace")))
        p += 1 + size
    return names
