"""A `minutes` message of the fleet: a sensor's per-minute host and application summaries
(`HostMinute`, `AppMinute`), encoded by its publisher (`side.py`, read from its flow store's
files by `minutes.py`) and decoded by the central's ingest, one function each.

It travels on the sensor's `flows` subject and stream, told from a flows message by its header
`LE-Content: minutes` (`model.H_CONTENT`). The body is a JSON object `{"sensor", "missed",
"hosts": [...], "apps": [...]}`: `missed` counts the minute rows the publisher could not send
since its previous minutes message (a file retention deleted or it could not read, a row too
big for any message), and each row is a `HostMinute`'s or `AppMinute`'s fields plus `sensor`.

As for flows (`flowmsg.py`), the central takes the sensor from the subject; a message with a
row naming another sensor, or a value the store's columns cannot hold (an address that is not
one, a count below 0 or past 2^63-1, a port past 65535, a minute not on a minute), or lists
longer than the flow process ever makes, is refused whole (`FleetError`): it is counted and
skipped, and never reaches the store's writer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import msgspec

from leireye.fleet.model import FleetError, json_message
from leireye.flows.hosts import MINUTE_NS, NAMES_MAX, PEERS_MAX, PORTS_MAX
from leireye.flows.model import AppMinute, HostMinute
from leireye.flows.query import ip_halves

MAX_MINUTES_BODY: Final = 64 << 20  # a body above this is refused before it is parsed
LABEL_MAX: Final = 32  # characters of an app label (the decoder's are at most 12)
LABELS_MAX: Final = 64  # app labels of one host minute (hosts.N_LABELS)
NAME_CHARS_MAX: Final = 1024  # characters of one observed name
_I64: Final = 2**63 - 1


class _Message(msgspec.Struct, forbid_unknown_fields=False):
    sensor: str
    missed: int
    hosts: list[HostMinute] = msgspec.field(default_factory=list)
    apps: list[AppMinute] = msgspec.field(default_factory=list)


@dataclass(frozen=True)
class MinutesMessage:
    sensor: str
    missed: int
    hosts: list[HostMinute]  # each with `sensor` set
    apps: list[AppMinute]


def encode_minutes(
    sensor: str, missed: int, hosts: Sequence[HostMinute], apps: Sequence[AppMinute]
) -> bytes:
    """The body of a `minutes` message."""
    return json_message(
        {
            "sensor": sensor,
            "missed": missed,
            "hosts": [{**msgspec.to_builtins(h), "sensor": sensor} for h in hosts],
            "apps": [{**msgspec.to_builtins(a), "sensor": sensor} for a in apps],
        }
    )


def decode_minutes(sensor: str, body: bytes) -> MinutesMessage:
    """A `minutes` message of `sensor` (the subject's) back to rows; FleetError saying why for
    anything malformed: the central counts such a message and goes on."""
    if len(body) > MAX_MINUTES_BODY:
        raise FleetError(f"minutes message of {len(body)} bytes is above {MAX_MINUTES_BODY}")
    try:
        message = msgspec.json.decode(body, type=_Message)
    except msgspec.DecodeError as exc:  # ValidationError too: it names the path
        raise FleetError(f"minutes message unusable: {exc}") from None
    if message.sensor != sensor:
        raise FleetError(
            f"minutes message of sensor {message.sensor[:64]!r} on {sensor!r}'s subject"
        )
    if not 0 <= message.missed <= _I64:
        raise FleetError(f"minutes message with missed {message.missed}")
    addresses: set[str] = set()  # checked already: peers repeat from row to row
    for host in message.hosts:
        if host.sensor != sensor:
            raise FleetError("minutes message with a host row of another sensor")
        check_host(host, addresses)
    for app in message.apps:
        if app.sensor != sensor:
            raise FleetError("minutes message with an app row of another sensor")
        check_app(app)
    return MinutesMessage(sensor, message.missed, message.hosts, message.apps)


def check_host(row: HostMinute, addresses: set[str] | None = None) -> None:
    """FleetError when a field does not fit the store's hosts columns or the flow process's
    limits (leireye.flows.columns, leireye.flows.hosts). `addresses`: addresses known good,
    added to."""
    known = set() if addresses is None else addresses
    _check_minute(row.minute_ns)
    if not _address(row.ip, known):
        raise FleetError(f"host minute: {row.ip[:64]!r} is not an address")
    for value in (row.pkts_sent, row.bytes_sent, row.pkts_recv, row.bytes_recv):
        if not 0 <= value <= _I64:
            raise FleetError(f"host minute of {row.ip}: a count out of range ({value})")
    if (len(row.peers) > PEERS_MAX or len(row.ports_served) > PORTS_MAX
            or len(row.names) > NAMES_MAX or len(row.apps) > LABELS_MAX):  # fmt: skip
        raise FleetError(f"host minute of {row.ip}: a list longer than the flow process makes")
    for peer in row.peers:
        if not _address(peer, known):
            raise FleetError(f"host minute of {row.ip}: peer {peer[:64]!r}")
    for label, size in row.apps.items():
        if len(label) > LABEL_MAX or not 0 <= size <= _I64:
            raise FleetError(f"host minute of {row.ip}: app {label[:64]!r} or its bytes")
    if any(not 0 <= port <= 65535 for port in row.ports_served):
        raise FleetError(f"host minute of {row.ip}: a port out of range")
    if any(len(name) > NAME_CHARS_MAX for name in row.names):
        raise FleetError(f"host minute of {row.ip}: a name longer than {NAME_CHARS_MAX}")


def check_app(row: AppMinute) -> None:
    """FleetError when a field does not fit the store's apps columns."""
    _check_minute(row.minute_ns)
    if len(row.app) > LABEL_MAX:
        raise FleetError(f"app minute: label {row.app[:64]!r}")
    if not 0 <= row.packets <= _I64 or not 0 <= row.bytes <= _I64:
        raise FleetError(f"app minute of {row.app}: a count out of range")


def _address(text: str, known: set[str]) -> bool:
    if text in known:
        return True
    try:
        ip_halves(text)
    except ValueError:
        return False
    known.add(text)
    return True


def _check_minute(minute_ns: int) -> None:
    if not 0 <= minute_ns <= _I64 - MINUTE_NS or minute_ns % MINUTE_NS:
        raise FleetError(f"a minute of {minute_ns}: not the start of a minute")


def encode_minute_messages(
    sensor: str, hosts: Sequence[HostMinute], apps: Sequence[AppMinute], limit: int
) -> tuple[list[bytes], int]:
    """The bodies of the `minutes` messages that carry these rows, each at most `limit`
    bytes, and how many rows were left out because alone they do not fit (said in the first
    body's `missed`; a body with no rows when every row was left out)."""
    rows: list[HostMinute | AppMinute] = [*hosts, *apps]
    parts: list[list[HostMinute | AppMinute]] = []
    missed = start = 0
    count = len(rows)
    room = limit - 32  # for the first body's `missed`, written once the parts are known
    while start < len(rows):
        part = rows[start : start + count]
        if len(_encode(sensor, 0, part)) <= room:
            parts.append(part)
            start += len(part)
        elif count == 1:
            missed += 1
            start += 1
        else:
            count = max(1, count // 2)
    if missed and not parts:
        parts.append([])
    return [_encode(sensor, missed if i == 0 else 0, p) for i, p in enumerate(parts)], missed


def _encode(sensor: str, missed: int, rows: list[HostMinute | AppMinute]) -> bytes:
    hosts = [r for r in rows if isinstance(r, HostMinute)]
    apps = [r for r in rows if isinstance(r, AppMinute)]
    return encode_minutes(sensor, missed, hosts, apps)
