"""Hand-written application dissectors: payload bytes in, `info` text out (None: cannot read it).

The fast path calls these directly; the reference calls them only where dpkt refuses a payload.
So wherever dpkt accepts a payload, these must read exactly what dpkt reads: the DNS name walk,
the HTTP start line and the ClientHello extension walk below mirror dpkt 1.9.8 step by step
(including its quirks: names decoded after joining the labels, HTTP lines decoded as ASCII
ignoring other bytes, extensions walked while the offset is below the extensions length). Where
dpkt refuses, they read as far as the bytes allow: a DNS message with an HTTPS record, a
ClientHello split over two segments, a request whose headers continue in the next segment.

Every function accepts any bytes and returns text or None; none of them raises by design.
"""

from __future__ import annotations

from leireye.record import App

from .rules import (
    QUIC_SHORT,
    QUIC_VERSION_NEGOTIATION,
    address_text,
    clean,
    dhcp_text,
    dhcpv6_text,
    dns_text,
    http_request_text,
    http_response_text,
    ntp_text,
    quic_text,
    tls_text,
)

DHCP_MAGIC = 0x63825363


def dns_name(buf: bytes, off: int) -> tuple[str, int] | None:
    """The name at `off` and the offset after it, following compression pointers backwards only
    (as dpkt does: a pointer must point before the start of the labels being read)."""
    labels: list[bytes] = []
    saved = 0
    start = off
    total = 0
    size = len(buf)
    while True:
        if off >= size:
            return None
        n = buf[off]
        if n == 0:
            off += 1
            break
        kind = n & 0xC0
        if kind == 0xC0:
            if off + 2 > size:
                return None
            ptr = ((n & 0x3F) << 8) | buf[off + 1]
            if ptr >= start:
                return None
            off += 2
            if not saved:
                saved = off
            start = off = ptr
        elif kind == 0:
            off += 1
            if off + n > size:
                return None
            labels.append(buf[off : off + n])
            total += n + 1
            if total > 255:
                return None
            off += n
        else:
            return None
    return b".".join(labels).decode("utf-8", "backslashreplace"), saved or off


def skip_dns_name(buf: bytes, off: int) -> int | None:
    """The offset after the name at `off` without reading it: the same as `dns_name` gives for
    every name dpkt accepts (only the first question's name is shown)."""
    size = len(buf)
    while off < size:
        n = buf[off]
        if n == 0:
            return off + 1
        if n >= 0xC0:
            return off + 2 if off + 2 <= size else None
        if n & 0xC0:
            return None
        off += n + 1
    return None


def _answer_addresses(msg: bytes, off: int, count: int) -> list[str]:
    """The A and AAAA addresses among the first `count` records at `off`, up to the first that
    cannot be read."""
    addresses: list[str] = []
    size = len(msg)
    for _ in range(count):
        end = off + 2 if off < size and msg[off] >= 0xC0 else skip_dns_name(msg, off)
        if end is None or end + 10 > size:
            break
        rtype = (msg[end] << 8) | msg[end + 1]
        rdlen = (msg[end + 8] << 8) | msg[end + 9]
        off = end + 10
        if off + rdlen > size:
            break
        if (rtype == 1 and rdlen == 4) or (rtype == 28 and rdlen == 16):
            addresses.append(address_text(msg[off : off + rdlen]))
        off += rdlen
    return addresses


def dns_info(msg: bytes, label: str) -> str | None:
    """DNS, mDNS, LLMNR: the first question and the A/AAAA answers that could be read."""
    size = len(msg)
    if size < 12:
        return None
    qdcount = (msg[4] << 8) | msg[5]
    question: tuple[int, str] | None = None
    off: int | None = 12
    if qdcount:
        first = dns_name(msg, 12)
        if first is None or first[1] + 4 > size:
            return None
        off = first[1]
        question = ((msg[off] << 8) | msg[off + 1], first[0])
        off += 4
        for _ in range(qdcount - 1):
            off = skip_dns_name(msg, off)
            if off is None or off + 4 > size:
                off = None
                break
            off += 4
    addresses = _answer_addresses(msg, off, (msg[6] << 8) | msg[7]) if off is not None else []
    return dns_text(label, bool(msg[2] & 0x80), msg[3] & 0xF, question, addresses)


def first_line(payload: bytes) -> bytes:
    """The bytes before the first LF (all of them when there is none): what an HTTP, SSDP or
    SSH start line is read from."""
    end = payload.find(b"\n")
    return payload if end < 0 else payload[:end]


def http_request_info(payload: bytes) -> str | None:
    tokens = first_line(payload).decode("ascii", "ignore").strip().split()
    if len(tokens) < 2:
        return None
    return http_request_text(tokens[0], tokens[1])


