"""The numeric shapes of the statistics, and their decoded, labelled form.

The accumulator fills one row of `frame_dtype(top_n)` per update and keeps a ring of
`HISTORY_DTYPE` rows, one per second; the shared-memory series stores exactly these bytes, so
both dtypes are part of the series layout (`leireye.stats.series` checksums them). Readers turn a
frame into a `StatsSnapshot` with `decode_frame`.

Protocol and application arrays are indexed by the numeric value of `Proto` and `App`; the enums
only ever grow at the end, and a change of their size changes the layout checksum.
"""

from __future__ import annotations

from typing import Final

import msgspec
import numpy as np

from leireye.record import APP_LABELS, PROTO_LABELS, App, Proto, halves_to_ip

N_PROTO: Final = len(Proto)
N_APP: Final = len(App)

HISTORY_DTYPE: Final = np.dtype(
    [
        ("second", "<i8"),  # the Unix second this row covers; -1 for a row never used
        ("packets", "<u8"),
        ("bytes", "<u8"),  # sum of wire_len
        ("proto", "<u8", (N_PROTO,)),  # packets by Proto
        ("app", "<u8", (N_APP,)),  # packets by App
        ("kernel_drops", "<u8"),  # increase of the capture's ps_drop during this second
        ("if_drops", "<u8"),  # increase of ps_ifdrop
        ("ring_lost", "<u8"),  # records overwritten before the stats reader got to them
        ("decode_errors", "<u8"),  # records whose `error` is not DecodeError.NONE
    ]
)

ADDRESS_TOP_DTYPE: Final = np.dtype(
    [("hi", "<u8"), ("lo", "<u8"), ("packets", "<u8"), ("bytes", "<u8")]
)
PORT_TOP_DTYPE: Final = np.dtype(
    [("proto", "<u8"), ("port", "<u8"), ("packets", "<u8"), ("bytes", "<u8")]
)


def frame_dtype(top_n: int) -> np.dtype[np.void]:
    """One published update. Counters are totals since the stats process started; `*_pps` and
    `bytes_per_second` cover the last second of arrivals; `top_*` hold `n_*` valid entries."""
    return np.dtype(
        [
            ("timestamp_ns", "<i8"),  # when the frame was made (Unix ns)
            ("started_ns", "<i8"),  # when the accumulator started (Unix ns)
            ("current_second", "<i8"),  # the Unix second of the open history row
            ("packets_total", "<u8"),
            ("bytes_total", "<u8"),
            ("packets_per_second", "<u8"),
            ("bytes_per_second", "<u8"),
            ("proto_pps", "<u8", (N_PROTO,)),
            ("app_pps", "<u8", (N_APP,)),
            ("proto_total", "<u8", (N_PROTO,)),
            ("app_total", "<u8", (N_APP,)),
            ("kernel_drops", "<u8"),
            ("if_drops", "<u8"),
            ("ring_lost", "<u8"),
            ("decode_errors", "<u8"),
            ("top_seconds", "<u4"),  # complete seconds the top tables cover (<= top_window_s)
            ("top_complete", "u1"),  # 0 when a busy second was cut to its heaviest keys
            ("n_sources", "u1"),
            ("n_destinations", "u1"),
            ("n_ports", "u1"),
            ("top_sources", ADDRESS_TOP_DTYPE, (top_n,)),
            ("top_destinations", ADDRESS_TOP_DTYPE, (top_n,)),
            ("top_ports", PORT_TOP_DTYPE, (top_n,)),
        ],
        align=True,
    )


class TopAddress(msgspec.Struct, frozen=True):
    address: str
    hi: int
    lo: int
    packets: int
    bytes: int


class TopPort(msgspec.Struct, frozen=True):
    protocol: str  # a Proto label: "TCP", "UDP", "SCTP"
    port: int  # destination port
    packets: int
    bytes: int


