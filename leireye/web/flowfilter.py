"""Flow filters and the `updated` throttle of the `flows` channel: pure, over `FLOW_ROW` arrays.

A `flows` subscription takes the packet filter grammar (`filters.py`), read for a flow:

    protocol              the flow's transport label (TCP, UDP, ICMP, ...) or its application
                          label (DNS, TLS, ...), any case
    src_ip, dst_ip, ip    the originator's, the responder's, either address (address or CIDR)
    port, src_port,       either port, the originator's, the responder's (flows with ports)
    dst_port

plus three keys of its own:

    min_bytes             bytes both ways together, at least (0 .. 2^64-1)
    min_duration_ms       `last - first`, at least, in milliseconds
    state                 a Zeek `conn_state` (S0, S1, SF, REJ, S2, S3, RSTO, RSTR, RSTOS0,
                          RSTRH, SH, SHR, OTH), any case

`min_length` and `max_length` (of one packet) mean nothing for a flow and are refused with
`invalid_filter`, as is any other key. Each event is judged on the flow as that event shows it:
with `min_bytes` a client first hears of a flow from the event that shows it past the bound
(an `updated` or its `ended`), never its `started`.

`Throttle` holds, for one group of subscribers, when each flow last had an event through: an
`updated` event passes only when `interval_ms` has gone by since then; `started` and `ended`
always pass (and `ended` forgets the flow).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from leireye.flows.tcpstate import CONN_STATE_INDEX, CONN_STATES
from leireye.flows.view import ENDED, STARTED, UPDATED
from leireye.text import truncate
from leireye.web.filters import (
    FilterError,
    Mask,
    PacketFilter,
    _protocol_mask,
    parse_filters,
)

_U64: Final = (1 << 64) - 1
_QUOTED_CHARS: Final = 60
_PACKET_KEYS: Final = ("protocol", "src_ip", "dst_ip", "ip", "port", "src_port", "dst_port")
_FLOW_KEYS: Final = ("min_bytes", "min_duration_ms", "state")
KEYS: Final = (*_PACKET_KEYS, *_FLOW_KEYS)
_LENGTHS: Final = ("min_length", "max_length")  # of one packet: refused, with a hint
_STATES: Final = {name.upper(): name for name in CONN_STATES if name}
_MAX_DURATION_MS: Final = 10**12
_ANY: Final = PacketFilter()


@dataclass(frozen=True, slots=True)
class FlowFilter:
    """A validated, canonical flow filter (hashable: subscribers group by it)."""

    packet: PacketFilter = _ANY
    min_bytes: int | None = None
    min_duration_ms: int | None = None
    state: str | None = None

    def as_dict(self) -> dict[str, str | int | list[str]]:
        out = self.packet.as_dict()
        for key in _FLOW_KEYS:
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    def mask(self, rows: np.ndarray) -> Mask:
        """Which `FLOW_ROW` rows pass, vectorised."""
        p = self.packet
        m: Mask = np.ones(len(rows), dtype=np.bool_)
        if p.protocol is not None:
            m &= _protocol_mask(p.protocol, rows)
        if p.port is not None or p.src_port is not None or p.dst_port is not None:
            m &= rows["has_ports"] != 0
            if p.port is not None:
                m &= (rows["orig_port"] == p.port) | (rows["resp_port"] == p.port)
            if p.src_port is not None:
                m &= rows["orig_port"] == p.src_port
            if p.dst_port is not None:
                m &= rows["resp_port"] == p.dst_port
        if p.src_ip is not None or p.dst_ip is not None or p.ip is not None:
            has = np.ones(len(rows), dtype=np.bool_)
            version = rows["ip_version"]
            orig = rows["orig_hi"], rows["orig_lo"], version, has
            resp = rows["resp_hi"], rows["resp_lo"], version, has
            if p.src_ip is not None:
                m &= p.src_ip.match(*orig)
            if p.dst_ip is not None:
                m &= p.dst_ip.match(*resp)
            if p.ip is not None:
                m &= p.ip.match(*orig) | p.ip.match(*resp)
        if self.min_bytes is not None:
            total = rows["orig_bytes"] + rows["resp_bytes"]
            m &= total >= np.uint64(self.min_bytes)
        if self.min_duration_ms is not None:
            m &= (rows["last_ns"] - rows["first_ns"]) >= self.min_duration_ms * 1_000_000
        if self.state is not None:
            m &= rows["conn_state"] == CONN_STATE_INDEX[self.state]
        return m


def parse_flow_filters(obj: Any) -> FlowFilter | FilterError:
    """Validate the `filters` object of a `flows` subscription (None: every flow)."""
    if obj is None:
        return FlowFilter()
    if not isinstance(obj, dict):
        return FilterError("filters", "filters must be an object")
    for key in obj:
        if key not in KEYS:
            shown = truncate(str(key), _QUOTED_CHARS)
            why = " (of one packet; flows take min_bytes)" if key in _LENGTHS else ""
            return FilterError(
                shown,
                f"Unknown flow filter {_short(key)}{why}; known: {', '.join(KEYS)}",
            )
    packet = parse_filters({k: v for k, v in obj.items() if k in _PACKET_KEYS})
    if isinstance(packet, FilterError):
        return packet
    values: dict[str, Any] = {}
    for key in _FLOW_KEYS:
        raw = obj.get(key)
        if raw is None:
            continue
        if key == "state":
            if not isinstance(raw, str) or raw.upper() not in _STATES:
                return FilterError(
                    key, f"state {_short(raw)} is not known; known: {', '.join(_STATES.values())}"
                )
            values[key] = _STATES[raw.upper()]
            continue
        top = _U64 if key == "min_bytes" else _MAX_DURATION_MS
        if type(raw) is not int or not 0 <= raw <= top:
            return FilterError(key, f"{key} must be an integer from 0 to {top}, not {_short(raw)}")
        values[key] = raw
    return FlowFilter(packet, **values)


def _short(value: object) -> str:
    return truncate(repr(value), _QUOTED_CHARS)


class Throttle:
    """At most one `updated` event per flow per `interval_ms` for one group (see above)."""

    def __init__(self, interval_ms: int, max_flows: int) -> None:
        self.interval_s = interval_ms / 1000
        self.max_flows = max(1, max_flows)
        self._last: dict[int, float] = {}  # uid -> when its last event passed

    def __len__(self) -> int:
        return len(self._last)

    def passes(self, kinds: np.ndarray, uids: np.ndarray, now: float) -> Mask:
        """Which of these events (in order) go through, at time `now` (seconds)."""
        out: Mask = np.ones(len(kinds), dtype=np.bool_)
        if self.interval_s <= 0:
            return out
        last = self._last
        since = now - self.interval_s
        for i, (kind, uid) in enumerate(zip(kinds.tolist(), uids.tolist(), strict=True)):
            if kind == UPDATED:
                if last.get(uid, -np.inf) > since:
                    out[i] = False
                    continue
                last[uid] = now
            elif kind == STARTED:
                last[uid] = now
            elif kind == ENDED:
                last.pop(uid, None)
        if len(last) > self.max_flows:
            # Entries older than the interval hold nothing back: forgetting them is free (it
            # bounds the flows whose `ended` this group never saw).
            self._last = {uid: t for uid, t in last.items() if t > since}
        return out
