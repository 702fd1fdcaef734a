"""A fleet `flows` message, whatever a sensor (or anyone who can publish on its subject) puts in
it, is refused with `FleetError` or gives flows the central's flow store can write: one bad row
must never stay in the store's writer and fail every flush after it."""

from __future__ import annotations

import contextlib
import json

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from leireye.fleet.flowmsg import decode_flows
from leireye.fleet.model import FleetError
from leireye.flows.columns import flows_table

_INTS = st.one_of(
    st.integers(-(2**64), 2**64), st.sampled_from([0, 4, 6, 65535, 65536, 4095, 2**63 - 1])
)
_TEXTS = st.one_of(
    st.text(max_size=12), st.sampled_from(["10.0.0.1", "2001:db8::1", "::ffff:1.2.3.4"])
)
_VALUES = st.one_of(st.none(), _INTS, _TEXTS, st.booleans(), st.floats(allow_nan=False))

_ROW = st.fixed_dictionaries(
    {
        "uid": _TEXTS,
        "vlan": st.one_of(st.none(), _INTS),
        "transport": st.sampled_from(["TCP", "UDP", "ICMP"]),
        "ip_version": _INTS,
        "orig_ip": _TEXTS,
        "orig_port": st.one_of(st.none(), _INTS),
        "resp_ip": _TEXTS,
        "resp_port": st.one_of(st.none(), _INTS),
        "app": st.one_of(st.none(), _TEXTS),
        "first_ns": _INTS,
        "last_ns": _INTS,
        "orig_pkts": _INTS,
        "orig_bytes": _INTS,
        "resp_pkts": _INTS,
        "resp_bytes": _INTS,
        "end_reason": st.sampled_from(["fin", "idle", "bogus", None]),
        "sensor": st.sampled_from(["east", "west", None]),
    },
    optional={"history": _VALUES, "tls_sni": _VALUES, "extra": _VALUES},
)


@settings(max_examples=300, deadline=None)
@given(
    sensor=st.sampled_from(["east", "west"]),
    run=_INTS,
    missed=_INTS,
    rows=st.lists(_ROW, max_size=4),
)
def test_a_flows_message_is_refused_or_writable(
    sensor: str, run: int, missed: int, rows: list[dict[str, object]]
) -> None:
    body = json.dumps({"sensor": sensor, "run": run, "missed": missed, "flows": rows}).encode()
    try:
        message = decode_flows("east", body)
    except FleetError:
        return
    assert message.missed >= 0 and all(f.sensor == "east" for f in message.flows)
    if message.flows:
        table = flows_table(message.flows)
        assert isinstance(table, pa.Table) and table.num_rows == len(rows)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_are_refused_or_decoded(body: bytes) -> None:
    with contextlib.suppress(FleetError):
        decode_flows("east", body)
