"""The first application fields of a flow, read back from a record's `info` and raw bytes.

The decoder has already dissected the packet: its `info` text says `DNS response A name NXDOMAIN
→ 192.0.2.1`, `TLS ClientHello SNI=name`, `HTTP GET /path` or the SSH banner (`rules.dns_text`,
`rules.tls_text`, `rules.http_request_text`, `dissect.ssh_info` make them). What `info` does not
hold, the HTTP `Host` header and the TLS ALPN list, is looked for in the frame's first bytes the
ring keeps (`ring.raw_bytes`, 256 by default): a ClientHello whose ALPN extension lies past them,
or a Host header past them, is not seen (the field stays None).
"""

from __future__ import annotations

from typing import Final

from leireye.decode.names import DNS_RCODES
from leireye.record import App

DNS_LIKE: Final = frozenset({App.DNS, App.MDNS, App.LLMNR})
_RCODE_NAMES: Final = frozenset(DNS_RCODES.values())
ARROW: Final = " → "

# Field bits of a flow (`Fields.mask`): which fields it has, so a later packet is not read again.
DNS_QUERY, DNS_RCODE, TLS_SNI, TLS_ALPN, HTTP, SSH = (1 << i for i in range(6))
ALL: Final = 0x3F


def dns(info: str) -> tuple[bool, str | None, str | None, list[str]]:
    """(response, query name, rcode for a response, answer addresses) of a DNS `info`."""
    text, _, answers = info.partition(ARROW)
    words = text.split(" ")
    if len(words) < 2 or words[1] not in ("query", "response"):
        return False, None, None, []
    response = words[1] == "response"
    rcode = "NOERROR" if response else None
    name: str | None = None
    rest = words[3:] if len(words) >= 4 else []
    if rest and response and (rest[-1] in _RCODE_NAMES or rest[-1].startswith("RCODE")):
        rcode = rest[-1]
        rest = rest[:-1]
    if rest:
        name = " ".join(rest)
    addresses = answers.split(", ") if answers else []
    return response, name, rcode, addresses


def tls_sni(info: str) -> str | None:
    _, found, name = info.partition("TLS ClientHello SNI=")
    return name if found and name else None


def http_request(info: str) -> tuple[str, str] | None:
    words = info.split(" ", 2)
    if len(words) < 3 or words[0] != "HTTP" or words[1].isdigit():
        return None
    return words[1], words[2]


def http_host(raw: bytes) -> str | None:
    at = raw.find(b"\r\nHost:")
    if at < 0:
        at = raw.lower().find(b"\r\nhost:")
        if at < 0:
            return None
    end = raw.find(b"\r", at + 7)
    if end < 0:
        return None  # cut: the name may go on past the kept bytes
    name = raw[at + 7 : end].strip().decode("ascii", "replace")
    return name or None


def tls_alpn(raw: bytes) -> str | None:
    """The ALPN protocols (comma-joined) of a ClientHello found in `raw`, when whole there."""
    at = raw.find(b"\x16\x03")
    while at >= 0:
        if len(raw) > at + 9 and raw[at + 5] == 1:
            return _alpn(raw[at + 9 :])
        at = raw.find(b"\x16\x03", at + 1)
    return None


def _alpn(body: bytes) -> str | None:
    """The walk of `dissect.client_hello_sni`, stopping at extension 16 instead of 0."""
    if len(body) < 35:
        return None
    p = 35 + body[34]
    if p + 2 > len(body):
        return None
    p += 2 + ((body[p] << 8) | body[p + 1])
    if p + 1 > len(body):
        return None
    p += 1 + body[p]
    q = p + 2
    while q + 4 <= len(body):
        ext_type = (body[q] << 8) | body[q + 1]
        size = (body[q + 2] << 8) | body[q + 3]
        if ext_type == 16:
            data = body[q + 4 : q + 4 + size]
            if len(data) < size or size < 2:
                return None
            names, i = [], 2
            while i < len(data):
                n = data[i]
                names.append(data[i + 1 : i + 1 + n].decode("utf-8", "replace"))
                i += 1 + n
            return ",".join(names) or None
        q += 4 + size
    return None
