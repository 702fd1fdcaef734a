"""What a flow query asks for: a validated `FlowFilter`, and the same filter as SQL or as a test
of one live `Flow`.

The keys are the packet filter's (docs/api.md, the WebSocket `filters`) read on a flow, where
`src` is the originator and `dst` the responder, plus the flow's own:

    protocol            a transport label (TCP, UDP, ICMP, ...) or an app label (DNS, TLS, ...)
    src_ip, dst_ip, ip  an address or CIDR network; `ip` matches either end
    port, src_port,     0-65535; `port` matches either end
    dst_port
    vlan                0-4095
    min_bytes           both directions together, at least this many bytes
    min_duration_ms     lasting at least this long
    state               Zeek's conn_state (S0, SF, REJ, ...)

`parse_flow_filter` takes the values as texts (a query string, CLI options) or JSON values and
raises `FilterValueError` naming the key. `where` gives SQL text with `?` placeholders and the
values to bind: nothing a client sends is ever spliced into the SQL text.

Addresses are compared as 16-byte keys (`ip_key`): an IPv6 address's bytes, an IPv4 address
mapped into ::ffff:0:0/96, so that a network is one range of keys and a one-host query is an
equality the Parquet row-group statistics can prune with.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from leireye.errors import LeirEyeError
from leireye.flows.model import Flow
from leireye.record import APP_LABELS, PROTO_LABELS

FLOW_FILTER_KEYS: Final = (
    "protocol", "src_ip", "dst_ip", "ip", "port", "src_port", "dst_port", "vlan", "min_bytes",
    "min_duration_ms", "state",
)  # fmt: skip
CONN_STATES: Final = frozenset(
    ["S0", "S1", "SF", "REJ", "S2", "S3", "RSTO", "RSTR", "RSTOS0", "RSTRH", "SH", "SHR", "OTH"]
)
_TRANSPORTS: Final = {label.upper(): label for label in PROTO_LABELS}
_APPS: Final = {label.upper(): label for value, label in enumerate(APP_LABELS) if value}
_INT_MAX: Final = {
    "port": 65535, "src_port": 65535, "dst_port": 65535, "vlan": 4095,
    "min_bytes": 2**62, "min_duration_ms": 2**40,
}  # fmt: skip
_MAPPED_V4: Final = b"\x00" * 10 + b"\xff\xff"


class FilterValueError(LeirEyeError):
    """A flow filter key or value that is refused; `key` names it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def ip_key(address: str) -> bytes:
    """The 16-byte sort key of an address (IPv4 mapped into ::ffff:0:0/96)."""
    parsed = ipaddress.ip_address(address)
    if parsed.version == 4:
        return _MAPPED_V4 + parsed.packed
    return parsed.packed


@dataclass(frozen=True, slots=True)
class KeyRange:
    """An address or CIDR network as the inclusive range of its 16-byte keys."""

    low: bytes
    high: bytes
    text: str

    @classmethod
    def parse(cls, text: str) -> KeyRange:
        """Raises ValueError for what `ipaddress.ip_network` refuses (host bits are cleared)."""
        net = ipaddress.ip_network(text.strip(), strict=False)
        first, last = net.network_address, net.broadcast_address
        canon = str(first) if net.prefixlen == net.max_prefixlen else str(net)
        return cls(ip_key(str(first)), ip_key(str(last)), canon)

    def contains(self, key: bytes) -> bool:
        return self.low <= key <= self.high


