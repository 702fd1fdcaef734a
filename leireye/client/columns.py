"""Reading `packet_columns` (the binary batch format) back: as `PacketData`, or as arrays.

`packets_of` makes the same `PacketData` a JSON batch would have given (the client's default
iteration); it needs only the standard library. `arrays_of` gives the caller columns without
an object per packet: numbers as numpy arrays over the frame's own bytes (`np.frombuffer`, no
copy), texts as object arrays of references into each batch's small table of distinct values.
numpy is imported only when `arrays_of` is called.
"""

from __future__ import annotations

import datetime as dt
import sys
from array import array
from typing import TYPE_CHECKING, Any, Final

import msgspec

from leireye.wire import COLUMN_TYPES, PacketColumns, PacketData

if TYPE_CHECKING:
    import numpy as np

_decoder: Final = msgspec.msgpack.Decoder(PacketColumns)
_EPOCH: Final = dt.datetime(1970, 1, 1)
_ARRAY_CODES: Final = {"<u8": "Q", "<i8": "q", "<i4": "i", "<u4": "I", "u1": "B"}


def decode_columns(frame: bytes) -> PacketColumns:
    """One binary frame as `PacketColumns` (`msgspec.DecodeError` if it is not one)."""
    return _decoder.decode(frame)


def _column(columns: PacketColumns, name: str) -> list[int]:
    values = array(_ARRAY_CODES[COLUMN_TYPES[name]])
    values.frombytes(getattr(columns, name))
    if sys.byteorder == "big" and values.itemsize > 1:
        values.byteswap()
    return values.tolist()


def iso_ms_text(ms: int) -> str:
    """Unix milliseconds as the `timestamp` text of a JSON packet: "2024-01-20T10:30:01.123Z"."""
    seconds, millis = divmod(ms, 1000)
    return f"{_EPOCH + dt.timedelta(seconds=seconds):%Y-%m-%dT%H:%M:%S}.{millis:03d}Z"


def packets_of(columns: PacketColumns) -> list[PacketData]:
    """The batch as one `PacketData` per packet, field for field what JSON gives."""
    col = {name: _column(columns, name) for name in COLUMN_TYPES}
    seconds: dict[int, str] = {}
    stamps = []
    for ms in col["timestamp_ms"]:
        second, millis = divmod(ms, 1000)
        text = seconds.get(second)
        if text is None:
            text = seconds[second] = iso_ms_text(second * 1000)[:-5]
        stamps.append(f"{text}.{millis:03d}Z")

    def texts(name: str, table: list[Any]) -> list[Any]:
        return list(map(table.__getitem__, col[name]))

    def nullable(name: str, null: int) -> list[int | None]:
        return [None if v == null else v for v in col[name]]

    if isinstance(columns.sensor, bytes) and isinstance(columns.sensors, list):
        at = array("I")
        at.frombytes(columns.sensor)
        if sys.byteorder == "big":
            at.byteswap()
        sensors: list[Any] = [columns.sensors[i] for i in at]
    else:
        sensors = [msgspec.UNSET] * columns.count
    return list(
        map(
            PacketData,
            col["id"],
            stamps,
            texts("src_ip", columns.addresses),
            texts("dst_ip", columns.addresses),
            nullable("src_port", -1),
            nullable("dst_port", -1),
            texts("protocol", columns.protocols),
            col["length"],
            [list(f) for f in texts("flags", columns.flag_sets)],
            texts("info", columns.infos),
            texts("app", columns.apps),
            nullable("ip_version", 0),
            nullable("vlan", -1),
            sensors,
        )
    )


def arrays_of(columns: PacketColumns) -> dict[str, np.ndarray]:
    """The batch as arrays, one per field, `count` long: `id` (uint64), `timestamp_ms` (int64)
    and `timestamp` (datetime64[ms], the same memory), `src_port`/`dst_port`/`vlan` (int32, -1
    for null), `length` (uint32), `ip_version` (uint8, 0 for null); `src_ip`, `dst_ip`,
    `protocol`, `info`, `app` (objects: str or None) and `flags` (objects: lists of names); from
    a fleet central, `sensor` too (objects: str or None)."""
    import numpy as np

    out: dict[str, Any] = {}
    for name, dtype in COLUMN_TYPES.items():
        out[name] = np.frombuffer(getattr(columns, name), dtype=dtype)
    out["timestamp"] = out["timestamp_ms"].view("datetime64[ms]")
    for name, table in (
        ("src_ip", columns.addresses),
        ("dst_ip", columns.addresses),
        ("protocol", columns.protocols),
        ("flags", columns.flag_sets),
        ("info", columns.infos),
        ("app", columns.apps),
    ):
        values = np.empty(len(table), dtype=object)
        values[:] = table  # (a list of lists must stay one object per entry)
        out[name] = values[out[name]]
    if isinstance(columns.sensor, bytes) and isinstance(columns.sensors, list):
        names = np.empty(len(columns.sensors), dtype=object)
        names[:] = columns.sensors
        out["sensor"] = names[np.frombuffer(columns.sensor, dtype="<u4")]
    return out
