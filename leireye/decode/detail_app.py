"""The application layers of `describe_frame`: DNS (and mDNS, LLMNR), HTTP, TLS, SSH.

Read from the transport payload that was stored; a message cut short by the ring's `raw_bytes`
is marked `"truncated": true` and still shows what it holds (a hand-written reader takes over
where dpkt refuses: DNS messages with HTTPS records, ClientHellos cut inside their extensions).
"""

from __future__ import annotations

import struct
from typing import Any, Final

import dpkt
import dpkt.dns
import dpkt.http
import dpkt.ssl

from . import dissect, rules
from .detail_walk import Fields, Walk, named
from .headers import DPKT_ESCAPES
from .names import DNS_RCODES, DNS_TYPES, HTTP_METHODS, TLS_HANDSHAKES, TLS_RECORDS

MAX_TLS_RECORDS: Final = 16
MAX_DNS_RECORDS: Final = 64
TLS_VERSIONS: Final = {
    0x0300: "SSL 3.0", 0x0301: "TLS 1.0", 0x0302: "TLS 1.1", 0x0303: "TLS 1.2", 0x0304: "TLS 1.3",
}  # fmt: skip
_DNS_NAME_RDATA: Final = {2: "nsname", 5: "cname", 12: "ptrname"}


def tcp_app(w: Walk, at: int, end: int, sport: int, dport: int) -> bool:
    """The layer of a TCP payload; whether its content was recognised (SSH, TLS, HTTP, DNS on
    port 53), which is what gives a segment its application label by content (`rules`)."""
    payload, cut = w.raw[at:end], end > len(w.raw)
    if not payload:
        return False
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
        w.data(at, end, {})
        return False
    return True


def udp_app(w: Walk, at: int, end: int, sport: int, dport: int) -> None:
    payload, cut = w.raw[at:end], end > len(w.raw)
    found = rules.udp_service(sport, dport)
    if found is not None and found[1] in rules.DNS_APPS and payload:
        _dns(w, at, payload, cut, found[1].label)
    elif payload:
        w.data(at, end, {"service": found[0]} if found else {})


def _dns(w: Walk, at: int, msg: bytes, cut: bool, label: str) -> None:
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


def _http(w: Walk, at: int, payload: bytes, cut: bool) -> None:
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


def _tls(w: Walk, at: int, payload: bytes, cut: bool) -> None:
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
            fields |= named(TLS_HANDSHAKES, body[0], "handshake_name")
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
