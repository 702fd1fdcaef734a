"""Packet filters: a client's `filters` object, validated once, applied as numpy masks.

`parse_filters` turns the JSON object of a `subscribe` into a `PacketFilter` or a `FilterError`
naming the offending field. A `PacketFilter` is frozen, hashable and canonical (two spellings of
the same filter compare equal), so a worker can group its sessions by filter and compute each
distinct mask once per batch of ring rows. `mask` never loops over packets in Python.

Keys (null means "no filter on this key"):

    protocol              a `Proto` label (TCP, UDP, ICMP, ICMPv6, ARP, IPv4, IPv6, SCTP, OTHER)
                          or an `App` label (DNS, HTTP, TLS, mDNS, ...), any case; it selects the
                          packets whose `protocol` (or `app`) field shows that label, so "IPv4"
                          means IPv4 carrying no TCP/UDP/ICMP, as in the packet messages
    src_ip, dst_ip, ip    an address or CIDR network, IPv4 or IPv6; `ip` matches either end.
                          IPv4 networks match IPv4 and ARP addresses, IPv6 networks IPv6 ones
    port, src_port,       0-65535; `port` matches either end; only packets with ports
    dst_port
    min_length,           bounds (inclusive) on the length on the wire
    max_length
    sensor                at a fleet central: a sensor name or a list of names (config.SensorName:
                          1-63 of A-Z a-z 0-9 _ -); a well-formed name the central's sensor table
                          does not hold (yet) matches nothing until it appears there. On a lone
                          sensor only its own `fleet.sensor` is accepted (it matches every
                          packet); any other name is refused ("not a fleet central")

`sensor` is resolved to ring indexes at mask time, through the worker's `SensorIndex` (the
`sensors.SensorDirectory`, re-read when the central's table changes), which the filter holds
beside its canonical names (not part of its identity). A user limited to some sensors
(`Principal.sensors`) gets their filter intersected with them by `parse_filters(allowed=...)`:
naming another sensor is refused, naming none means all of theirs.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt
from msgspec import ValidationError, convert

from leireye.config import SensorName
from leireye.record import APP_LABELS, F_HAS_ADDR, F_HAS_PORTS, IPV4_MAPPED_LO, PROTO_LABELS, App
from leireye.text import truncate

Mask = npt.NDArray[np.bool_]

_U64: Final = (1 << 64) - 1
_MAX_LENGTH: Final = (1 << 32) - 1
_QUOTED_CHARS: Final = 60  # of a client's key or value, in an error message
_PROTOCOLS: Final = {label.upper(): (label, value) for value, label in enumerate(PROTO_LABELS)}
_APPS: Final = {label.upper(): (label, value) for value, label in enumerate(APP_LABELS) if value}
_N_PROTO: Final = len(PROTO_LABELS)
_KEYS: Final = (
    "protocol",
    "src_ip",
    "dst_ip",
    "ip",
    "port",
    "src_port",
    "dst_port",
    "min_length",
    "max_length",
    "sensor",
)
MAX_SENSOR_NAMES: Final = 256  # names in one `sensor` filter


class SensorIndex(Protocol):
    """Ring indexes of sensor names (`sensors.SensorDirectory`)."""

    @property
    def central(self) -> bool: ...
    @property
    def own(self) -> str | None: ...
    def indexes(self, names: tuple[str, ...]) -> npt.NDArray[np.uint16]: ...


@dataclass(frozen=True, slots=True)
class FilterError:
    """`field` is the bad key ("port"; "filters" when the whole value is wrong), `message` says
    what is wrong and names the key too."""

    field: str
    message: str


@dataclass(frozen=True, slots=True)
class Network:
    """An address or CIDR network as masked compares on a record's (hi, lo) halves."""

    version: int
    hi: int
    lo: int
    hi_mask: int
    lo_mask: int
    text: str  # canonical: "10.0.0.0/8", a bare address for a single host

    @classmethod
    def parse(cls, text: str) -> Network:
        """Raises ValueError for anything `ipaddress.ip_network` refuses (host bits are
        allowed and cleared: "10.1.2.3/8" is "10.0.0.0/8")."""
        net = ipaddress.ip_network(text.strip(), strict=False)
        value, prefix = int(net.network_address), net.prefixlen
        if net.version == 4:
            mask128 = (_U64 << 64) | (0xFFFF_FFFF << 32) | (((1 << prefix) - 1) << (32 - prefix))
            value |= IPV4_MAPPED_LO
        else:
            mask128 = ((1 << prefix) - 1) << (128 - prefix)
        canon = str(net.network_address) if prefix == net.max_prefixlen else str(net)
        return cls(
            version=net.version,
            hi=value >> 64,
            lo=value & _U64,
            hi_mask=mask128 >> 64,
            lo_mask=mask128 & _U64,
            text=canon,
        )

    def match(self, hi: np.ndarray, lo: np.ndarray, ip_version: np.ndarray, has: Mask) -> Mask:
        """Which rows hold an address in this network (`has`: rows whose address is valid)."""
        m: Mask
        if self.version == 4:
            m = np.asarray(has & (ip_version != 6) & (hi == np.uint64(0)))
        else:
            m = np.asarray(has & (ip_version == 6))
        if self.version == 6 and self.hi_mask:
            m &= _masked_equal(hi, self.hi_mask, self.hi)
        if self.lo_mask:
            m &= _masked_equal(lo, self.lo_mask, self.lo)
        return m


