"""Comparing the fast and the reference decodings of the same frames, field by field."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from leireye.decode.decode import decode_batch
from leireye.decode.reference.decoder import reference_batch
from leireye.record import RECORD_DTYPE, LinkType


def first_mismatch(
    frames: Sequence[bytes],
    fast: npt.NDArray[np.void],
    reference: npt.NDArray[np.void],
    label: str = "",
) -> str | None:
    """None when both record arrays are equal in every field, else a description of the first
    record that differs: its index, the frame's bytes in hex and each differing field."""
    if len(fast) != len(reference):
        return f"{label}: {len(fast)} records against {len(reference)}"
    fields = RECORD_DTYPE.names or ()
    differ = np.zeros(len(fast), dtype=bool)
    for name in fields:
        differ |= fast[name] != reference[name]
    if not differ.any():
        return None
    i = int(np.flatnonzero(differ)[0])
    lines = [f"{label}: record {i} of {len(fast)} differs ({int(differ.sum())} in all)"]
    lines.append(f"  frame ({len(frames[i])} bytes): {bytes(frames[i]).hex()}")
    for name in fields:
        a, b = fast[i][name], reference[i][name]
        if a != b:
            lines.append(f"  {name}: fast={a!r} reference={b!r}")
    return "\n".join(lines)


def decode_both(
    frames: Sequence[bytes], linktype: int, wire_lens: Sequence[int] | None = None
) -> npt.NDArray[np.void]:
    """Decode `frames` with both paths; raise AssertionError with the first difference, else
    return the records."""
    ts = list(range(1, len(frames) + 1))
    wire = list(wire_lens) if wire_lens is not None else [len(f) for f in frames]
    fast = decode_batch(frames, ts, wire, linktype).records
    reference = reference_batch(frames, ts, wire, linktype).records
    mismatch = first_mismatch(frames, fast, reference, f"linktype {linktype}")
    if mismatch is not None:
        raise AssertionError(mismatch)
    return fast


def decode_checked(
    frame: bytes, linktype: int = LinkType.EN10MB, wire_len: int | None = None
) -> np.void:
    """One frame through both decoders, which must agree; the record."""
    record: np.void = decode_both([frame], linktype, None if wire_len is None else [wire_len])[0]
    return record


def record_info(record: np.void) -> str:
    """The `info` field as text (numpy already removed the NUL padding)."""
    info: bytes = record["info"]
    return info.decode("utf-8", errors="replace")
