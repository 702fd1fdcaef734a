"""Application labels and `info` texts: content first (SSH, TLS, HTTP), then well-known ports;
the hand-written fallbacks where dpkt refuses (HTTPS records, split records, partial headers)."""

from __future__ import annotations

import struct

import dpkt
import numpy as np
import pytest

from leireye.decode.rules import clean
from leireye.record import F_TRUNCATED, INFO_BYTES, App, DecodeError, Proto
from tests.decode_compare import decode_checked, record_info
from tests.traffic import frames as fb
from tests.traffic.mix import MixBuilder

DNS = dpkt.dns.DNS
HTTPS_RDATA = b"\x00\x01\x00\x00\x01\x00\x03\x02h2"


one = decode_checked
info = record_info


def udp(sport: int, dport: int, payload: bytes) -> np.void:
    return one(fb.udp4(sport, dport, payload))


def tcp(sport: int, dport: int, payload: bytes = b"", flags: int = 0x18) -> np.void:
    return one(fb.tcp4(sport, dport, flags, payload))


def dns_message(
    response: bool, qtype: int = 1, answers: list[dpkt.dns.DNS.RR] | None = None, rcode: int = 0
) -> bytes:
    msg = DNS(
        id=7,
        op=(0x8180 | rcode) if response else 0x0100,
        qd=[DNS.Q(name="www.example.com", type=qtype)],
    )
    msg.an = answers or []
    return bytes(msg)


def a(address: bytes) -> dpkt.dns.DNS.RR:
    return DNS.RR(name="www.example.com", type=1, ip=address, ttl=60)


@pytest.mark.parametrize(
    ("payload", "text"),
    [
        (dns_message(False), "DNS query A www.example.com"),
        (dns_message(False, 65), "DNS query HTTPS www.example.com"),
        (
            dns_message(True, answers=[a(b"\x0a\x01\x02\x03")]),
            "DNS response A www.example.com → 10.1.2.3",
        ),
        (
            dns_message(
                True,
                answers=[
                    DNS.RR(name="www.example.com", type=5, cname="e.example.net"),
                    a(b"\1\2\3\4"),
                    a(b"\5\6\7\x08"),
                ],
            ),
            "DNS response A www.example.com → 1.2.3.4, 5.6.7.8",
        ),
        (
            dns_message(
                True,
                28,
                [
                    DNS.RR(
                        name="www.example.com",
                        type=28,
                        ip6=bytes.fromhex("20010db8" + "0" * 23 + "1"),
                    )
                ],
            ),
            "DNS response AAAA www.example.com → 2001:db8::1",
        ),
        (dns_message(True, rcode=3), "DNS response A www.example.com NXDOMAIN"),
        (dns_message(True, 99), "DNS response SPF www.example.com"),
    ],
)
def test_dns(payload: bytes, text: str) -> None:
    r = udp(40000, 53, payload)
    assert (r["app"], r["error"], info(r)) == (App.DNS, DecodeError.NONE, text)


def test_dns_https_record_that_dpkt_refuses() -> None:
    payload = dns_message(
        True, 65, [DNS.RR(name="www.example.com", type=65, rdata=HTTPS_RDATA), a(b"\1\2\3\4")]
    )
    with pytest.raises(dpkt.UnpackError):
        DNS(payload)
    assert info(udp(53, 40000, payload)) == "DNS response HTTPS www.example.com → 1.2.3.4"


def test_dns_over_tcp_mdns_and_llmnr() -> None:
    message = dns_message(False, 28)
    assert (
        info(tcp(40000, 53, struct.pack("!H", len(message)) + message))
        == "DNS query AAAA www.example.com"
    )
    assert info(tcp(40000, 53, flags=0x10)) == "40000 → 53 [ACK]"
    mdns = bytes(
        DNS(
            id=0,
            op=0x8400,
            an=[DNS.RR(name="printer.local", type=1, cls=0x8001, ip=b"\xc0\xa8\1\5")],
        )
    )
    r = udp(5353, 5353, mdns)
    assert (r["app"], info(r)) == (App.MDNS, "mDNS response → 192.168.1.5")
    assert info(udp(50000, 5355, dns_message(False))) == "LLMNR query A www.example.com"


def test_dns_cut_by_the_capture_or_malformed() -> None:
    frame = fb.udp4(40000, 53, dns_message(False))
    cut = one(frame[:50], wire_len=len(frame))
    assert (cut["app"], cut["error"], cut["flags"] & F_TRUNCATED, info(cut)) == (
        App.DNS,
        DecodeError.TRUNCATED,
        F_TRUNCATED,
        "DNS [truncated]",
    )
    bad = udp(40000, 53, b"\x00\x01\x02")
    assert (bad["app"], bad["error"], bad["flags"] & F_TRUNCATED, info(bad)) == (
        App.DNS,
        DecodeError.APP_PARSE,
        0,
        "DNS [malformed]",
    )


