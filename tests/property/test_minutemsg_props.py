"""A fleet `minutes` message, whatever a sensor (or anyone who can publish on its subject) puts
in it, is refused with `FleetError` or gives host and app minutes the central's flow store can
write: one bad row must never stay in the store's writer and fail every flush after it."""

from __future__ import annotations

import contextlib
import json

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from leireye.fleet.minutemsg import decode_minutes
from leireye.fleet.model import FleetError
from leireye.flows.columns import apps_table, hosts_table

_INTS = st.one_of(
    st.integers(-(2**64), 2**64),
    st.sampled_from([0, 60 * 10**9, 65535, 65536, 2**63 - 1, 2**63 - 60 * 10**9]),
)
_TEXTS = st.one_of(
    st.text(max_size=40), st.sampled_from(["10.0.0.1", "2001:db8::1", "::ffff:1.2.3.4", "DNS"])
)
_VALUES = st.one_of(st.none(), _INTS, _TEXTS, st.booleans(), st.floats(allow_nan=False))
_SENSOR = st.sampled_from(["east", "west", None])

_HOST = st.fixed_dictionaries(
    {"minute_ns": _INTS, "ip": _TEXTS, "sensor": _SENSOR},
    optional={
        "pkts_sent": _INTS, "bytes_sent": _INTS, "pkts_recv": _INTS, "bytes_recv": _INTS,
        "peers": st.lists(_TEXTS, max_size=3), "apps": st.dictionaries(_TEXTS, _INTS, max_size=3),
        "ports_served": st.lists(_INTS, max_size=3), "names": st.lists(_TEXTS, max_size=3),
        "extra": _VALUES,
    },
)  # fmt: skip
_APP = st.fixed_dictionaries(
    {"minute_ns": _INTS, "app": _TEXTS, "sensor": _SENSOR},
    optional={"packets": _INTS, "bytes": _INTS, "extra": _VALUES},
)


@settings(max_examples=300, deadline=None)
@given(
    sensor=st.sampled_from(["east", "west"]),
    missed=_INTS,
    hosts=st.lists(_HOST, max_size=3),
    apps=st.lists(_APP, max_size=3),
)
def test_a_minutes_message_is_refused_or_writable(
    sensor: str, missed: int, hosts: list[dict[str, object]], apps: list[dict[str, object]]
) -> None:
    body = json.dumps({"sensor": sensor, "missed": missed, "hosts": hosts, "apps": apps})
    try:
        message = decode_minutes("east", body.encode())
    except FleetError:
        return
    assert message.missed >= 0
    assert all(row.sensor == "east" for row in (*message.hosts, *message.apps))
    if message.hosts:
        table = hosts_table(message.hosts)
        assert isinstance(table, pa.Table) and table.num_rows == len(hosts)
    if message.apps:
        assert apps_table(message.apps).num_rows == len(apps)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_are_refused_or_decoded(body: bytes) -> None:
    with contextlib.suppress(FleetError):
        decode_minutes("east", body)
