"""The store's pcapng block builder as it was before the batch version: per frame, in Python.

`leireye.store.pcapng.packet_blocks` builds a whole batch's Enhanced Packet Blocks with numpy;
this is the per-frame builder it replaced (its headers and options built with numpy, then four
pieces joined per frame), kept here as the reference the new one must match byte for byte
(tests/unit/test_pcapng_blocks.py, tests/property/test_pcapng_props.py) and as the "before"
of benchmarks/bench_store.py.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from leireye.store.pcapng import EPB_HEAD, EPB_OVERHEAD, EPB_TAIL, EPB_TYPE, OPT_PACKETID

_PADS: Final = tuple(bytes(k) for k in range(4))


def reference_packet_blocks(
    ids: npt.NDArray[np.uint64],
    ts_ns: npt.NDArray[np.int64],
    wire_lens: npt.NDArray[np.uint32],
    cap_lens: npt.NDArray[np.uint32],
    data: bytes,
    starts: npt.NDArray[np.uint64],
) -> tuple[bytes, npt.NDArray[np.int64]]:
    """What `packet_blocks` returns, one frame at a time."""
    n = len(ids)
    cap = cap_lens.astype(np.int64)
    pad = -cap % 4
    length = EPB_OVERHEAD + cap + pad
    offsets = np.zeros(n, dtype=np.int64)
    if n > 1:
        np.cumsum(length[:-1], out=offsets[1:])
    ts = ts_ns.astype(np.int64).view(np.uint64)
    heads = np.zeros(n, dtype=EPB_HEAD)
    heads["type"] = EPB_TYPE
    heads["length"] = length
    heads["ts_high"] = ts >> np.uint64(32)
    heads["ts_low"] = ts & np.uint64(0xFFFF_FFFF)
    heads["cap_len"] = cap
    heads["wire_len"] = np.maximum(wire_lens.astype(np.int64), cap)
    tails = np.zeros(n, dtype=EPB_TAIL)
    tails["code"] = OPT_PACKETID
    tails["size"] = 8
    tails["id"] = ids
    tails["length"] = length
    head_bytes, tail_bytes = heads.tobytes(), tails.tobytes()
    hs, ts_size = EPB_HEAD.itemsize, EPB_TAIL.itemsize
    view = memoryview(data)
    parts: list[bytes | memoryview] = []
    for i, (start, size, padding) in enumerate(
        zip(starts.tolist(), cap.tolist(), pad.tolist(), strict=True)
    ):
        parts.append(head_bytes[i * hs : (i + 1) * hs])
        parts.append(view[start : start + size])
        parts.append(_PADS[padding])
        parts.append(tail_bytes[i * ts_size : (i + 1) * ts_size])
    return b"".join(parts), offsets
