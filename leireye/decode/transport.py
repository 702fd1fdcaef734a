"""The fast path's transport and application stages (see `decode` for the shape of a stage)."""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from leireye.record import F_HAS_ICMP, F_HAS_ICMP_ID, F_HAS_PORTS, App, DecodeError

from . import fastapp, rules
from .chunk import Chunk, Index, Ints, select
from .dissect import UDP_DISSECTED
from .names import HTTP_METHODS, TCP_SERVICES, UDP_SERVICES


class _Services:
    """A well-known-port table as arrays: port -> service id -> (name, app)."""

    def __init__(self, services: dict[int, tuple[str, App]]) -> None:
        ids: dict[tuple[str, App], int] = {}
        self.names: list[str] = [""]
        apps = [App.NONE]
        self.by_port = np.zeros(65536, dtype=np.int64)
        for port, entry in services.items():
            if entry not in ids:
                ids[entry] = len(self.names)
                self.names.append(entry[0])
                apps.append(entry[1])
            self.by_port[port] = ids[entry]
        self.apps = np.array(apps, dtype=np.uint8)
        self.dissected = np.array([app in UDP_DISSECTED for app in apps], dtype=bool)

    def lookup(self, sport: Ints, dport: Ints) -> Ints:
        """The service id of the lower port, else of the higher port (0: none)."""
        low = self.by_port[np.minimum(sport, dport)]
        return np.where(low != 0, low, self.by_port[np.maximum(sport, dport)])


_TCP: Final = _Services(TCP_SERVICES)
_UDP: Final = _Services(UDP_SERVICES)
_SSH_WORD: Final = int.from_bytes(b"SSH-", "big")
_HTTP_FIRST: Final = np.zeros(256, dtype=bool)
_HTTP_FIRST[[m[0] for m in (*HTTP_METHODS, b"HTTP")]] = True
_HTTP_WORDS: Final = np.array(
    sorted(
        {int.from_bytes((m + b" ")[:4], "big") for m in HTTP_METHODS}
        | {int.from_bytes(b"HTTP", "big")}
    ),
    dtype=np.int64,
)
_ICMP_ID: Final = np.array([[t in types for t in range(256)] for types in rules.ICMP_ID_TYPES])
_KNOWN: Final = np.zeros(256, dtype=bool)
_KNOWN[list(rules.TRANSPORT_PROTO)] = True


def transport(c: Chunk) -> None:
    if not c.l4:
        return
    ix, l4, end, declared_end = (np.concatenate(parts) for parts in zip(*c.l4, strict=True))
    proto = c.ip_proto[ix].astype(np.int64)
    for number, stage in ((6, _tcp), (17, _udp), (132, _sctp), (1, _icmp), (58, _icmp)):
        m = proto == number
        if m.any():
            stage(c, ix[m], l4[m], end[m], declared_end[m])
    other = ~_KNOWN[proto]
    keys = (c.ip_version[ix[other]].astype(np.int64) << 8) | proto[other]
    c.by_key(ix[other], keys, lambda key: rules.ip_other_text(key >> 8, key & 0xFF))


def _ports(c: Chunk, ix: Index, l4: Ints) -> tuple[Ints, Ints]:
    sport, dport = c.at(c.u16, ix, l4), c.at(c.u16, ix, l4 + 2)
    c.sport[ix], c.dport[ix] = sport, dport
    c.flags[ix] |= F_HAS_PORTS
    return sport, dport


def _tcp(c: Chunk, ix: Index, l4: Ints, end: Ints, declared_end: Ints) -> None:
    ok = c.need(ix, l4, 20, end, "TCP")
    ix, l4, end, declared_end = select(ok, ix, l4, end, declared_end)
    word = c.at(c.u16, ix, l4 + 12)
    data_off = (word >> 12) * 4
    bad = data_off < 20
    c.mark_where(ix, bad, DecodeError.MALFORMED, "TCP")
    ix, l4, end, declared_end, word, data_off = select(
        ~bad, ix, l4, end, declared_end, word, data_off
    )
    sport, dport = _ports(c, ix, l4)
    flags = word & 0x1FF
    c.tcp_flags[ix] = flags
    ok = c.need(ix, l4, data_off, end, "TCP")
    ix, sport, dport, flags, end, declared_end, begin = select(
        ok, ix, sport, dport, flags, end, declared_end, l4 + data_off
    )
    _tcp_app(c, ix, begin, end, declared_end, sport, dport, flags)


