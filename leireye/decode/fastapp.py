"""The per-packet part of the fast path: payloads whose `info` needs a dissector.

The batch stages settle most packets with masks (a pure ACK on 443 is "54321 → 443 [ACK]", a
TLS record of type 23 is "TLS Application Data"); the packets left over come here one by one: SSH
banners, TLS handshakes, HTTP start lines, DNS and the UDP dissectors that read more than a byte.
Each function returns `(app, info, error)` and never raises: a dissector's own exception becomes
INTERNAL.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Final

from leireye.record import App, DecodeError, encode_info

from . import dissect, rules
from .names import HTTP_METHODS

Result = tuple[App, bytes, DecodeError]

_REQUEST_PREFIXES: Final = tuple(method + b" " for method in HTTP_METHODS)


@lru_cache(maxsize=4096)
def text(value: str) -> bytes:
    """`value` as stored in a record; cached, for texts that repeat."""
    return encode_info(value)


@lru_cache(maxsize=4096)
def arp_text(op: int, sender: int | None, target: int, sender_mac: int) -> bytes:
    """`rules.arp_text` stored; cached, as ARP repeats the same questions."""
    return encode_info(rules.arp_text(op, sender, target, sender_mac))


def _failed(app: App, cut: bool) -> Result:
    error = DecodeError.TRUNCATED if cut else DecodeError.APP_PARSE
    return app, text(rules.error_text(app.label, error)), error


def _dissect(app: App, read: Callable[[bytes], str | None], payload: bytes, cut: bool) -> Result:
    try:
        info = read(payload)
    except Exception:  # a dissector's own bug: recorded per packet, never raised
        return app, text(rules.error_text(app.label, DecodeError.INTERNAL)), DecodeError.INTERNAL
    if info is None:
        return _failed(app, cut)
    return app, encode_info(info), DecodeError.NONE


def _dns_over_tcp(payload: bytes) -> str | None:
    return dissect.dns_info(payload[2:], "DNS")


def tcp_payload(
    payload: bytes, sport: int, dport: int, flags: int, length: int, cut: bool
) -> Result:
    """The application rule for a TCP segment whose payload may carry recognisable content."""
    if payload.startswith(b"SSH-"):
        return _dissect(App.SSH, dissect.ssh_info, payload, cut)
    if dissect.is_tls(payload):
        return _dissect(App.TLS, dissect.tls_info, payload, cut)
    if payload.startswith(_REQUEST_PREFIXES):
        return _by_first_line(dissect.http_request_info, payload, cut)
    if payload.startswith(b"HTTP/"):
        return _by_first_line(dissect.http_response_info, payload, cut)
    found = rules.tcp_service(sport, dport)
    if found is not None and found[1] == App.DNS and payload:
        return _dissect(App.DNS, _dns_over_tcp, payload, cut)
    app = rules.tcp_port_app(sport, dport, length)
    return app, rules.tcp_ports_bytes(sport, dport, flags, length), DecodeError.NONE


def tcp_payloads(
    blob: bytes,
    begin: list[int],
    end: list[int],
    sport: list[int],
    dport: list[int],
    flags: list[int],
    length: list[int],
    cut: list[bool],
) -> list[Result]:
    """`tcp_payload` of each `blob[a:b]`, an HTTP start line seen before answered from the cache
    of texts without a call."""
    cache = _LINE_CACHE
    request, response = dissect.http_request_info, dissect.http_response_info
    results: list[Result] = []
    append = results.append
    for k, (a, b) in enumerate(zip(begin, end, strict=True)):
        payload = blob[a:b]
        if payload.startswith(_REQUEST_PREFIXES):
            read = request
        elif payload.startswith(b"HTTP/"):
            read = response
        else:
            append(tcp_payload(payload, sport[k], dport[k], flags[k], length[k], cut[k]))
            continue
        line = payload.find(b"\n")
        found = cache.get((read, payload if line < 0 else payload[:line]))
        if found is not None:
            append((App.HTTP, found, DecodeError.NONE))
        else:
            append(_by_first_line(read, payload, cut[k]))
    return results


_LINE_CACHE: dict[tuple[Callable[[bytes], str | None], bytes], bytes] = {}
_CACHE_SIZE: Final = 8192


def _by_first_line(read: Callable[[bytes], str | None], payload: bytes, cut: bool) -> Result:
    """HTTP start lines repeat (polling, health checks, the same pages): their texts, which
    depend on the first line only, are kept."""
    key = (read, dissect.first_line(payload))
    found = _LINE_CACHE.get(key)
    if found is not None:
        return App.HTTP, found, DecodeError.NONE
    result = _dissect(App.HTTP, read, payload, cut)
    if result[2] == DecodeError.NONE:
        if len(_LINE_CACHE) >= _CACHE_SIZE:
            _LINE_CACHE.clear()
        _LINE_CACHE[key] = result[1]
    return result


def udp_payload(app: App, name: str, payload: bytes, cut: bool) -> Result:
    """The dissector of a UDP service that has one (`dissect.UDP_DISSECTED`)."""
    return _dissect(app, lambda data: dissect.udp_app_info(app, name, data), payload, cut)


def ssh(payload: bytes) -> Result:
    return _dissect(App.SSH, dissect.ssh_info, payload, False)


def tls(payload: bytes) -> Result:
    return _dissect(App.TLS, dissect.tls_info, payload, False)


_DNS_CACHES: Final[dict[App, dict[bytes, bytes]]] = {app: {} for app in rules.DNS_APPS}


def dns(
    app: App, blob: bytes, begin: list[int], end: list[int], cut: list[bool]
) -> tuple[list[bytes], list[int] | None]:
    """DNS, mDNS, LLMNR over UDP: the texts of the messages `blob[a:b]`, and their errors (None
    when every one was read). Messages that differ only in their id read the same, and names
    are asked for again and again: the texts of the messages read before are kept (keyed by the
    message after its id), so most messages cost one slice and one look-up."""
    cache = _DNS_CACHES[app]
    texts: list[bytes | None] = list(
        map(cache.get, [blob[a + 2 : b] for a, b in zip(begin, end, strict=True)])
    )
    if None not in texts:
        return texts, None  # type: ignore[return-value]  # no None left
    label = app.label
    errors = [DecodeError.NONE] * len(texts)
    for k, found in enumerate(texts):
        if found is not None:
            continue
        a, b = begin[k], end[k]
        _, info, error = _dissect(
            app, lambda data: dissect.dns_info(data, label), blob[a:b], cut[k]
        )
        texts[k], errors[k] = info, error
        if error == DecodeError.NONE:
            if len(cache) >= _CACHE_SIZE:
                cache.clear()
            cache[blob[a + 2 : b]] = info
    return texts, errors  # type: ignore[return-value]  # every None replaced