def _masked_equal(column: np.ndarray, mask: int, value: int) -> Mask:
    if mask == _U64:
        return np.asarray(column == np.uint64(value))
    return np.asarray((column & np.uint64(mask)) == np.uint64(value))


@dataclass(frozen=True, slots=True)
class PacketFilter:
    """A validated, canonical filter; the empty filter (all None) matches every packet."""

    protocol: str | None = None  # canonical label
    src_ip: Network | None = None
    dst_ip: Network | None = None
    ip: Network | None = None
    port: int | None = None
    src_port: int | None = None
    dst_port: int | None = None
    min_length: int | None = None
    max_length: int | None = None
    sensor: tuple[str, ...] | None = None  # sorted names; resolved through `sensors`
    sensors: SensorIndex | None = field(default=None, compare=False, hash=False, repr=False)

    def as_dict(self) -> dict[str, str | int | list[str]]:
        """The filter as applied, for the `subscribed` echo: canonical labels and networks,
        keys in a fixed order, unset keys left out (`sensor`: one name, or a sorted list)."""
        out: dict[str, str | int | list[str]] = {}
        for key in _KEYS:
            value = getattr(self, key)
            if isinstance(value, tuple):
                out[key] = value[0] if len(value) == 1 else list(value)
            elif value is not None:
                out[key] = value.text if isinstance(value, Network) else value
        return out

    def mask(self, records: np.ndarray) -> Mask:
        """Which rows of a RECORD_DTYPE array pass, vectorised over the whole batch."""
        m: Mask = np.ones(len(records), dtype=np.bool_)
        if self.sensor is not None:
            if self.sensors is None:
                m[:] = False
            else:
                m &= np.isin(records["sensor"], self.sensors.indexes(self.sensor))
        if self.protocol is not None:
            m &= _protocol_mask(self.protocol, records)
        if self.min_length is not None:
            m &= records["wire_len"] >= self.min_length
        if self.max_length is not None:
            m &= records["wire_len"] <= self.max_length
        if self.port is not None or self.src_port is not None or self.dst_port is not None:
            m &= (records["flags"] & F_HAS_PORTS) != 0
            if self.port is not None:
                m &= (records["src_port"] == self.port) | (records["dst_port"] == self.port)
            if self.src_port is not None:
                m &= records["src_port"] == self.src_port
            if self.dst_port is not None:
                m &= records["dst_port"] == self.dst_port
        if self.src_ip is not None or self.dst_ip is not None or self.ip is not None:
            has = (records["flags"] & F_HAS_ADDR) != 0
            version = records["ip_version"]
            if self.src_ip is not None:
                m &= self.src_ip.match(records["src_hi"], records["src_lo"], version, has)
            if self.dst_ip is not None:
                m &= self.dst_ip.match(records["dst_hi"], records["dst_lo"], version, has)
            if self.ip is not None:
                m &= self.ip.match(records["src_hi"], records["src_lo"], version, has) | (
                    self.ip.match(records["dst_hi"], records["dst_lo"], version, has)
                )
        return m


_EMPTY: Final = PacketFilter()


def _protocol_mask(label: str, records: np.ndarray) -> Mask:
    key = label.upper()
    if key in _PROTOCOLS:
        value = _PROTOCOLS[key][1]
        if value == 0:  # OTHER: also values this code has no label for (shown as "OTHER")
            return np.asarray((records["proto"] == 0) | (records["proto"] >= _N_PROTO))
        return np.asarray(records["proto"] == value)
    return np.asarray(records["app"] == _APPS[key][1])