def _tcp_app(
    c: Chunk,
    ix: Index,
    begin: Ints,
    end: Ints,
    declared_end: Ints,
    sport: Ints,
    dport: Ints,
    flags: Ints,
) -> None:
    size = end - begin
    length = declared_end - begin
    word = c.at(c.u32, ix, begin)
    first, version = word >> 24, (word >> 8) & 0xFFFF
    tls = (size >= 5) & (first >= 20) & (first <= 23) & (version >= 0x0300) & (version <= 0x0304)
    handshake = tls & (first == 22)
    record = tls & ~handshake
    ssh = (size >= 4) & (word == _SSH_WORD)
    http = (size >= 4) & _HTTP_FIRST[first & 0xFF]
    http[http] = (word[http, None] == _HTTP_WORDS).any(axis=1)
    sid = _TCP.lookup(sport, dport)
    other = http | ((_TCP.apps[sid] == App.DNS) & (size > 0) & ~tls & ~ssh)
    plain = ~(tls | ssh | other)
    c.app[ix[record]] = App.TLS
    c.by_key(ix[record], first[record], lambda kind: rules.tls_text(kind, None, None))
    port_app = plain & (sid != 0) & (length > 0)
    c.app[ix[port_app]] = _TCP.apps[sid[port_app]]
    _tcp_ports_info(c, ix[plain], sport[plain], dport[plain], flags[plain], length[plain])
    if ssh.any():
        c.set_results(ix[ssh], [fastapp.ssh(p) for p in c.payloads(ix[ssh], begin[ssh], end[ssh])])
    if handshake.any():
        _tls_handshakes(c, ix[handshake], begin[handshake], end[handshake])
    if other.any():
        cut = declared_end[other] > c.cap[ix[other]]
        results = fastapp.tcp_payloads(
            c.blob,
            *c.spans(ix[other], begin[other], end[other]),
            sport[other].tolist(),
            dport[other].tolist(),
            flags[other].tolist(),
            length[other].tolist(),
            cut.tolist(),
        )
        c.set_results(ix[other], results)


_NO_HANDSHAKE: Final = 256


def _tls_handshake_text(key: int) -> str:
    return rules.tls_text(22, None if key == _NO_HANDSHAKE else key, None)


def _tls_handshakes(c: Chunk, ix: Index, begin: Ints, end: Ints) -> None:
    """Handshake records (`dissect.tls_info`): only a ClientHello's text depends on more than
    its header (the SNI), so the others are settled by their handshake type in bulk."""
    c.app[ix] = App.TLS
    size = end - begin
    record_len = c.at(c.u16, ix, begin + 3)
    kind = c.at(c.u8, ix, begin + 5)
    empty = (record_len < 1) | (size < 6)
    hello = ~empty & (kind == 1) & (record_len >= 4) & (size >= 9)
    header = ~hello
    c.by_key(ix[header], np.where(empty, _NO_HANDSHAKE, kind)[header], _tls_handshake_text)
    if hello.any():
        payloads = c.payloads(ix[hello], begin[hello], end[hello])
        c.set_results(ix[hello], [fastapp.tls(p) for p in payloads])


_PORT_ARROW: Final = np.array([b"%d \xe2\x86\x92 " % port for port in range(65536)], dtype="S10")
_PORT_TEXT: Final = np.array([b"%d" % port for port in range(65536)], dtype="S5")
_FLAG_TEXT: Final = np.array([b" [%s]" % flags for flags in rules.FLAG_BYTES])
_LENGTH_TEXT: Final = np.array([b""] + [b" len=%d" % n for n in range(1, 65536)], dtype="S10")


def _tcp_ports_info(
    c: Chunk, ix: Index, sport: Ints, dport: Ints, flags: Ints, length: Ints
) -> None:
    """`rules.tcp_ports_bytes` of many segments, joined by numpy's string ufuncs and copied into
    the records as one array (a Python `%` and a bytes object per segment cost ~7 % of the
    decoder's speed once most TCP segments read this way)."""
    add = np.strings.add
    texts = add(add(_PORT_ARROW[sport], _PORT_TEXT[dport]), _FLAG_TEXT[flags])
    data = length > 0
    c.set_info_array(ix[~data], texts[~data])
    c.set_info_array(ix[data], add(texts[data], _LENGTH_TEXT[np.minimum(length[data], 65535)]))
    long = np.flatnonzero(length > 65535)  # a jumbo or TSO segment: rare
    if long.size:
        ports = rules.tcp_ports_bytes
        c.set_info(
            ix[long],
            [ports(*(int(a[i]) for a in (sport, dport, flags, length))) for i in long.tolist()],
        )


