"""One flow as a fixed-size row: what the table reports, the shared memory holds, and `Flow` is
built from.

A row is a copy of a flow at one moment (ended, or a snapshot of an active one). Fixed size, so
that a batch of them is one numpy array the view copies into shared memory as is, and the web
workers turn into `Flow` structs only for what a client asks for. Texts are UTF-8, NUL-padded,
cut to their column (the application fields of a flow are short in practice; a longer HTTP path
is cut).
"""

from __future__ import annotations

import functools
import socket
from typing import TYPE_CHECKING, Final

import numpy as np

from leireye.record import APP_LABELS, NO_VLAN, PROTO_LABELS, Proto

from . import tcpstate
from .model import EndReason, Flow

if TYPE_CHECKING:
    from .table import FlowTable

FLOW_ROW: Final = np.dtype(
    [
        ("uid", "<u8"),
        ("first_ns", "<i8"),
        ("last_ns", "<i8"),
        ("orig_hi", "<u8"),
        ("orig_lo", "<u8"),
        ("resp_hi", "<u8"),
        ("resp_lo", "<u8"),
        ("orig_pkts", "<u8"),
        ("orig_bytes", "<u8"),
        ("resp_pkts", "<u8"),
        ("resp_bytes", "<u8"),
        ("vlan", "<u2"),
        ("orig_port", "<u2"),
        ("resp_port", "<u2"),
        ("seen", "<u2"),  # history letters seen, bit letter + 6 * direction
        ("icmp_id", "<i4"),  # the ICMP identifier the flow is keyed by; -1 when none
        ("ip_version", "u1"),
        ("proto", "u1"),  # record.Proto of the transport
        ("ip_proto", "u1"),
        ("app", "u1"),
        ("has_ports", "u1"),
        ("state", "u1"),  # tcpstate: orig_state * 7 + resp_state
        ("conn_state", "u1"),  # index into tcpstate.CONN_STATES
        ("end_reason", "u1"),  # index into END_REASONS (0: active)
        ("history", "S16"),
        ("dns_query", "S64"),
        ("dns_rcode", "S12"),
        ("tls_sni", "S64"),
        ("tls_alpn", "S32"),
        ("http_host", "S64"),
        ("http_method", "S12"),
        ("http_path", "S64"),
        ("ssh_banner", "S48"),
    ],
    align=False,
)

TEXT_FIELDS: Final = (
    "dns_query",
    "dns_rcode",
    "tls_sni",
    "tls_alpn",
    "http_host",
    "http_method",
    "http_path",
    "ssh_banner",
)
END_REASONS: Final[tuple[EndReason | None, ...]] = (
    None,
    "fin",
    "rst",
    "idle",
    "active",
    "evicted",
    "shutdown",
)
END_INDEX: Final = {reason: i for i, reason in enumerate(END_REASONS)}
TRANSPORTS: Final = {Proto.TCP, Proto.UDP, Proto.ICMP, Proto.ICMPV6, Proto.SCTP}


def _conn_table() -> np.ndarray:
    """TCP conn_state by (state, orig sent data, resp sent data), the history-free cases."""
    table = np.zeros((tcpstate.N_STATES**2, 2, 2), dtype=np.uint8)
    for state in range(tcpstate.N_STATES**2):
        for o in (0, 1):
            for r in (0, 1):
                name = tcpstate.tcp_conn_state(state, "", bool(o), bool(r))
                table[state, o, r] = tcpstate.CONN_STATE_INDEX[name]
    return table


_TCP_CONN: Final = _conn_table()
_ORIG_D: Final = 1 << tcpstate.D
_RESP_D: Final = 1 << (tcpstate.D + 6)


def fill_conn_state(rows: np.ndarray) -> None:
    """Set `conn_state` of every row from its state, letters and history."""
    seen = rows["seen"]
    orig_d = (seen & _ORIG_D) != 0
    resp_d = (seen & _RESP_D) != 0
    other = np.full(len(rows), tcpstate.CONN_STATE_INDEX["OTH"], dtype=np.uint8)
    udp = np.where(orig_d, np.where(resp_d, 3, 1), np.where(resp_d, 12, 13)).astype(np.uint8)
    tcp = _TCP_CONN[rows["state"], orig_d.astype(np.intp), resp_d.astype(np.intp)]
    proto = rows["proto"]
    rows["conn_state"] = np.where(proto == Proto.TCP, tcp, np.where(proto == Proto.UDP, udp, other))
    # RSTOS0 depends on the order of the letters: the rare rows that may be it, one by one.
    maybe = (proto == Proto.TCP) & (rows["conn_state"] == tcpstate.CONN_STATE_INDEX["OTH"])
    maybe &= rows["state"] // tcpstate.N_STATES == tcpstate.RESET
    for i in np.flatnonzero(maybe).tolist():
        row = rows[i]
        name = tcpstate.tcp_conn_state(
            int(row["state"]), row["history"].decode(), bool(orig_d[i]), bool(resp_d[i])
        )
        rows["conn_state"][i] = tcpstate.CONN_STATE_INDEX[name]


