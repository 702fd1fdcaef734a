"""The flow store's columns: Arrow schemas, and the model's structs as Arrow tables.

Beside a `Flow`'s own fields the flows files hold derived columns for fast queries: the two
addresses as 128-bit numbers in two unsigned 64-bit columns each (`query.ip_halves`), the
duration and both directions' totals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from leireye.flows import rows as flowrows
from leireye.flows import tcpstate
from leireye.flows.layout import FLOW_FIELDS
from leireye.flows.model import AppMinute, Flow, HostMinute
from leireye.flows.query import ip_halves
from leireye.record import APP_LABELS, NO_VLAN, PROTO_LABELS, Proto

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
        ("icmp_id", pa.int32()),  # added later (`layout.LATE_FLOW_COLUMNS`): null in older files
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


def _labels(table: Sequence[str | None], index: np.ndarray) -> pa.Array:
    """Strings (or nulls) looked up by small integer: one dictionary, cast to plain strings."""
    dictionary = pa.array(list(table), pa.string())
    return pa.DictionaryArray.from_arrays(pa.array(index, pa.int32()), dictionary).cast(pa.string())


_TRANSPORT_LABELS: Final = tuple(
    PROTO_LABELS[p] if p < len(PROTO_LABELS) and p in flowrows.TRANSPORTS else "OTHER"
    for p in range(256)
)
_APP_LABELS: Final = tuple(label or None for label in APP_LABELS)
_CONN_STATES: Final = tuple(name or None for name in tcpstate.CONN_STATES)


_ADDRESS_KEY: Final = np.dtype([("hi", "<u8"), ("lo", "<u8"), ("v", "u1")])


def _addresses(hi: np.ndarray, lo: np.ndarray, version: np.ndarray) -> pa.Array:
    """The text of each address, each distinct one formatted once (`rows.ip_text`)."""
    keys = np.empty(len(hi), dtype=_ADDRESS_KEY)
    keys["hi"], keys["lo"], keys["v"] = hi, lo, version
    packed = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(_ADDRESS_KEY.itemsize), len(keys), [None, pa.py_buffer(keys.tobytes())]
    )
    encoded = packed.dictionary_encode()  # a hash, not a sort
    unique = np.frombuffer(b"".join(encoded.dictionary.to_pylist()), dtype=_ADDRESS_KEY)
    texts = [flowrows.ip_text(h, lo_, v) for h, lo_, v in unique.tolist()]
    return _labels(texts, encoded.indices.to_numpy(zero_copy_only=False))


def _texts(column: np.ndarray) -> pa.Array:
    """A NUL-padded UTF-8 column as strings, empty ones null (`rows._text`: a value cut inside
    a character decodes with U+FFFD, as there)."""
    values = pa.array(column.tolist(), pa.binary())
    values = pc.if_else(pc.equal(pc.binary_length(values), 0), pa.scalar(None, pa.binary()),
                        values)  # fmt: skip
    try:
        return values.cast(pa.string())
    except pa.ArrowInvalid:  # invalid UTF-8 somewhere: decode like a Flow would
        return pa.array([None if v is None else v.decode("utf-8", "replace")
                         for v in values.to_pylist()], pa.string())  # fmt: skip


def flows_table_from_rows(rows: np.ndarray) -> pa.Table:
    """`flows_table(rows.to_flows(rows))`, column by column: no `Flow` per row (the flow
    process's ended flows go to the store this way; a property test keeps the two equal)."""
    n = len(rows)
    proto, version = rows["proto"], rows["ip_version"]
    icmp = np.isin(proto, (Proto.ICMP, Proto.ICMPV6))
    no_ports = ~((rows["has_ports"] != 0) | icmp)
    first, last = rows["first_ns"].astype(np.int64), rows["last_ns"].astype(np.int64)
    counts = {k: rows[k].astype(np.int64) for k in ("orig_pkts", "orig_bytes", "resp_pkts",
                                                     "resp_bytes")}  # fmt: skip
    uid = rows["uid"]
    arrays: dict[str, pa.Array] = {
        "uid": pa.array([f"C{u:016x}" for u in uid.tolist()], pa.string()),
        "vlan": pa.array(rows["vlan"].astype(np.int32), mask=rows["vlan"] == NO_VLAN),
        "transport": _labels(_TRANSPORT_LABELS, proto),
        "ip_version": pa.array(version.astype(np.int8)),
        "orig_ip": _addresses(rows["orig_hi"], rows["orig_lo"], version),
        "orig_hi": pa.array(rows["orig_hi"]),
        "orig_lo": pa.array(rows["orig_lo"]),
        "orig_port": pa.array(rows["orig_port"].astype(np.int32), mask=no_ports),
        "resp_ip": _addresses(rows["resp_hi"], rows["resp_lo"], version),
        "resp_hi": pa.array(rows["resp_hi"]),
        "resp_lo": pa.array(rows["resp_lo"]),
        "resp_port": pa.array(rows["resp_port"].astype(np.int32), mask=no_ports),
        "icmp_id": pa.array(rows["icmp_id"].astype(np.int32), mask=rows["icmp_id"] < 0),
        "app": _labels(_APP_LABELS, rows["app"]),
        "first_ns": pa.array(first),
        "last_ns": pa.array(last),
        "duration_ns": pa.array(last - first),
        **{k: pa.array(v) for k, v in counts.items()},
        "pkts": pa.array(counts["orig_pkts"] + counts["resp_pkts"]),
        "bytes": pa.array(counts["orig_bytes"] + counts["resp_bytes"]),
        "conn_state": _labels(_CONN_STATES, rows["conn_state"]),
        "history": pa.array(rows["history"].tolist(), pa.binary()).cast(pa.string()),
        "end_reason": _labels(flowrows.END_REASONS, rows["end_reason"]),
        **{name: _texts(rows[name]) for name in flowrows.TEXT_FIELDS},
        "sensor": pa.nulls(n, pa.string()),
    }
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