def protocol_names() -> tuple[str, ...]:
    """Every label `protocol` accepts, transport labels first."""
    return (*PROTO_LABELS, *(a.label for a in App if a))


def parse_filters(
    obj: Any, sensors: SensorIndex | None = None, allowed: tuple[str, ...] | None = None
) -> PacketFilter | FilterError:
    """Validate a `filters` object (a dict decoded from JSON, or None for no filter). `sensors`:
    what `sensor` resolves through (None: no sensor filter is possible here); `allowed`: the
    sensors the user may see (None: every one), which the filter is narrowed to."""
    if obj is None and allowed is None:
        return _EMPTY
    if obj is None:
        obj = {}
    if not isinstance(obj, dict):
        return FilterError("filters", "filters must be an object")
    values: dict[str, Any] = {}
    for key, raw in obj.items():
        if key not in _KEYS:
            central = sensors is not None and sensors.central
            known = _KEYS if central else _KEYS[:-1]  # `sensor` is for a central
            return FilterError(
                truncate(str(key), _QUOTED_CHARS),
                f"Unknown filter {_short(key)}; known: {', '.join(known)}",
            )
        if raw is None:
            continue
        if key == "sensor":
            names = _parse_sensor(raw, sensors)
            if isinstance(names, FilterError):
                return names
            values[key] = names
            continue
        parsed = _parse_value(key, raw)
        if isinstance(parsed, FilterError):
            return parsed
        values[key] = parsed
    low, high = values.get("min_length"), values.get("max_length")
    if low is not None and high is not None and high < low:
        return FilterError("max_length", f"max_length {high} is below min_length {low}")
    if allowed is not None:
        asked = values.get("sensor")
        outside = sorted(set(asked or ()) - set(allowed))
        if outside:
            return FilterError(
                "sensor",
                f"sensor {outside[0]!r} is not one you may see; yours: {', '.join(allowed)}",
            )
        values["sensor"] = asked or tuple(sorted(set(allowed)))
    if values.get("sensor") is not None:
        values["sensors"] = sensors
    return PacketFilter(**values)


_SensorNames = list[SensorName]


def _parse_sensor(raw: Any, sensors: SensorIndex | None) -> tuple[str, ...] | FilterError:
    """A name or a list of names: sorted, without repeats; refused unless this is a central or
    the names are this lone sensor's own."""
    given = [raw] if isinstance(raw, str) else raw
    if not isinstance(given, list) or not 1 <= len(given) <= MAX_SENSOR_NAMES:
        return FilterError(
            "sensor", f"sensor must be a sensor name or a list of 1 to {MAX_SENSOR_NAMES} names"
        )
    try:
        names = tuple(sorted(set(convert(given, _SensorNames))))
    except ValidationError:
        bad = next((n for n in given if not _is_sensor_name(n)), given[0])
        return FilterError(
            "sensor",
            f"sensor: {_short(bad)} is not a sensor name (1-63 letters, digits, _ and -,"
            " beginning with a letter or digit)",
        )
    if sensors is not None and sensors.central:
        return names
    own = None if sensors is None else sensors.own
    if own is not None and names == (own,):
        return names
    this = f"; this is sensor {own!r} and shows its own packets only" if own else ""
    return FilterError("sensor", f"sensor: not a fleet central{this}")


def _is_sensor_name(value: object) -> bool:
    try:
        convert(value, SensorName)
    except ValidationError:
        return False
    return True


def _parse_value(key: str, raw: Any) -> str | int | Network | FilterError:
    if key == "protocol":
        if isinstance(raw, str):
            found = _PROTOCOLS.get(raw.upper()) or _APPS.get(raw.upper())
            if found is not None:
                return found[0]
        return FilterError(
            key, f"protocol {_short(raw)} is not known; known: {', '.join(protocol_names())}"
        )
    if key in ("src_ip", "dst_ip", "ip"):
        if isinstance(raw, str) and len(raw) <= 64:
            try:
                return Network.parse(raw)
            except ValueError:
                pass
        return FilterError(key, f"{key}: {_short(raw)} is not an IP address or CIDR network")
    top = 65535 if key.endswith("port") else _MAX_LENGTH
    if type(raw) is not int or not 0 <= raw <= top:
        return FilterError(key, f"{key} must be an integer from 0 to {top}, not {_short(raw)}")
    return raw


def _short(value: object) -> str:
    """A client's value shown in an error message, cut so the message stays small."""
    return truncate(repr(value), _QUOTED_CHARS)