@dataclass(frozen=True, slots=True)
class FlowFilter:
    """A validated flow filter; all None matches every flow."""

    protocol: str | None = None
    src_ip: KeyRange | None = None
    dst_ip: KeyRange | None = None
    ip: KeyRange | None = None
    port: int | None = None
    src_port: int | None = None
    dst_port: int | None = None
    vlan: int | None = None
    min_bytes: int | None = None
    min_duration_ms: int | None = None
    state: str | None = None

    def as_dict(self) -> dict[str, str | int]:
        out: dict[str, str | int] = {}
        for key in FLOW_FILTER_KEYS:
            value = getattr(self, key)
            if value is not None:
                out[key] = value.text if isinstance(value, KeyRange) else value
        return out

    def where(self) -> tuple[str, list[object]]:
        """SQL conditions (joined by AND; "TRUE" when empty) over the flows table's columns,
        and the values for their `?` placeholders, in order."""
        parts: list[str] = []
        values: list[object] = []
        if self.protocol is not None:
            column = "transport" if self.protocol.upper() in _TRANSPORTS else "app"
            parts.append(f"{column} = ?")
            values.append(self.protocol)
        for key_range, columns in (
            (self.src_ip, ("orig_key",)),
            (self.dst_ip, ("resp_key",)),
            (self.ip, ("orig_key", "resp_key")),
        ):
            if key_range is None:
                continue
            if key_range.low == key_range.high:
                tests = [f"{column} = ?" for column in columns]
                values.extend(key_range.low for _ in columns)
            else:
                tests = [f"({column} BETWEEN ? AND ?)" for column in columns]
                for _ in columns:
                    values.extend((key_range.low, key_range.high))
            parts.append("(" + " OR ".join(tests) + ")")
        if self.port is not None:
            parts.append("(orig_port = ? OR resp_port = ?)")
            values.extend((self.port, self.port))
        for value, sql in (
            (self.src_port, "orig_port = ?"),
            (self.dst_port, "resp_port = ?"),
            (self.vlan, "vlan = ?"),
            (self.min_bytes, "bytes >= ?"),
            (self.state, "conn_state = ?"),
        ):
            if value is not None:
                parts.append(sql)
                values.append(value)
        if self.min_duration_ms is not None:
            parts.append("duration_ns >= ?")
            values.append(self.min_duration_ms * 1_000_000)
        return (" AND ".join(parts) or "TRUE"), values

    def matches(self, flow: Flow) -> bool:
        """The same test on one flow (the live flows, which are not in the store)."""
        if self.protocol is not None and self.protocol not in (flow.transport, flow.app):
            return False
        orig, resp = ip_key(flow.orig_ip), ip_key(flow.resp_ip)
        if self.src_ip is not None and not self.src_ip.contains(orig):
            return False
        if self.dst_ip is not None and not self.dst_ip.contains(resp):
            return False
        if self.ip is not None and not (self.ip.contains(orig) or self.ip.contains(resp)):
            return False
        if self.port is not None and self.port not in (flow.orig_port, flow.resp_port):
            return False
        for wanted, value in (
            (self.src_port, flow.orig_port),
            (self.dst_port, flow.resp_port),
            (self.vlan, flow.vlan),
            (self.state, flow.conn_state),
        ):
            if wanted is not None and wanted != value:
                return False
        if self.min_bytes is not None and flow.orig_bytes + flow.resp_bytes < self.min_bytes:
            return False
        duration_ms = self.min_duration_ms
        return duration_ms is None or flow.duration_ns >= duration_ms * 1_000_000


def parse_time_ns(text: str) -> int:
    """A time as a query gives it: ISO 8601 (UTC unless it has a zone) or Unix seconds;
    nanoseconds since the epoch. ValueError for anything else."""
    if text.replace(".", "", 1).isdigit() and len(text) <= 24:
        return int(float(text) * 1e9) if "." in text else int(text) * 10**9
    try:
        stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text[:40]!r} is not an ISO 8601 time nor Unix seconds") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return int(stamp.timestamp()) * 10**9 + stamp.microsecond * 1000


def parse_flow_filter(values: Mapping[str, object]) -> FlowFilter:
    """A `FlowFilter` from texts or JSON values (None or "" means the key is not set)."""
    parsed: dict[str, object] = {}
    for key, raw in values.items():
        if key not in FLOW_FILTER_KEYS:
            raise FilterValueError(
                key[:60], f"Unknown filter {key[:60]!r}; known: {', '.join(FLOW_FILTER_KEYS)}"
            )
        if raw is None or raw == "":
            continue
        parsed[key] = _value(key, raw)
    return FlowFilter(**parsed)  # type: ignore[arg-type]


def _value(key: str, raw: object) -> object:
    shown = repr(raw)[:60]
    if key == "protocol":
        text = raw.upper() if isinstance(raw, str) else ""
        found = _TRANSPORTS.get(text) or _APPS.get(text)
        if found is None:
            known = ", ".join((*PROTO_LABELS, *_APPS.values()))
            raise FilterValueError(key, f"protocol {shown} is not known; known: {known}")
        return found
    if key in ("src_ip", "dst_ip", "ip"):
        if isinstance(raw, str) and len(raw) <= 64:
            try:
                return KeyRange.parse(raw)
            except ValueError:
                pass
        raise FilterValueError(key, f"{key}: {shown} is not an IP address or CIDR network")
    if key == "state":
        if isinstance(raw, str) and raw.upper() in CONN_STATES:
            return raw.upper()
        raise FilterValueError(key, f"state {shown} is not one of {', '.join(sorted(CONN_STATES))}")
    top = _INT_MAX[key]
    number = raw if type(raw) is int else None
    if isinstance(raw, str) and raw.isdigit() and len(raw) <= 19:
        number = int(raw)
    if number is None or not 0 <= number <= top:
        raise FilterValueError(key, f"{key} must be an integer from 0 to {top}, not {shown}")
    return number
