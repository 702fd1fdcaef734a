"""Streaming exports of ring records: pcap, CSV and JSON, one bytes chunk per batch.

Each writer is a generator over `(records, raw)` pairs as `Ring.copy_range(..., with_raw=True)`
returns them (`records` a RECORD_DTYPE array, `raw` an `(n, raw_bytes)` uint8 array; `raw` may be
None for CSV and JSON). It yields the chunk of one batch before it asks for the next, so an export
of the whole ring holds one batch in memory, never the file.

The CSV and JSON rows are the WebSocket `packet` data (`encode.PacketEncoder`, so the labels,
address texts and flag names are the same), except that CSV gives the time with microseconds.
At a fleet central (`sensor_names` given: `sensors.SensorDirectory.json_names`), JSON objects carry
`sensor` as the WebSocket's do, and CSV gets a last column `sensor`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from typing import Any, Final

import msgspec
import numpy as np

from leireye.capture import pcapfile
from leireye.web.encode import PacketEncoder, packet_data

ExportBatch = tuple[np.ndarray, np.ndarray | None]

CSV_COLUMNS: Final = (
    "id", "time", "src", "dst", "src_port", "dst_port", "protocol", "length", "flags", "info",
    "app", "ip_version", "vlan",
)  # fmt: skip
_PACKET_KEYS: Final = (
    "id", None, "src_ip", "dst_ip", "src_port", "dst_port", "protocol", "length", "flags", "info",
    "app", "ip_version", "vlan",
)  # fmt: skip
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


def pcap_stream(batches: Iterable[ExportBatch], linktype: int, snaplen: int) -> Iterator[bytes]:
    """A classic pcap file with microsecond timestamps (`capture.pcapfile`): the file header,
    then one chunk per batch. `linktype` is the records' DLT_* (the file says its LINKTYPE_*).
    Each packet holds the stored bytes, `min(cap_len, raw_bytes, snaplen)` of them (`incl_len`),
    and its wire length (`orig_len`); `snaplen` goes in the header."""
    return pcapfile.pcap_chunks(_frames(batches, snaplen), linktype, snaplen)


def _frames(
    batches: Iterable[ExportBatch], snaplen: int
) -> Iterator[tuple[np.ndarray, np.ndarray, list[bytes]]]:
    for records, raw in batches:
        n = len(records)
        if n == 0:
            continue
        if raw is None or len(raw) != n:
            raise ValueError("pcap export needs the raw bytes of every record")
        incl = np.minimum(records["cap_len"], min(raw.shape[1], snaplen))
        frames = [raw[i, :keep].tobytes() for i, keep in enumerate(incl.tolist())]
        yield records["ts_ns"], records["wire_len"], frames


def iso_us(ts_ns: np.ndarray) -> list[str]:
    """Unix ns as ISO-8601 UTC with microseconds and Z: "2024-01-20T10:30:01.123456Z"."""
    micros = (np.asarray(ts_ns, dtype=np.int64) // 1000).astype("datetime64[us]")
    return [f"{text}Z" for text in np.datetime_as_string(micros, unit="us").tolist()]


def csv_stream(
    batches: Iterable[ExportBatch], sensor_names: list[str] | None = None
) -> Iterator[bytes]:
    """UTF-8 CSV (RFC 4180 quoting, CRLF): a header row of CSV_COLUMNS, then one row per packet.
    Missing values are empty cells; `flags` are space-separated names. An `info` starting like a
    spreadsheet formula (=, +, -, @) gets a leading apostrophe, as packet text is untrusted."""
    encoder = PacketEncoder()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    keys: tuple[str | None, ...] = _PACKET_KEYS
    if sensor_names is None:
        writer.writerow(CSV_COLUMNS)
    else:
        writer.writerow((*CSV_COLUMNS, "sensor"))
        keys = (*keys, "sensor")
    yield _take(out)
    for records, _raw in batches:
        if len(records) == 0:
            continue
        times = iso_us(records["ts_ns"])
        dicts = _packet_dicts(encoder, records, sensor_names)
        for data, time in zip(dicts, times, strict=True):
            writer.writerow([_cell(key, data, time) for key in keys])
        yield _take(out)


def json_stream(
    batches: Iterable[ExportBatch], sensor_names: list[str] | None = None
) -> Iterator[bytes]:
    """A UTF-8 JSON array of the WebSocket packet `data` objects, written one batch at a time."""
    encoder = PacketEncoder()
    yield b"["
    first = True
    for records, _raw in batches:
        if len(records) == 0:
            continue
        body = ",".join(packet_data(m) for m in encoder.encode(records, sensor_names))
        yield (body if first else "," + body).encode("utf-8")
        first = False
    yield b"]"


def _packet_dicts(
    encoder: PacketEncoder, records: np.ndarray, sensor_names: list[str] | None
) -> list[dict[str, Any]]:
    return [msgspec.json.decode(packet_data(m)) for m in encoder.encode(records, sensor_names)]


def _cell(key: str | None, data: dict[str, Any], time: str) -> object:
    if key is None:
        return time
    value = data[key]
    if value is None:
        return ""
    if key == "flags":
        return " ".join(value)
    if key == "info" and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _take(out: io.StringIO) -> bytes:
    text = out.getvalue()
    out.seek(0)
    out.truncate()
    return text.encode("utf-8")