def http_response_info(payload: bytes) -> str | None:
    parts = first_line(payload).strip().decode("ascii", "ignore").split(None, 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return None
    return http_response_text(parts[1], parts[2] if len(parts) > 2 else "")


def ssdp_info(payload: bytes) -> str | None:
    parts = first_line(payload).strip().decode("ascii", "ignore").split(None, 2)
    if len(parts) < 2:
        return None
    if parts[0].startswith("HTTP/"):
        return clean(" ".join(["SSDP", *parts[1:]]))
    return clean(f"SSDP {parts[0]} {parts[1]}")


def ssh_info(payload: bytes) -> str:
    line = first_line(payload).split(b"\r", 1)[0]
    return clean(line.decode("utf-8", "backslashreplace"))


def server_name(ext: bytes) -> str | None:
    """The host name in a server_name extension's data (its first entry, of type host_name)."""
    if len(ext) < 5 or ext[2] != 0:
        return None
    size = (ext[3] << 8) | ext[4]
    name = ext[5 : 5 + size]
    return name.decode("utf-8", "backslashreplace") if name else None


def client_hello_sni(body: bytes) -> str | None:
    """SNI from a ClientHello body (after the 4-byte handshake header), mirroring dpkt's walk."""
    if len(body) < 35:
        return None
    p = 35 + body[34]
    if p + 2 > len(body):
        return None
    p += 2 + ((body[p] << 8) | body[p + 1])
    if p + 1 > len(body):
        return None
    rest = body[p + 1 + body[p] :]
    if len(rest) < 6:
        return None
    total = (rest[0] << 8) | rest[1]
    q = 2
    while q < total:
        if q + 4 > len(rest):
            return None
        ext_type = (rest[q] << 8) | rest[q + 1]
        size = (rest[q + 2] << 8) | rest[q + 3]
        if ext_type == 0:
            return server_name(rest[q + 4 : q + 4 + size])
        q += 4 + size
    return None


def tls_info(payload: bytes) -> str:
    """A payload that starts with a TLS record header (5 bytes, checked by the caller)."""
    record_type = payload[0]
    if record_type != 22:
        return tls_text(record_type, None, None)
    record_len = (payload[3] << 8) | payload[4]
    if record_len < 1 or len(payload) < 6:
        return tls_text(22, None, None)
    handshake_type = payload[5]
    if handshake_type != 1 or record_len < 4 or len(payload) < 9:
        return tls_text(22, handshake_type, None)
    hs_len = (payload[6] << 16) | (payload[7] << 8) | payload[8]
    body = payload[9 : min(len(payload), 5 + record_len, 9 + hs_len)]
    return tls_text(22, 1, client_hello_sni(body))


def is_tls(payload: bytes) -> bool:
    return len(payload) >= 5 and 20 <= payload[0] <= 23 and payload[1] == 3 and payload[2] <= 4


def dhcp_message_type(options: bytes) -> int | None:
    """Option 53 (the first one) from the options after the magic cookie, walked as dpkt does."""
    i = 0
    size = len(options)
    while i < size:
        code = options[i]
        if code == 0xFF:
            return None
        if code == 0:
            i += 1
            continue
        if i + 1 >= size:
            return None
        n = options[i + 1]
        if code == 53:
            return options[i + 2] if n and i + 2 < size else None
        i += 2 + n
    return None


def dhcp_info(payload: bytes) -> str | None:
    if len(payload) < 240:
        return None
    magic = int.from_bytes(payload[236:240], "big")
    message_type = dhcp_message_type(payload[240:]) if magic == DHCP_MAGIC else None
    return dhcp_text(payload[0], message_type)


def dhcpv6_info(payload: bytes) -> str | None:
    return dhcpv6_text(payload[0]) if len(payload) >= 4 else None


def ntp_info(payload: bytes) -> str | None:
    return ntp_text(payload[0] & 7) if len(payload) >= 48 else None


def quic_info(payload: bytes) -> str | None:
    if not payload:
        return None
    first = payload[0]
    if not first & 0x80:
        return quic_text(QUIC_SHORT)
    if len(payload) < 5:
        return None
    return quic_text(QUIC_VERSION_NEGOTIATION if payload[1:5] == b"\0\0\0\0" else (first >> 4) & 3)


def udp_app_info(app: App, label: str, payload: bytes) -> str | None:
    """The dissector of a UDP service (`label` is the service name shown on failure)."""
    if app in (App.DNS, App.MDNS, App.LLMNR):
        return dns_info(payload, app.label)
    if app == App.DHCP:
        return dhcp_info(payload)
    if app == App.DHCPV6:
        return dhcpv6_info(payload)
    if app == App.NTP:
        return ntp_info(payload)
    if app == App.SSDP:
        return ssdp_info(payload)
    if app == App.QUIC:
        return quic_info(payload)
    return label


UDP_DISSECTED = frozenset(
    {App.DNS, App.MDNS, App.LLMNR, App.DHCP, App.DHCPV6, App.NTP, App.SSDP, App.QUIC}
)
