"""The first application fields of a flow, read back from a record's `info` and raw bytes.

The decoder has already dissected the packet: its `info` text says `DNS response A name NXDOMAIN
→ 192.0.2.1`, `TLS ClientHello SNI=name`, `HTTP GET /path` or the SSH banner (`rules.dns_text`,
`rules.tls_text`, `rules.http_request_text`, `dissect.ssh_info` make them). What `info` does not
hold, the HTTP `Host` header and the TLS ALPN list, is looked for in the frame's first bytes the
ring keeps (`ring.raw_bytes`, 256 by default): a ClientHello whose ALPN extension lies past them,
or a Host header past them, is not seen (the field stays None).
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Final

import numpy as np

from leireye.decode.names import DNS_RCODES
from leireye.record import App

if TYPE_CHECKING:
    from .table import FlowTable


def distinct(values: np.ndarray) -> np.ndarray:
    """As `table.distinct` (which imports this module)."""
    ordered = np.sort(values)
    return ordered[np.r_[True, ordered[1:] != ordered[:-1]]] if len(ordered) else ordered


DNS_LIKE: Final = frozenset({App.DNS, App.MDNS, App.LLMNR})
_RCODE_NAMES: Final = frozenset(DNS_RCODES.values())
ARROW: Final = " → "

# Field bits of a flow (`Fields.mask`): which fields it has, so a later packet is not read again.
DNS_QUERY, DNS_RCODE, TLS_SNI, TLS_ALPN, HTTP, SSH = (1 << i for i in range(6))
ALL: Final = 0x3F


def read_fields(
    table: FlowTable, app: np.ndarray, rslot: np.ndarray, info: np.ndarray, raw: np.ndarray | None
) -> None:
    """Set the first application fields of the flows in `rslot` from the records that carry
    one, and collect the names observed (`table.names`). Masks over the first bytes of `info`
    pick those records; per flow only the first of a kind is read; each distinct DNS answer
    text of the batch is read once for its names (through a small cache of texts read)."""
    if len(app) == 0:
        return
    fmask = table.fmask[rslot]
    start = np.ascontiguousarray(info).view(np.uint8).reshape(len(info), -1)[:, :16].copy()
    head = start.view("S16").reshape(-1)
    first: list[np.ndarray] = []
    for kind, bit, prefix in _FIRSTS:
        pick = np.flatnonzero((app == kind) & ((fmask & bit) == 0))
        if len(pick):
            pick = pick[np.char.startswith(head[pick], prefix)]
            if kind == App.HTTP:  # a request, not a response ("HTTP 200 OK")
                pick = pick[(start[pick, 5] < ord("0")) | (start[pick, 5] > ord("9"))]
            _, at = np.unique(rslot[pick], return_index=True)
            first.append(pick[at])
    dns = np.flatnonzero(np.isin(app, _DNS_APPS))
    if len(dns):
        response = np.char.find(head[dns], b" response") >= 0
        for bit, mask in ((DNS_QUERY, True), (DNS_RCODE, response)):
            lacking = dns[((fmask[dns] & bit) == 0) & mask]
            _, at = np.unique(rslot[lacking], return_index=True)
            first.append(lacking[at])
        answered = dns[np.char.find(info[dns], ARROW.encode()) >= 0]
        for text in np.unique(info[answered]).tolist():  # names, whatever the flow
            _, name, _, addresses = _dns_cached(text)
            if name:
                table.names.extend((address, name) for address in addresses)
    if first:
        for i in distinct(np.concatenate(first)).tolist():
            slot, app_id = int(rslot[i]), int(app[i])
            _read(table, slot, app_id, bytes(info[i]), raw[i] if raw is not None else None)


_FIRSTS: Final = (
    (App.TLS, 1 << 2, b"TLS ClientHello"),
    (App.HTTP, 1 << 4, b"HTTP "),
    (App.SSH, 1 << 5, b"SSH-"),
)
_DNS_APPS: Final = np.array([App.DNS, App.MDNS, App.LLMNR], dtype=np.uint8)
_DNS_CACHE: dict[bytes, tuple[bool, str | None, str | None, list[str]]] = {}
_CACHE_SIZE: Final = 8192


def _dns_cached(info: bytes) -> tuple[bool, str | None, str | None, list[str]]:
    parsed = _DNS_CACHE.get(info)
    if parsed is None:
        parsed = dns(info.decode("utf-8", "replace"))
        if len(_DNS_CACHE) >= _CACHE_SIZE:
            _DNS_CACHE.clear()
        _DNS_CACHE[info] = parsed
    return parsed


def _read(table: FlowTable, slot: int, kind: int, info: bytes, raw: np.ndarray | None) -> None:
    got = table.fields.get(slot) or {}
    have = int(table.fmask[slot])
    if kind in DNS_LIKE:
        response, name, rcode, _ = _dns_cached(info)
        if name and not have & DNS_QUERY:
            got["dns_query"] = name
            have |= DNS_QUERY
        if response and rcode and not have & DNS_RCODE:
            got["dns_rcode"] = rcode
            have |= DNS_RCODE
    else:
        text = info.decode("utf-8", "replace")
        if kind == App.TLS and not have & TLS_SNI:
            have |= TLS_SNI
            if sni := tls_sni(text):
                got["tls_sni"] = sni
                table.names.append((table.resp_ip(slot), sni))
            if raw is not None and (alpn := tls_alpn(raw.tobytes())):
                got["tls_alpn"] = alpn
        elif kind == App.HTTP and not have & HTTP and (request := http_request(text)):
            have |= HTTP
            got["http_method"], got["http_path"] = request
            if raw is not None and (host := http_host(raw.tobytes())):
                got["http_host"] = host
                if (name := host_name(host)) is not None:
                    table.names.append((table.resp_ip(slot), name))
        elif kind == App.SSH and not have & SSH:
            have |= SSH
            got["ssh_banner"] = text
    table.fmask[slot] = have
    if got:
        table.fields[slot] = got


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


def host_name(host: str) -> str | None:
    """The name in an HTTP Host value (port dropped); None when it is an address."""
    name = host[1 : host.find("]")] if host.startswith("[") else host.rsplit(":", 1)[0]
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name or None
    return None


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
