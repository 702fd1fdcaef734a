"""Ring rows to `packet_columns` messages: the binary batch format (`options.format: "columns"`).

Why it is shaped so
-------------------
A script that wants every packet pays, with JSON, for a text per packet on the server and a
parse per packet in the client. Here a batch is made column by column with numpy: numbers are
the arrays themselves (`tobytes`), and each text column is the table of its distinct values plus
an index per packet, so Python work grows with the distinct addresses, infos and flag sets of a
batch, not with its packets; a client gets numpy arrays back with `np.frombuffer` and a fancy
index, again without an object per packet. Measured against msgpack per packet in
docs/performance.md. The container is msgpack (`wire.PacketColumns`), so every field is named
and a client without numpy still reads it with msgspec and `array`.

The texts are the ones `encode.PacketEncoder` writes (tests compare every field of every row).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar

import msgspec
import numpy as np

from leireye.record import APP_LABELS, F_HAS_ADDR, F_HAS_PORTS, NO_VLAN, PROTO_LABELS, halves_to_ip
from leireye.web.encode import flag_names
from leireye.wire import PacketColumns

_encoder: Final = msgspec.msgpack.Encoder()
_V = TypeVar("_V")


def column_batches(records: np.ndarray, max_bytes: int) -> list[tuple[bytes, int]]:
    """`packet_columns` messages of at most `max_bytes` each (one record always fits in the
    smallest `max_message_bytes`): `(message, packets in it)`, in order."""
    n = len(records)
    if n == 0:
        return []
    data = encode_columns(records)
    if len(data) <= max_bytes or n == 1:
        return [(data, n)]
    pieces = max(2, -(-len(data) // max_bytes) + 1)  # a little more than enough, usually
    step = -(-n // pieces)
    out: list[tuple[bytes, int]] = []
    for start in range(0, n, step):
        out += column_batches(records[start : start + step], max_bytes)
    return out


def encode_columns(records: np.ndarray) -> bytes:
    """One `packet_columns` message for all of `records`."""
    flags = records["flags"]
    has_ports = (flags & F_HAS_PORTS) != 0
    version = records["ip_version"]
    vlan = records["vlan"].astype("<i4")
    none = np.int32(-1)
    src_ip, dst_ip, addresses = _addresses(records, (flags & F_HAS_ADDR) != 0, version == 6)
    protocol, protocols = _table(records["proto"], _proto_label)
    tcp_flags, flag_sets = _table(records["tcp_flags"] & 0x1FF, flag_names)
    info, infos = _table(records["info"], _info_text)
    app, apps = _table(records["app"], _app_label)
    message = PacketColumns(
        count=len(records),
        id=records["seq"].astype("<u8").tobytes(),
        timestamp_ms=(records["ts_ns"] // 1_000_000).astype("<i8").tobytes(),
        src_port=np.where(has_ports, records["src_port"].astype("<i4"), none).tobytes(),
        dst_port=np.where(has_ports, records["dst_port"].astype("<i4"), none).tobytes(),
        length=records["wire_len"].astype("<u4").tobytes(),
        ip_version=np.where((version == 4) | (version == 6), version, 0).astype("u1").tobytes(),
        vlan=np.where(vlan == NO_VLAN, none, vlan).tobytes(),
        src_ip=src_ip,
        dst_ip=dst_ip,
        protocol=protocol,
        flags=tcp_flags,
        info=info,
        app=app,
        addresses=addresses,
        protocols=protocols,
        flag_sets=flag_sets,
        infos=infos,
        apps=apps,
    )
    return _encoder.encode(message)


def _table(column: np.ndarray, text: Callable[[Any], _V]) -> tuple[bytes, list[_V]]:
    """The `<u4` index of each row into the distinct values of `column`, and their texts."""
    values, index = np.unique(column, return_inverse=True)
    return index.astype("<u4").tobytes(), [text(v) for v in values.tolist()]


def _addresses(
    records: np.ndarray, has: np.ndarray, v6: np.ndarray
) -> tuple[bytes, bytes, list[str | None]]:
    """Both address columns as indexes into one table (None: no address)."""
    n = len(records)
    keys = np.zeros((2 * n, 3), dtype=np.uint64)
    for k, side in enumerate(("src", "dst")):
        rows = slice(k * n, (k + 1) * n)
        keys[rows, 0] = np.where(has, records[f"{side}_hi"], 0)
        keys[rows, 1] = np.where(has, records[f"{side}_lo"], 0)
        keys[rows, 2] = has.astype(np.uint64) * 2 + v6.astype(np.uint64)
    values, index = np.unique(keys, axis=0, return_inverse=True)
    index = index.reshape(-1).astype("<u4")
    table = [
        None if kind < 2 else halves_to_ip(hi, lo, 6 if kind == 3 else 0)
        for hi, lo, kind in values.tolist()
    ]
    return index[:n].tobytes(), index[n:].tobytes(), table


def _proto_label(p: int) -> str:
    return PROTO_LABELS[p] if p < len(PROTO_LABELS) else "OTHER"


def _app_label(a: int) -> str | None:
    return APP_LABELS[a] if 0 < a < len(APP_LABELS) else None


def _info_text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")
