"""The flow store's columns: Arrow schemas, and the model's structs as Arrow tables.

Beside a `Flow`'s own fields the flows files hold derived columns for fast queries: the two
addresses as 128-bit numbers in two unsigned 64-bit columns each (`query.ip_halves`), the
duration and both directions' totals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import pyarrow as pa

from leireye.flows.layout import FLOW_FIELDS
from leireye.flows.model import AppMinute, Flow, HostMinute
from leireye.flows.query import ip_halves

_U64 = pa.uint64()
FLOWS_SCHEMA: Final = pa.schema(
    [
        ("uid", pa.string()),
        ("vlan", pa.int32()),
        ("transport", pa.string()),
        ("ip_version", pa.int8()),
        ("orig_ip", pa.string()),
        ("orig_hi", _U64),
        ("orig_lo", _U64),
        ("orig_port", pa.int32()),
        ("resp_ip", pa.string()),
        ("resp_hi", _U64),
        ("resp_lo", _U64),
        ("resp_port", pa.int32()),
        ("app", pa.string()),
        ("first_ns", pa.int64()),
        ("last_ns", pa.int64()),
        ("duration_ns", pa.int64()),
        ("orig_pkts", pa.int64()),
        ("orig_bytes", pa.int64()),
        ("resp_pkts", pa.int64()),
        ("resp_bytes", pa.int64()),
        ("pkts", pa.int64()),
        ("bytes", pa.int64()),
        ("conn_state", pa.string()),
        ("history", pa.string()),
        ("end_reason", pa.string()),
        ("dns_query", pa.string()),
        ("dns_rcode", pa.string()),
        ("tls_sni", pa.string()),
        ("tls_alpn", pa.string()),
        ("http_host", pa.string()),
        ("http_method", pa.string()),
        ("http_path", pa.string()),
        ("ssh_banner", pa.string()),
        ("sensor", pa.string()),  # added later: older files lack it (read as null)
    ]
)
HOSTS_SCHEMA: Final = pa.schema(
    [
        ("minute_ns", pa.int64()),
        ("ip", pa.string()),
        ("ip_hi", _U64),
        ("ip_lo", _U64),
        ("pkts_sent", pa.int64()),
        ("bytes_sent", pa.int64()),
        ("pkts_recv", pa.int64()),
        ("bytes_recv", pa.int64()),
        ("peers", pa.list_(pa.string())),
        ("apps", pa.map_(pa.string(), pa.int64())),
        ("ports_served", pa.list_(pa.int32())),
        ("names", pa.list_(pa.string())),
        ("sensor", pa.string()),  # added later, as the flows' (null on a lone sensor)
    ]
)
APPS_SCHEMA: Final = pa.schema(
    [
        ("minute_ns", pa.int64()),
        ("app", pa.string()),
        ("packets", pa.int64()),
        ("bytes", pa.int64()),
        ("sensor", pa.string()),  # added later, as the flows'
    ]
)


def _halves(addresses: Sequence[str]) -> tuple[pa.Array, pa.Array]:
    """The (hi, lo) columns of addresses, each distinct address parsed once."""
    seen: dict[str, tuple[int, int]] = {}
    for address in addresses:
        if address not in seen:
            seen[address] = ip_halves(address)
    pairs = [seen[a] for a in addresses]
    return pa.array([p[0] for p in pairs], _U64), pa.array([p[1] for p in pairs], _U64)


def flows_table(flows: Sequence[Flow]) -> pa.Table:
    arrays: dict[str, pa.Array] = {
        name: pa.array([getattr(f, name) for f in flows], FLOWS_SCHEMA.field(name).type)
        for name in FLOW_FIELDS
    }
    arrays["orig_hi"], arrays["orig_lo"] = _halves([f.orig_ip for f in flows])
    arrays["resp_hi"], arrays["resp_lo"] = _halves([f.resp_ip for f in flows])
    arrays["duration_ns"] = pa.array([f.last_ns - f.first_ns for f in flows], pa.int64())
    arrays["pkts"] = pa.array([f.orig_pkts + f.resp_pkts for f in flows], pa.int64())
    arrays["bytes"] = pa.array([f.orig_bytes + f.resp_bytes for f in flows], pa.int64())
    return pa.table([arrays[f.name] for f in FLOWS_SCHEMA], schema=FLOWS_SCHEMA)


def hosts_table(hosts: Sequence[HostMinute]) -> pa.Table:
    ip_hi, ip_lo = _halves([h.ip for h in hosts])
    return pa.table(
        {
            "minute_ns": [h.minute_ns for h in hosts],
            "ip": [h.ip for h in hosts],
            "ip_hi": ip_hi,
            "ip_lo": ip_lo,
            "pkts_sent": [h.pkts_sent for h in hosts],
            "bytes_sent": [h.bytes_sent for h in hosts],
            "pkts_recv": [h.pkts_recv for h in hosts],
            "bytes_recv": [h.bytes_recv for h in hosts],
            "peers": [h.peers for h in hosts],
            "apps": [list(h.apps.items()) for h in hosts],
            "ports_served": [h.ports_served for h in hosts],
            "names": [h.names for h in hosts],
            "sensor": [h.sensor for h in hosts],
        },
        schema=HOSTS_SCHEMA,
    )


def apps_table(apps: Sequence[AppMinute]) -> pa.Table:
    return pa.table(
        {
            "minute_ns": [a.minute_ns for a in apps],
            "app": [a.app for a in apps],
            "packets": [a.packets for a in apps],
            "bytes": [a.bytes for a in apps],
            "sensor": [a.sensor for a in apps],
        },
        schema=APPS_SCHEMA,
    )


# The time column that files a table's row under an hour, and the bounds in its file names.
TIME_COLUMNS: Final = {
    "flows": ("last_ns", "first_ns"),
    "hosts": ("minute_ns",),
    "apps": ("minute_ns",),
}
SORT_ORDER: Final = {
    "flows": [("orig_hi", "ascending"), ("orig_lo", "ascending"), ("first_ns", "ascending")],
    "flows_by_resp": [
        ("resp_hi", "ascending"),
        ("resp_lo", "ascending"),
        ("first_ns", "ascending"),
    ],
    "hosts": [("ip_hi", "ascending"), ("ip_lo", "ascending"), ("minute_ns", "ascending")],
    "apps": [("minute_ns", "ascending"), ("app", "ascending")],
}
# The flows' columns with row-group statistics (min/max): the sorted keys a one-host query
# prunes with, and the times. On the other columns statistics prune nothing (their values
# spread over every row group) and cost metadata every query reads, per row group.
FLOW_STATISTICS: Final = ["orig_hi", "orig_lo", "resp_hi", "resp_lo", "first_ns", "last_ns"]
