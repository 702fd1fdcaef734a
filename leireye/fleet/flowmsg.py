"""A `flows` message of the fleet: the sensor's ended flows, encoded by its publisher
(`side.py`) and decoded by the central's ingest, with one function each so the two cannot drift.

The body is a JSON object `{"sensor", "run", "missed", "flows": [...]}`: `run` is the sensor's
run (`LE-Run`), `missed` the flow events its flow process's event ring overwrote before the
publisher read them (since the previous message), and each of `flows` a `Flow`'s fields plus
`sensor`. The central takes the sensor from the subject, never from the body: a row or body that
names another sensor is refused whole, as is anything else malformed (`FleetError`), a value the
flow store's columns cannot hold included (an address that is not one, a port, VLAN or count
out of its column's range): one bad row must never stay in the store's writer, failing every
flush after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import msgspec

from leireye.fleet.model import FleetError, json_message
from leireye.flows.model import Flow
from leireye.flows.query import ip_halves

MAX_FLOWS_BODY: Final = 64 << 20  # a body above this is refused before it is parsed
_I64: Final = 2**63 - 1


class _Message(msgspec.Struct, forbid_unknown_fields=False):
    sensor: str
    run: int
    missed: int
    flows: list[Flow]


@dataclass(frozen=True)
class FlowsMessage:
    sensor: str
    run: int
    missed: int
    flows: list[Flow]  # each with `sensor` set


def encode_flows(sensor: str, run: int, missed: int, flows: Sequence[Flow]) -> bytes:
    """The body of a `flows` message."""
    rows = [{**msgspec.to_builtins(flow), "sensor": sensor} for flow in flows]
    return json_message({"sensor": sensor, "run": run, "missed": missed, "flows": rows})


def decode_flows(sensor: str, body: bytes) -> FlowsMessage:
    """A `flows` message of `sensor` (the subject's) back to flows; FleetError saying why for
    anything malformed: the central counts such a message and goes on."""
    if len(body) > MAX_FLOWS_BODY:
        raise FleetError(f"flows message of {len(body)} bytes is above {MAX_FLOWS_BODY}")
    try:
        message = msgspec.json.decode(body, type=_Message)
    except msgspec.DecodeError as exc:  # ValidationError too: it names the path
        raise FleetError(f"flows message unusable: {exc}") from None
    if message.sensor != sensor:
        raise FleetError(f"flows message of sensor {message.sensor[:64]!r} on {sensor!r}'s subject")
    if message.missed < 0:
        raise FleetError(f"flows message with missed {message.missed}")
    for flow in message.flows:
        if flow.sensor != sensor:
            raise FleetError("flows message with a flow of another sensor")
        _check(flow)
    return FlowsMessage(sensor, message.run, message.missed, message.flows)


def _check(flow: Flow) -> None:
    """FleetError when a field does not fit the flow store's column (leireye.flows.columns)."""
    for side in (flow.orig_ip, flow.resp_ip):
        try:
            ip_halves(side)
        except ValueError:
            raise FleetError(f"flow {flow.uid[:64]!r}: {side[:64]!r} is not an address") from None
    ranges = (
        (flow.orig_port, 0, 65535), (flow.resp_port, 0, 65535), (flow.icmp_id, 0, 65535),
        (flow.vlan, 0, 4095),
        (flow.first_ns, 0, _I64), (flow.last_ns, flow.first_ns, _I64),
        (flow.orig_pkts, 0, _I64), (flow.orig_bytes, 0, _I64), (flow.resp_pkts, 0, _I64),
        (flow.resp_bytes, 0, _I64),
    )  # fmt: skip
    for value, low, high in ranges:
        if value is not None and not low <= value <= high:
            raise FleetError(f"flow {flow.uid[:64]!r}: a value out of range ({value})")
    if flow.ip_version not in (4, 6):
        raise FleetError(f"flow {flow.uid[:64]!r}: ip_version {flow.ip_version}")
    total = flow.orig_pkts + flow.resp_pkts, flow.orig_bytes + flow.resp_bytes
    if max(total) > _I64:
        raise FleetError(f"flow {flow.uid[:64]!r}: totals out of range")
