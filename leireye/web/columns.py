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
FIRST_GUESS_BYTES: Final = 100.0  # per record (~76 on the realistic mix)
FIXED_BYTES: Final = 400  # the field names and small tables of any message, about


def column_batches(
    records: np.ndarray, max_bytes: int, sensor_names: list[str | None] | None = None
) -> list[tuple[bytes, int]]:
    """`packet_columns` messages of at most `max_bytes` each (one record always fits in the
    smallest `max_message_bytes`): `(message, packets in it)`, in order. Each chunk is sized
    from the bytes per record of the one before (a chunk that comes out too large is halved).
    One thread only (the memos of `_default`). `sensor_names` (at a fleet central: each
    index's name) adds the `sensor` column."""
    out: list[tuple[bytes, int]] = []
    start, per_record = 0, FIRST_GUESS_BYTES
    while start < len(records):
        take = max(1, int(max_bytes / (per_record * 1.1)))
        piece = records[start : start + take]
        data = _default.encode(piece, sensor_names)
        while len(data) > max_bytes and len(piece) > 1:
            piece = piece[: len(piece) // 2]
            data = _default.encode(piece, sensor_names)
        out.append((data, len(piece)))
        per_record = max(1.0, (len(data) - FIXED_BYTES) / len(piece))
        start += len(piece)
    return out


def encode_columns(records: np.ndarray, sensor_names: list[str | None] | None = None) -> bytes:
    """One `packet_columns` message for all of `records` (one thread only)."""
    return _default.encode(records, sensor_names)


class ColumnEncoder:
    """Keeps bounded memos of address and info texts across batches, like
    `encode.PacketEncoder`: one per worker, from one thread."""

    def __init__(self, memo_size: int = 16384) -> None:
        self._memo_size = memo_size
        self._addresses: dict[tuple[int, int, bool], str] = {}
        self._infos: dict[bytes, str] = {}

    def encode(self, records: np.ndarray, sensor_names: list[str | None] | None = None) -> bytes:
        flags = records["flags"]
        has_ports = (flags & F_HAS_PORTS) != 0
        version = records["ip_version"]
        vlan = records["vlan"].astype("<i4")
        none = np.int32(-1)
        src_ip, dst_ip, addresses = self._address_columns(
            records, (flags & F_HAS_ADDR) != 0, version == 6
        )
        protocol, protocols = _table(records["proto"], _proto_label)
        tcp_flags, flag_sets = _table(records["tcp_flags"] & 0x1FF, flag_names)
        info, infos = self._info_column(records["info"])
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
        if sensor_names is not None:
            names = sensor_names
            sensor, sensors = _table(
                records["sensor"], lambda i: names[i] if i < len(names) else None
            )
            message = msgspec.structs.replace(message, sensor=sensor, sensors=sensors)
        return _encoder.encode(message)

    def _address_columns(
        self, records: np.ndarray, has: np.ndarray, v6: np.ndarray
    ) -> tuple[bytes, bytes, list[str | None]]:
        """Both address columns as indexes into one table (entry 0: None, no address). The
        common case (an IPv4 address, stored mapped) goes through `np.unique` on the low half;
        the others (IPv6, ARP oddities) one by one through the memo."""
        hi = np.concatenate((records["src_hi"], records["dst_hi"]))
        lo = np.concatenate((records["src_lo"], records["dst_lo"]))
        has2, v62 = np.concatenate((has, has)), np.concatenate((v6, v6))
        simple = has2 & ~v62 & (hi == 0) & (lo != 0)
        keys, index = np.unique(np.where(simple, lo, 0), return_inverse=True)
        index = index.reshape(-1).astype("<u4")
        start = 1 if keys[0] == 0 else 0  # 0: no address, or not a simple one
        table: list[str | None] = [None]
        table += [self._text(0, k, False) for k in keys[start:].tolist()]
        if start == 0:
            index += 1
        else:
            index[~simple] = 0
        other = np.flatnonzero(has2 & ~simple)
        if other.size:
            position: dict[str, int] = {}
            for i, h, low, is_v6 in zip(
                other.tolist(), hi[other].tolist(), lo[other].tolist(), v62[other].tolist(),
                strict=True,
            ):  # fmt: skip
                text = self._text(h, low, is_v6)
                at = position.get(text)
                if at is None:
                    at = position[text] = len(table)
                    table.append(text)
                index[i] = at
        n = len(records)
        return index[:n].tobytes(), index[n:].tobytes(), table

    def _text(self, hi: int, lo: int, v6: bool) -> str:
        key = (hi, lo, v6)
        text = self._addresses.get(key)
        if text is None:
            if len(self._addresses) >= self._memo_size:
                self._addresses.clear()
            text = self._addresses[key] = halves_to_ip(hi, lo, 6 if v6 else 0)
        return text

    def _info_column(self, column: np.ndarray) -> tuple[bytes, list[str]]:
        position: dict[bytes, int] = {}
        index = np.empty(len(column), dtype="<u4")
        for i, raw in enumerate(column.tolist()):
            at = position.get(raw)
            if at is None:
                at = position[raw] = len(position)
            index[i] = at
        memo = self._infos
        texts = []
        for raw in position:
            text = memo.get(raw)
            if text is None:
                if len(memo) >= self._memo_size:
                    memo.clear()
                text = memo[raw] = raw.decode("utf-8", "replace")
            texts.append(text)
        return index.tobytes(), texts


def _table(column: np.ndarray, text: Callable[[Any], _V]) -> tuple[bytes, list[_V]]:
    """The `<u4` index of each row into the distinct values of a small-integer column, and
    their texts."""
    values, index = np.unique(column, return_inverse=True)
    return index.reshape(-1).astype("<u4").tobytes(), [text(v) for v in values.tolist()]


def _proto_label(p: int) -> str:
    return PROTO_LABELS[p] if p < len(PROTO_LABELS) else "OTHER"


def _app_label(a: int) -> str | None:
    return APP_LABELS[a] if 0 < a < len(APP_LABELS) else None


_default: Final = ColumnEncoder()