def _udp(c: Chunk, ix: Index, l4: Ints, end: Ints, declared_end: Ints) -> None:
    ok = c.need(ix, l4, 8, end, "UDP")
    ix, l4, end, declared_end = select(ok, ix, l4, end, declared_end)
    sport, dport = _ports(c, ix, l4)
    begin = l4 + 8
    sid = _UDP.lookup(sport, dport)
    apps = _UDP.apps[sid]
    c.app[ix] = apps
    anonymous = sid == 0
    length = (declared_end - begin)[anonymous]
    ports = rules.udp_ports_bytes
    c.set_info(
        ix[anonymous],
        [
            ports(s, d, n)
            for s, d, n in zip(
                sport[anonymous].tolist(), dport[anonymous].tolist(), length.tolist(), strict=True
            )
        ],
    )
    dissected = _UDP.dissected[sid]
    named = ~anonymous & ~dissected
    c.by_key(ix[named], sid[named], lambda key: _UDP.names[key])
    cut = declared_end > c.cap[ix]
    for app in np.unique(apps[dissected]).tolist():
        m = dissected & (apps == app)
        _udp_dissect(c, ix[m], App(app), int(sid[m][0]), begin[m], end[m], cut[m])


def _udp_dissect(
    c: Chunk, ix: Index, app: App, sid: int, begin: Ints, end: Ints, cut: npt.NDArray[np.bool_]
) -> None:
    """One UDP service's payloads: the one-byte rules in bulk, the others one by one."""
    size = end - begin
    first = c.at(c.u8, ix, begin)
    if app == App.NTP:
        ok = size >= 48
        c.by_key(ix[ok], first[ok] & 7, rules.ntp_text)
    elif app == App.DHCPV6:
        ok = size >= 4
        c.by_key(ix[ok], first[ok], rules.dhcpv6_text)
    elif app == App.QUIC:
        short = (size >= 1) & (first & 0x80 == 0)
        long = (size >= 5) & (first & 0x80 != 0)
        zero_version = c.at(c.u32, ix, begin + 1) == 0
        kind = np.where(
            short,
            rules.QUIC_SHORT,
            np.where(zero_version, rules.QUIC_VERSION_NEGOTIATION, (first >> 4) & 3),
        )
        ok = short | long
        c.by_key(ix[ok], kind[ok], rules.quic_text)
    elif app in rules.DNS_APPS:
        texts, errors = fastapp.dns(app, c.blob, *c.spans(ix, begin, end), cut.tolist())
        c.set_texts(ix, app, texts, errors)
        return
    else:
        name, payloads = _UDP.names[sid], c.payloads(ix, begin, end)
        results = [
            fastapp.udp_payload(app, name, p, t)
            for p, t in zip(payloads, cut.tolist(), strict=True)
        ]
        c.set_results(ix, results)
        return
    c.app_failed(ix[~ok], app, cut[~ok])


def _sctp(c: Chunk, ix: Index, l4: Ints, end: Ints, declared_end: Ints) -> None:
    ix, l4 = (a[c.need(ix, l4, 12, end, "SCTP")] for a in (ix, l4))
    sport, dport = _ports(c, ix, l4)
    c.set_info(
        ix,
        [
            fastapp.text(rules.sctp_text(s, d))
            for s, d in zip(sport.tolist(), dport.tolist(), strict=True)
        ],
    )


def _icmp(c: Chunk, ix: Index, l4: Ints, end: Ints, declared_end: Ints) -> None:
    v6 = c.ip_proto[ix[0]] == 58
    ok = c.need(ix, l4, 4, end, "ICMPv6" if v6 else "ICMP")
    ix, l4 = ix[ok], l4[ok]
    icmp_type, code = c.at(c.u8, ix, l4), c.at(c.u8, ix, l4 + 1)
    c.icmp_type[ix], c.icmp_code[ix] = icmp_type, code
    c.flags[ix] |= F_HAS_ICMP
    c.by_key(ix, (icmp_type << 8) | code, lambda key: rules.icmp_text(v6, key >> 8, key & 0xFF))
    at = l4 + rules.ICMP_ID_OFFSET
    carried = _ICMP_ID[int(v6), icmp_type] & (at + 2 <= end[ok])
    ix, at = ix[carried], at[carried]
    c.sport[ix] = c.dport[ix] = c.at(c.u16, ix, at)
    c.flags[ix] |= F_HAS_ICMP_ID