def uid_text(uid: int) -> str:
    return f"C{uid:016x}"


def _text(value: bytes) -> str | None:
    return value.decode("utf-8", "replace") if value else None


_NO_TEXTS: Final = dict.fromkeys(TEXT_FIELDS)


@functools.lru_cache(maxsize=65536)  # the same servers and clients come back flow after flow
def ip_text(hi: int, lo: int, ip_version: int) -> str:
    """`record.halves_to_ip`, ~20 times faster (socket.inet_ntop instead of ipaddress)."""
    if ip_version != 6 and hi == 0 and (lo >> 32) == 0xFFFF:
        return socket.inet_ntop(socket.AF_INET, (lo & 0xFFFF_FFFF).to_bytes(4, "big"))
    return socket.inet_ntop(socket.AF_INET6, ((hi << 64) | lo).to_bytes(16, "big"))


def to_flows(rows: np.ndarray) -> list[Flow]:
    """`Flow` structs of `rows` (one Python step per row)."""
    flows: list[Flow] = []
    for row in rows.tolist():
        (uid, first, last, ohi, olo, rhi, rlo, op, ob, rp, rb, vlan, oport, rport, _seen,
         icmp_id, ipv, proto, _ipp, app, has_ports, _state, conn, end, history,
         *texts) = row  # fmt: skip
        fields = _NO_TEXTS
        if any(texts):
            fields = {name: _text(value) for name, value in zip(TEXT_FIELDS, texts, strict=True)}
        icmp = proto in (Proto.ICMP, Proto.ICMPV6)
        flows.append(
            Flow(
                uid=uid_text(uid),
                vlan=None if vlan == NO_VLAN else vlan,
                transport=PROTO_LABELS[proto] if proto in TRANSPORTS else "OTHER",
                ip_version=ipv,
                orig_ip=ip_text(ohi, olo, ipv),
                orig_port=oport if has_ports or icmp else None,
                resp_ip=ip_text(rhi, rlo, ipv),
                resp_port=rport if has_ports or icmp else None,
                icmp_id=icmp_id if icmp_id >= 0 else None,
                app=APP_LABELS[app] or None,
                first_ns=first,
                last_ns=last,
                orig_pkts=op,
                orig_bytes=ob,
                resp_pkts=rp,
                resp_bytes=rb,
                conn_state=tcpstate.CONN_STATES[conn] or None,
                history=history.decode("ascii"),
                end_reason=END_REASONS[end],
                **fields,
            )
        )
    return flows


def table_rows(t: FlowTable, slots: np.ndarray) -> np.ndarray:
    """FLOW_ROW copies of the flows in `slots` of `t` (active ones: `end_reason` 0)."""
    out = np.zeros(len(slots), dtype=FLOW_ROW)
    a = t.orig_a[slots]
    out["uid"], out["first_ns"], out["last_ns"] = t.uid[slots], t.first_ns[slots], \
        t.last_ns[slots]  # fmt: skip
    out["orig_hi"] = np.where(a, t.a_hi[slots], t.b_hi[slots])
    out["orig_lo"] = np.where(a, t.a_lo[slots], t.b_lo[slots])
    out["resp_hi"] = np.where(a, t.b_hi[slots], t.a_hi[slots])
    out["resp_lo"] = np.where(a, t.b_lo[slots], t.a_lo[slots])
    out["orig_port"] = np.where(a, t.a_port[slots], t.b_port[slots])
    out["resp_port"] = np.where(a, t.b_port[slots], t.a_port[slots])
    icmp = np.isin(t.proto[slots], (Proto.ICMP, Proto.ICMPV6))
    out["orig_port"][icmp] = t.icmp_tc[slots[icmp], 0]
    out["resp_port"][icmp] = t.icmp_tc[slots[icmp], 1]
    out["orig_pkts"], out["resp_pkts"] = t.pkts[slots, 0], t.pkts[slots, 1]
    out["orig_bytes"], out["resp_bytes"] = t.bytes[slots, 0], t.bytes[slots, 1]
    for name in ("vlan", "seen", "icmp_id", "ipver", "proto", "ipp", "app", "has_ports", "state"):
        target = {"ipver": "ip_version", "ipp": "ip_proto"}.get(name, name)
        out[target] = getattr(t, name)[slots]
    chars = tcpstate.HISTORY_CHARS[t.hist[slots]]
    chars[np.arange(12) >= t.hist_len[slots][:, None]] = 0
    flipped = t.flipped[slots]
    history = np.zeros((len(slots), 16), dtype=np.uint8)
    history[~flipped, :12] = chars[~flipped]
    history[flipped, 0] = ord("^")
    history[flipped, 1:13] = chars[flipped]
    out["history"] = history.view("S16").reshape(-1)
    fill_conn_state(out)
    for i in np.flatnonzero(t.fmask[slots] != 0).tolist():
        for name, value in t.fields.get(int(slots[i]), {}).items():
            if name in TEXT_FIELDS:
                out[name][i] = value.encode("utf-8", "replace")[: FLOW_ROW[name].itemsize]
    return out
