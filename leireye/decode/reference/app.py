"""The reference decoder's application layer: the rules of `rules` for TCP and UDP payloads, with
dpkt's parsers asked first and the hand-written dissectors (`dissect`) reading what they refuse."""

from __future__ import annotations

from collections.abc import Callable

import dpkt
import dpkt.dhcp
import dpkt.dns
import dpkt.http
import dpkt.ntp
import dpkt.ssl

from leireye.decode import dissect, rules
from leireye.decode.headers import DPKT_ESCAPES
from leireye.decode.names import HTTP_METHODS
from leireye.decode.reference.record import Record
from leireye.record import App, DecodeError


def _dissect(r: Record, app: App, read: Callable[[], str | None], cut: bool) -> None:
    r.app = app
    try:
        info = read()
    except Exception:  # a dissector's own bug: recorded per packet, never raised
        r.error = DecodeError.INTERNAL
        r.info = rules.error_text(app.label, DecodeError.INTERNAL)
        return
    if info is not None:
        r.info = info
    else:
        r.fail(DecodeError.TRUNCATED if cut else DecodeError.APP_PARSE, app.label)


def tcp_app(r: Record, payload: bytes, length: int, cut: bool) -> None:
    if payload.startswith(b"SSH-"):
        _dissect(r, App.SSH, lambda: dissect.ssh_info(payload), cut)
    elif (
        len(payload) >= 5 and payload[0] in (20, 21, 22, 23) and payload[1] == 3 and payload[2] <= 4
    ):
        _dissect(r, App.TLS, lambda: _tls(payload), cut)
    elif any(payload.startswith(method + b" ") for method in HTTP_METHODS):
        _dissect(r, App.HTTP, lambda: _http_request(payload), cut)
    elif payload.startswith(b"HTTP/"):
        _dissect(r, App.HTTP, lambda: _http_response(payload), cut)
    else:
        found = rules.tcp_service(r.sport, r.dport)
        if found is not None and found[1] == App.DNS and payload:
            _dissect(r, App.DNS, lambda: _dns(payload[2:], "DNS"), cut)
            return
        r.app = rules.tcp_port_app(r.sport, r.dport, length)
        r.info = rules.tcp_text(r.sport, r.dport, r.tcp_flags, length)


def udp_app(r: Record, payload: bytes, length: int, cut: bool) -> None:
    found = rules.udp_service(r.sport, r.dport)
    if found is None:
        r.info = rules.udp_text(r.sport, r.dport, length)
        return
    name, app = found
    if app in rules.DNS_APPS:
        _dissect(r, app, lambda: _dns(payload, app.label), cut)
    elif app == App.DHCP:
        _dissect(r, app, lambda: _dhcp(payload), cut)
    elif app == App.NTP:
        _dissect(r, app, lambda: _ntp(payload), cut)
    elif app in dissect.UDP_DISSECTED:
        _dissect(r, app, lambda: dissect.udp_app_info(app, name, payload), cut)
    else:
        r.app, r.info = app, name


def _dns(msg: bytes, label: str) -> str | None:
    try:
        dns = dpkt.dns.DNS(msg)
    except DPKT_ESCAPES:
        return dissect.dns_info(msg, label)
    question = (dns.qd[0].type, dns.qd[0].name) if dns.qd else None
    addresses = [
        rules.address_text(rr.rdata)
        for rr in dns.an
        if (rr.type, rr.rlen, len(rr.rdata)) in ((1, 4, 4), (28, 16, 16))
    ]
    return rules.dns_text(label, bool(dns.qr), dns.rcode, question, addresses)


def _tls(payload: bytes) -> str:
    try:
        record = dpkt.ssl.TLSRecord(payload)
        if record.type != 22:
            return rules.tls_text(record.type, None, None)
        handshake = dpkt.ssl.TLSHandshake(record.data)
        sni = None
        if handshake.type == 1:
            names = [data for kind, data in getattr(handshake.data, "extensions", []) if kind == 0]
            sni = dissect.server_name(names[0]) if names else None
        return rules.tls_text(22, handshake.type, sni)
    except DPKT_ESCAPES:
        return dissect.tls_info(payload)


def _http_request(payload: bytes) -> str | None:
    try:
        request = dpkt.http.Request(payload)
    except DPKT_ESCAPES:
        return dissect.http_request_info(payload)
    return rules.http_request_text(request.method, request.uri)


def _http_response(payload: bytes) -> str | None:
    try:
        response = dpkt.http.Response(payload)
    except DPKT_ESCAPES:
        return dissect.http_response_info(payload)
    return rules.http_response_text(response.status, response.reason)


def _dhcp(payload: bytes) -> str | None:
    try:
        dhcp = dpkt.dhcp.DHCP(payload)
    except DPKT_ESCAPES:
        return dissect.dhcp_info(payload)
    message_type = None
    if dhcp.magic == dissect.DHCP_MAGIC:
        found = [data for code, data in dhcp.opts if code == 53]
        message_type = found[0][0] if found and found[0] else None
    return rules.dhcp_text(dhcp.op, message_type)


def _ntp(payload: bytes) -> str | None:
    try:
        ntp = dpkt.ntp.NTP(payload)
    except DPKT_ESCAPES:
        return dissect.ntp_info(payload)
    return rules.ntp_text(ntp.mode)
