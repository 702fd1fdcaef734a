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
    sensor              a sensor name, or several (a list, or names joined by commas): the
                        sensor that saw the flow (a fleet central's store; config.SensorName)

`parse_flow_filter` takes the values as texts (a query string, CLI options) or JSON values and
raises `FilterValueError` naming the key. `where` gives SQL text with `?` placeholders and the
values to bind: nothing a client sends is ever spliced into the SQL text.

Addresses are compared as 128-bit numbers held in two unsigned 64-bit columns (`ip_halves`:
`orig_hi`, `orig_lo`, ...), an IPv4 address mapped into ::ffff:0:0/96, so that a network is one
range and a one-host query two integer equalities that DuckDB pushes into the Parquet scan and
the row-group statistics prune with (16-byte binary keys were ~10x slower to scan).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from leireye.errors import LeirEyeError
from leireye.flows.model import Flow
from leireye.record import APP_LABELS, PROTO_LABELS

FLOW_FILTER_KEYS: Final = (
    "protocol", "src_ip", "dst_ip", "ip", "port", "src_port", "dst_port", "vlan", "min_bytes",
    "min_duration_ms", "state", "sensor",
)  # fmt: skip
SENSOR_NAMES_MAX: Final = 256  # names in one `sensor` filter
_SENSOR_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")  # config.SensorName
CONN_STATES: Final = frozenset(
    ["S0", "S1", "SF", "REJ", "S2", "S3", "RSTO", "RSTR", "RSTOS0", "RSTRH", "SH", "SHR", "OTH"]
)
_TRANSPORTS: Final = {label.upper(): label for label in PROTO_LABELS}
_APPS: Final = {label.upper(): label for value, label in enumerate(APP_LABELS) if value}
_INT_MAX: Final = {
    "port": 65535, "src_port": 65535, "dst_port": 65535, "vlan": 4095,
    "min_bytes": 2**62, "min_duration_ms": 2**40,
}  # fmt: skip
_MAPPED_V4: Final = 0xFFFF << 32
_U64: Final = (1 << 64) - 1
IpSide = Literal["orig_only", "resp"]


class FilterValueError(LeirEyeError):
    """A flow filter key or value that is refused; `key` names it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def ip_number(address: str) -> int:
    """An address as a 128-bit number (IPv4 mapped into ::ffff:0:0/96)."""
    parsed = ipaddress.ip_address(address)
    return _MAPPED_V4 | int(parsed) if parsed.version == 4 else int(parsed)


def ip_halves(address: str) -> tuple[int, int]:
    """The two unsigned 64-bit columns of an address: (high, low)."""
    number = ip_number(address)
    return number >> 64, number & _U64


@dataclass(frozen=True, slots=True)
class KeyRange:
    """An address or CIDR network as the inclusive range of its 128-bit numbers."""

    low: int
    high: int
    text: str

    @classmethod
    def parse(cls, text: str) -> KeyRange:
        """Raises ValueError for what `ipaddress.ip_network` refuses (host bits are cleared)."""
        net = ipaddress.ip_network(text.strip(), strict=False)
        first, last = net.network_address, net.broadcast_address
        canon = str(first) if net.prefixlen == net.max_prefixlen else str(net)
        return cls(ip_number(str(first)), ip_number(str(last)), canon)

    def contains(self, number: int) -> bool:
        return self.low <= number <= self.high

    def sql(self, side: str) -> tuple[str, list[object]]:
        """The test on columns `{side}_hi`, `{side}_lo`. A network is aligned: either both
        ends share the high half, or the low halves span all of it."""
        low_hi, low_lo = self.low >> 64, self.low & _U64
        high_hi, high_lo = self.high >> 64, self.high & _U64
        if low_hi != high_hi:
            return f"({side}_hi BETWEEN ?::UBIGINT AND ?::UBIGINT)", [low_hi, high_hi]
        if low_lo == high_lo:
            return f"({side}_hi = ?::UBIGINT AND {side}_lo = ?::UBIGINT)", [low_hi, low_lo]
        text = f"({side}_hi = ?::UBIGINT AND {side}_lo BETWEEN ?::UBIGINT AND ?::UBIGINT)"
        return text, [low_hi, low_lo, high_lo]


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
    sensor: tuple[str, ...] | None = None  # sorted names, without repeats

    def as_dict(self) -> dict[str, str | int | list[str]]:
        out: dict[str, str | int | list[str]] = {}
        for key in FLOW_FILTER_KEYS:
            value = getattr(self, key)
            if isinstance(value, tuple):
                out[key] = list(value)
            elif value is not None:
                out[key] = value.text if isinstance(value, KeyRange) else value
        return out

    def where(self, ip_side: IpSide | None = None) -> tuple[str, list[object]]:
        """SQL conditions (joined by AND; "TRUE" when empty) over the flows table's columns,
        and the values for their `?` placeholders, in order. With `ip_side`, `ip` is tested
        on one end: "orig_only" (the originator, and not the responder), or "resp", so that a
        query can be two scans whose filters DuckDB pushes down, rather than one with an OR."""
        parts: list[str] = []
        values: list[object] = []
        if self.protocol is not None:
            column = "transport" if self.protocol.upper() in _TRANSPORTS else "app"
            parts.append(f"{column} = ?")
            values.append(self.protocol)
        tests: list[tuple[KeyRange | None, str, str]] = [
            (self.src_ip, "orig", "{}"),
            (self.dst_ip, "resp", "{}"),
        ]
        if ip_side == "orig_only":
            tests += [(self.ip, "orig", "{}"), (self.ip, "resp", "NOT {}")]
        elif ip_side == "resp":
            tests.append((self.ip, "resp", "{}"))
        elif self.ip is not None:
            orig, orig_values = self.ip.sql("orig")
            resp, resp_values = self.ip.sql("resp")
            parts.append(f"({orig} OR {resp})")
            values += orig_values + resp_values
        for key_range, side, shape in tests:
            if key_range is not None:
                text, found = key_range.sql(side)
                parts.append(shape.format(text))
                values += found
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
        if self.sensor is not None:  # () (a user limited to no sensor): nothing
            parts.append(
                f"sensor IN ({', '.join('?' * len(self.sensor))})" if self.sensor else "FALSE"
            )
            values += self.sensor
        return (" AND ".join(parts) or "TRUE"), values

    def matches(self, flow: Flow) -> bool:
        """The same test on one flow (the live flows, which are not in the store)."""
        if self.protocol is not None and self.protocol not in (flow.transport, flow.app):
            return False
        orig, resp = ip_number(flow.orig_ip), ip_number(flow.resp_ip)
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
        if self.sensor is not None and flow.sensor not in self.sensor:
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
    if key == "sensor":
        return _sensors(raw, shown)
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


def _sensors(raw: object, shown: str) -> tuple[str, ...]:
    """A name, names joined by commas, or a list of names: sorted, without repeats."""
    given = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(given, list) or not 1 <= len(given) <= SENSOR_NAMES_MAX:
        raise FilterValueError(
            "sensor", f"sensor must be a sensor name or a list of 1 to {SENSOR_NAMES_MAX} names"
        )
    for name in given:
        if not isinstance(name, str) or _SENSOR_NAME.fullmatch(name) is None:
            raise FilterValueError(
                "sensor",
                f"sensor: {repr(name)[:60]} is not a sensor name (1-63 letters, digits, _ and -,"
                " beginning with a letter or digit)",
            )
    return tuple(sorted(set(given)))