class StatsSnapshot(msgspec.Struct, frozen=True):
    """One consistent update, labelled. `timestamp_ns == 0` means nothing was published yet.

    `protocols` and `apps` are packets per second by label over the 1 s window that
    `packets_per_second` covers (only non-zero entries, in enum order; `apps` leaves out packets
    with no application); `protocols_total` and `apps_total` count packets since start. Drops,
    `ring_lost` and `decode_errors` count since the stats process started.
    """

    timestamp_ns: int
    started_ns: int
    packets_total: int
    bytes_total: int
    packets_per_second: int
    bytes_per_second: int
    protocols: dict[str, int]
    apps: dict[str, int]
    protocols_total: dict[str, int]
    apps_total: dict[str, int]
    kernel_drops: int
    if_drops: int
    ring_lost: int
    decode_errors: int
    top_seconds: int
    top_complete: bool
    top_sources: list[TopAddress]
    top_destinations: list[TopAddress]
    top_ports: list[TopPort]


def _labelled(counts: np.ndarray, labels: tuple[str, ...], skip_zero_index: bool) -> dict[str, int]:
    first = 1 if skip_zero_index else 0
    return {labels[i]: int(counts[i]) for i in range(first, len(labels)) if counts[i]}


def _addresses(rows: np.ndarray) -> list[TopAddress]:
    return [
        TopAddress(
            address=halves_to_ip(int(r["hi"]), int(r["lo"]), 0),
            hi=int(r["hi"]),
            lo=int(r["lo"]),
            packets=int(r["packets"]),
            bytes=int(r["bytes"]),
        )
        for r in rows
    ]


def _ports(rows: np.ndarray) -> list[TopPort]:
    return [
        TopPort(
            protocol=PROTO_LABELS[int(r["proto"])] if int(r["proto"]) < N_PROTO else "OTHER",
            port=int(r["port"]),
            packets=int(r["packets"]),
            bytes=int(r["bytes"]),
        )
        for r in rows
    ]


def decode_frame(frame: np.ndarray) -> StatsSnapshot:
    """A frame (a 0-d array of `frame_dtype(top_n)`) as a labelled snapshot."""
    f = frame
    return StatsSnapshot(
        timestamp_ns=int(f["timestamp_ns"]),
        started_ns=int(f["started_ns"]),
        packets_total=int(f["packets_total"]),
        bytes_total=int(f["bytes_total"]),
        packets_per_second=int(f["packets_per_second"]),
        bytes_per_second=int(f["bytes_per_second"]),
        protocols=_labelled(f["proto_pps"], PROTO_LABELS, skip_zero_index=False),
        apps=_labelled(f["app_pps"], APP_LABELS, skip_zero_index=True),
        protocols_total=_labelled(f["proto_total"], PROTO_LABELS, skip_zero_index=False),
        apps_total=_labelled(f["app_total"], APP_LABELS, skip_zero_index=True),
        kernel_drops=int(f["kernel_drops"]),
        if_drops=int(f["if_drops"]),
        ring_lost=int(f["ring_lost"]),
        decode_errors=int(f["decode_errors"]),
        top_seconds=int(f["top_seconds"]),
        top_complete=bool(f["top_complete"]),
        top_sources=_addresses(f["top_sources"][: int(f["n_sources"])]),
        top_destinations=_addresses(f["top_destinations"][: int(f["n_destinations"])]),
        top_ports=_ports(f["top_ports"][: int(f["n_ports"])]),
    )


def last_seconds(
    history: np.ndarray, current_second: int, seconds: int, include_current: bool = False
) -> np.ndarray:
    """The rows of the last `seconds` closed seconds (and the open one if asked), oldest first,
    from a series ring where row `s % len(history)` holds second `s`. Seconds the ring no longer
    holds, or never held (before start), are left out, so fewer rows may come back."""
    rows = len(history)
    last = current_second if include_current else current_second - 1
    wanted = np.arange(max(0, last - min(seconds, rows) + 1), last + 1, dtype=np.int64)
    picked: np.ndarray = history[wanted % rows]
    kept: np.ndarray = picked[picked["second"] == wanted]
    return kept
