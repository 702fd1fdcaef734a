"""What the flow layer produces: one `Flow` per conversation, and per-minute summaries.

These structs are the contract between the flow process (which builds them), the flow store
(which keeps the ended ones and the summaries), the web workers (REST and the `flows` WebSocket
channel) and the CLI (`leireye flows`, `leireye hosts`). Times are integers in nanoseconds since
the Unix epoch (UTC); the wire and REST add ISO texts where they show them.

A flow is bidirectional and keyed by (VLAN, transport, the two address/port pairs; ICMP by
type/id). The *originator* is the side that sent the first packet seen (for TCP, the SYN's sender
when the SYN was seen). Byte counts are frame bytes on the wire (`wire_len`), as
`tshark -z conv` counts them (not Zeek's payload bytes). `conn_state` and `history` follow Zeek's
conn.log letters (S0, S1, SF, REJ, RSTO, RSTR, RSTOS0, RSTRH, SH, SHR, S2, S3, OTH;
`ShADadFfRr…`). For ICMP, `orig_port` holds the type and `resp_port` the code, as in Zeek;
`icmp_id` the identifier of the messages that carry one (echo request and reply; for ICMP also
timestamp, information and address mask), which keys the flow with the folded type: two pings
at once between the same hosts are two flows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import msgspec
import numpy as np

EndReason = Literal["fin", "rst", "idle", "active", "evicted", "shutdown"]
"""Why a flow record ended: TCP teardown (FIN both ways, or a RST), no packet for the transport's
idle timeout, the active timeout (a long flow reported and continued under the same uid; the next
record of it starts where this one stopped), evicted early because `flows.max_active` was reached,
or the flow process stopping."""

FlowEvent = Literal["started", "updated", "ended"]


class Flow(msgspec.Struct, kw_only=True):
    uid: str  # stable for the flow's whole life, unique across restarts
    vlan: int | None  # outermost VLAN id; None when untagged
    transport: str  # "TCP", "UDP", "ICMP", "ICMPv6", "SCTP", "OTHER" (record.PROTO_LABELS)
    ip_version: int  # 4 or 6
    orig_ip: str
    orig_port: int | None  # ICMP: type; None when the transport has no ports
    resp_ip: str
    resp_port: int | None  # ICMP: code
    icmp_id: int | None = None  # ICMP echo (and the like): the identifier; None otherwise
    app: str | None  # the decoder's application label (record.App), the first one seen
    first_ns: int
    last_ns: int
    orig_pkts: int = 0
    orig_bytes: int = 0
    resp_pkts: int = 0
    resp_bytes: int = 0
    conn_state: str | None = None  # Zeek's conn_state; for UDP/ICMP too (S0, SHR, SF, OTH)
    history: str = ""
    end_reason: EndReason | None = None  # None while the flow is active
    # The first application fields seen, None when never seen.
    dns_query: str | None = None
    dns_rcode: str | None = None  # "NOERROR", "NXDOMAIN", ...
    tls_sni: str | None = None
    tls_alpn: str | None = None
    http_host: str | None = None
    http_method: str | None = None
    http_path: str | None = None
    ssh_banner: str | None = None
    # The sensor that saw it: set at a fleet central (its ingest writes every sensor's ended
    # flows) and in a sensor's fleet `flows` messages; None on a lone sensor, and in store files
    # written before the column existed.
    sensor: str | None = None

    @property
    def duration_ns(self) -> int:
        return self.last_ns - self.first_ns


class Host(msgspec.Struct, kw_only=True):
    """One IP address, live: everything the flow process saw of it since it started."""

    ip: str
    first_ns: int
    last_ns: int
    pkts_sent: int = 0
    bytes_sent: int = 0
    pkts_recv: int = 0
    bytes_recv: int = 0
    peers: int = 0  # distinct peer addresses
    apps: dict[str, int] = msgspec.field(default_factory=dict)  # app label -> bytes
    ports_served: list[int] = msgspec.field(default_factory=list)  # ports it answered on
    names: list[str] = msgspec.field(default_factory=list)  # names observed for it passively


class HostMinute(msgspec.Struct, kw_only=True):
    """One IP address's traffic in one minute (what the store keeps per host)."""

    minute_ns: int  # the minute's start
    ip: str
    pkts_sent: int = 0
    bytes_sent: int = 0
    pkts_recv: int = 0
    bytes_recv: int = 0
    peers: list[str] = msgspec.field(default_factory=list)
    apps: dict[str, int] = msgspec.field(default_factory=dict)  # app label -> bytes
    ports_served: list[int] = msgspec.field(default_factory=list)  # ports it answered on
    names: list[str] = msgspec.field(default_factory=list)  # names observed for it passively
    sensor: str | None = None  # as `Flow.sensor`: set at a fleet central and in `minutes` messages


class AppMinute(msgspec.Struct, kw_only=True):
    """Packets and bytes of one application label in one minute (the protocol chart)."""

    minute_ns: int
    app: str  # the app label, or the transport's label when the decoder found none
    packets: int = 0
    bytes: int = 0
    sensor: str | None = None  # as `HostMinute.sensor`


class FlowSink(Protocol):
    """Where the flow process puts what it ends: the flow store (`leireye.flows.store`)."""

    def add_flows(self, flows: Sequence[Flow]) -> None: ...

    def add_rows(self, rows: np.ndarray) -> None:
        """Ended flows as `rows.FLOW_ROW`: what the flow process hands over, no `Flow` each."""
        ...

    def add_minute(self, hosts: Sequence[HostMinute], apps: Sequence[AppMinute]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class LiveFlows(Protocol):
    """What a web worker reads of the flow process's live state (`leireye.flows.view`)."""

    def active(self) -> Sequence[Flow]: ...

    def hosts(self) -> Sequence[Host]: ...