def test_dns_answers_cut_keep_the_question() -> None:
    frame = fb.udp4(53, 40000, dns_message(True, answers=[a(b"\1\2\3\4"), a(b"\5\6\7\x08")]))
    r = one(frame[:-3], wire_len=len(frame))
    assert (r["error"], info(r)) == (DecodeError.NONE, "DNS response A www.example.com → 1.2.3.4")


def test_http_request_and_response() -> None:
    request = b"GET /index.html HTTP/1.1\r\nHost: example.org\r\nAccept: */*\r\n\r\n"
    r = tcp(50000, 80, request)
    assert (r["app"], info(r)) == (App.HTTP, "HTTP GET /index.html")
    assert info(tcp(50000, 8081, request[:30])) == "HTTP GET /index.html"  # headers continue later
    assert (
        info(tcp(80, 50000, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"))
        == "HTTP 404 Not Found"
    )
    assert info(tcp(80, 50000, b"HTTP/1.0 204\r\n\r\n")) == "HTTP 204"
    body_cut = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\nabc"
    assert info(tcp(80, 50000, body_cut)) == "HTTP 200 OK"


def test_http_that_cannot_be_read() -> None:
    r = tcp(50000, 80, b"GET \r\n\r\n")
    assert (r["app"], r["error"], info(r)) == (App.HTTP, DecodeError.APP_PARSE, "HTTP [malformed]")
    r = tcp(50000, 80, b"GETTING things")  # not a request: data on port 80, HTTP by port
    assert (r["app"], info(r)) == (App.HTTP, "50000 → 80 [PSH, ACK] len=14")


def test_tls() -> None:
    gen = MixBuilder(1)
    hello = gen.client_hello("example.org")
    r = tcp(50000, 443, hello)
    assert (r["app"], info(r)) == (App.TLS, "TLS ClientHello SNI=example.org")
    assert (
        info(tcp(50000, 8443, hello[:300])) == "TLS ClientHello SNI=example.org"
    )  # split over segments
    assert info(tcp(443, 50000, gen.server_hello())) == "TLS ServerHello"
    assert info(tcp(443, 50000, gen.app_data(100))) == "TLS Application Data"
    assert info(tcp(443, 50000, b"\x15\x03\x03\x00\x02\x02\x28")) == "TLS Alert"
    assert info(tcp(443, 50000, b"\x14\x03\x03\x00\x01\x01")) == "TLS ChangeCipherSpec"
    assert info(tcp(443, 50000, b"\x16\x03\x03\x00\x05\x63\x00\x00\x01\x00")) == "TLS Handshake"


def test_client_hello_without_sni() -> None:
    body = (
        b"\x03\x03"
        + bytes(32)
        + b"\x00"
        + b"\x00\x02\x13\x01"
        + b"\x01\x00"
        + b"\x00\x06\x00\x2b\x00\x02\x03\x04"
    )
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    assert (
        info(tcp(50000, 443, b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs))
        == "TLS ClientHello"
    )


def test_ssh_banner_on_any_port() -> None:
    r = tcp(50000, 2222, b"SSH-2.0-OpenSSH_9.2\r\n")
    assert (r["app"], info(r)) == (App.SSH, "SSH-2.0-OpenSSH_9.2")


def test_dhcp() -> None:
    discover = dpkt.dhcp.DHCP(op=1, opts=[(53, b"\x01"), (55, b"\x01\x03")])
    r = udp(68, 67, bytes(discover))
    assert (r["app"], info(r)) == (App.DHCP, "DHCP Discover")
    assert info(udp(67, 68, bytes(dpkt.dhcp.DHCP(op=2, opts=[(51, b"\0\0\0\1")])))) == "BOOTP reply"
    assert info(udp(68, 67, bytes(100))) == "DHCP [malformed]"


@pytest.mark.parametrize(
    ("ports", "payload", "app", "text"),
    [
        ((123, 123), b"\x23" + bytes(47), App.NTP, "NTP client"),
        ((123, 50000), b"\x24" + bytes(47), App.NTP, "NTP server"),
        ((123, 50000), b"\x24" + bytes(10), App.NTP, "NTP [malformed]"),
        ((546, 547), b"\x01\x12\x34\x56", App.DHCPV6, "DHCPv6 Solicit"),
        ((50000, 1900), b"M-SEARCH * HTTP/1.1\r\nMAN: x\r\n\r\n", App.SSDP, "SSDP M-SEARCH *"),
        ((1900, 50000), b"HTTP/1.1 200 OK\r\n\r\n", App.SSDP, "SSDP 200 OK"),
        ((50000, 443), b"\xc3\x00\x00\x00\x01" + bytes(40), App.QUIC, "QUIC Initial"),
        ((443, 50000), b"\x41" + bytes(40), App.QUIC, "QUIC 1-RTT"),
        ((443, 50000), b"\x80\x00\x00\x00\x00" + bytes(40), App.QUIC, "QUIC Version Negotiation"),
        ((443, 50000), b"\xc3\x00", App.QUIC, "QUIC [malformed]"),
        ((50000, 161), bytes(30), App.SNMP, "SNMP"),
        ((50000, 514), b"<13>hello", App.SYSLOG, "Syslog"),
        ((54321, 9999), bytes(12), App.NONE, "54321 → 9999 len=12"),
    ],
)
def test_udp_services(ports: tuple[int, int], payload: bytes, app: App, text: str) -> None:
    r = udp(*ports, payload)
    assert (r["app"], info(r)) == (app, text)


@pytest.mark.parametrize(
    ("sport", "dport", "flags", "payload", "app", "text"),
    [
        (50000, 443, 0x10, b"", App.NONE, "50000 → 443 [ACK]"),  # no data: no application
        (50000, 443, 0x02, b"", App.NONE, "50000 → 443 [SYN]"),
        (443, 50000, 0x18, b"\x17" * 40, App.TLS, "443 → 50000 [PSH, ACK] len=40"),  # by port
        (22, 50000, 0x18, b"\x00" * 40, App.SSH, "22 → 50000 [PSH, ACK] len=40"),
        (25, 50000, 0x11, b"", App.NONE, "25 → 50000 [FIN, ACK]"),
        (54321, 9999, 0x12, b"", App.NONE, "54321 → 9999 [SYN, ACK]"),
        (54321, 9999, 0x18, b"x" * 12, App.NONE, "54321 → 9999 [PSH, ACK] len=12"),
        (54321, 9999, 0x000, b"", App.NONE, "54321 → 9999 [<none>]"),
        (1234, 8080, 0x10, b"x", App.HTTP, "1234 → 8080 [ACK] len=1"),  # the higher port's
        (53, 5353, 0x10, b"", App.NONE, "53 → 5353 [ACK]"),
    ],
)
def test_tcp_services_and_plain_segments(
    sport: int, dport: int, flags: int, payload: bytes, app: App, text: str
) -> None:
    r = tcp(sport, dport, payload, flags)
    assert (r["app"], info(r)) == (app, text)


def test_udp_lower_port_decides() -> None:
    assert udp(53, 5353, dns_message(False))["app"] == App.DNS


def test_tcp_length_is_the_declared_one_when_the_capture_is_cut() -> None:
    frame = fb.tcp4(54321, 9999, 0x18, bytes(1000))
    assert info(one(frame[:100], wire_len=len(frame))) == "54321 → 9999 [PSH, ACK] len=1000"


def test_text_from_packets_is_escaped_and_cut() -> None:
    assert clean("a\nb\x1b[31m\u202ec") == "a\\x0ab\\x1b[31m\\u202ec"
    r = tcp(50000, 80, b"GET /\x1b[2J\xe2\x80\xae" + b"x" * 400 + b" HTTP/1.1\r\n\r\n")
    text = info(r)
    assert text.startswith("HTTP GET /\\x1b[2J") and "\u202e" not in text
    assert len(r["info"]) <= INFO_BYTES
    name = "ex\x07mple.org"
    assert (
        info(udp(40000, 53, bytes(DNS(id=1, qd=[DNS.Q(name=name)]))))
        == "DNS query A ex\\x07mple.org"
    )


def test_a_bare_syn_to_443_is_tcp_until_a_payload_says_more() -> None:
    """The port only suggests an application: both decoders (`one` checks that they agree)
    give a segment without data no application and no service name."""
    syn = one(fb.tcp4(54321, 443, 0x02))
    assert (syn["proto"], syn["app"], info(syn)) == (Proto.TCP, App.NONE, "54321 → 443 [SYN]")
    hello = tcp(54321, 443, MixBuilder(1).client_hello("example.org"))
    assert (hello["app"], info(hello)) == (App.TLS, "TLS ClientHello SNI=example.org")


def test_a_segment_longer_than_64_kib_reads_the_same_in_both_decoders() -> None:
    """A TSO super-segment (IPv4 total length 0: to the end of the frame) of 70 000 bytes."""
    frame = bytearray(fb.tcp4(54321, 9999, 0x18) + bytes(70_000))
    frame[16:18] = b"\0\0"
    assert info(one(bytes(frame))) == "54321 → 9999 [PSH, ACK] len=70000"
