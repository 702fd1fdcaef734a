"""The fast path's working state for one chunk of frames: the joined bytes, the record columns,
and the helpers every stage uses.

Indices (`ix`) name packets of the chunk; `off` arrays are byte offsets inside each packet's
frame; `start + off` indexes the joined bytes. Every stage takes the packets that reached it,
records the ones that stop there, and passes the others on (see `decode` for the why). Texts are
kept as ids into `texts` until the end, so a text shared by many packets is stored once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from leireye.record import (
    F_MALFORMED,
    F_TRUNCATED,
    INFO_BYTES,
    NO_VLAN,
    App,
    DecodeError,
    Proto,
)

from . import rules
from .fastapp import Result, text

Index = npt.NDArray[np.int64]
Ints = npt.NDArray[np.int64]

_PAD: Final = bytes(16)
_DENSE_KEYS: Final = 1 << 16


def select(mask: npt.NDArray[np.bool_], *arrays: Ints) -> tuple[Ints, ...]:
    """The rows of `arrays` where `mask` holds; the arrays themselves (no copy) when it always
    holds, which is the common case."""
    if mask.all():
        return arrays
    return tuple(a[mask] for a in arrays)


def _proto_table(default: Proto) -> npt.NDArray[np.uint8]:
    table = np.full(256, default, dtype=np.uint8)
    for number, proto in rules.TRANSPORT_PROTO.items():
        table[number] = proto
    return table


_PROTO_BY_VERSION: Final = np.zeros((7, 256), dtype=np.uint8)
_PROTO_BY_VERSION[4] = _proto_table(Proto.IPV4)
_PROTO_BY_VERSION[6] = _proto_table(Proto.IPV6)


class Chunk:
    """Frames joined into one buffer with big-endian views at any byte offset, and one column
    array per record field."""

    def __init__(self, frames: Sequence[bytes]) -> None:
        n = self.n = len(frames)
        self.cap: Ints = np.fromiter(map(len, frames), dtype=np.int64, count=n)
        self.start: Ints = np.zeros(n, dtype=np.int64)
        if n > 1:
            np.cumsum(self.cap[:-1], out=self.start[1:])
        blob = self.blob = b"".join([*frames, _PAD])  # one copy (not `join(...) + pad`: two)
        size = len(blob)
        self.u8 = np.frombuffer(blob, dtype=np.uint8)
        self.u16 = np.ndarray((size - 1,), dtype=">u2", buffer=blob, strides=(1,))
        self.u32 = np.ndarray((size - 3,), dtype=">u4", buffer=blob, strides=(1,))
        self.u64 = np.ndarray((size - 7,), dtype=">u8", buffer=blob, strides=(1,))
        self.ethertype = np.zeros(n, dtype=np.uint16)
        self.vlan = np.full(n, NO_VLAN, dtype=np.uint16)
        self.src_hi, self.src_lo, self.dst_hi, self.dst_lo = np.zeros((4, n), dtype=np.uint64)
        self.sport, self.dport, self.tcp_flags = np.zeros((3, n), dtype=np.uint16)
        (
            self.ip_version,
            self.ip_proto,
            self.icmp_type,
            self.icmp_code,
            self.app,
            self.flags,
            self.error,
        ) = np.zeros((7, n), dtype=np.uint8)
        self.proto = np.zeros(n, dtype=np.uint8)
        self.text_id = np.zeros(n, dtype=np.int64)
        self.texts: list[bytes] = [b""]
        self._text_ids: dict[bytes, int] = {b"": 0}
        self._info_blocks: list[tuple[Index, npt.NDArray[np.bytes_]]] = []
        self.v4: list[tuple[Index, Ints]] = []
        self.v6: list[tuple[Index, Ints]] = []
        self.l4: list[tuple[Ints, ...]] = []  # (ix, transport offset, end, declared end)

    # --- helpers -------------------------------------------------------------------------------

    def at(self, view: npt.NDArray[np.generic], ix: Index, off: Ints | int) -> Ints:
        """The field at offset `off` of each packet in `ix`, from one of the u8/u16/u32 views."""
        values: Ints = view[self.start[ix] + off].astype(np.int64)
        return values

    def text_of(self, value: bytes) -> int:
        """The id of a text that may repeat (ids index `texts`)."""
        found = self._text_ids.get(value)
        if found is None:
            found = self._text_ids[value] = len(self.texts)
            self.texts.append(value)
        return found

    def set_text(self, ix: Index, value: str) -> None:
        if ix.size:
            self.text_id[ix] = self.text_of(text(value))

    def mark(self, ix: Index, error: DecodeError, layer: str) -> None:
        if ix.size:
            self.error[ix] = error
            if error == DecodeError.TRUNCATED:
                self.flags[ix] |= F_TRUNCATED
            elif error == DecodeError.MALFORMED:
                self.flags[ix] |= F_MALFORMED
            self.set_text(ix, rules.error_text(layer, error))

    def mark_where(
        self, ix: Index, bad: npt.NDArray[np.bool_], error: DecodeError, layer: str
    ) -> None:
        if bad.any():
            self.mark(ix[bad], error, layer)

    def app_failed(self, ix: Index, app: App, cut: npt.NDArray[np.bool_]) -> None:
        """A dissector could not read these payloads: truncated if cut, else APP_PARSE."""
        self.mark(ix[cut], DecodeError.TRUNCATED, app.label)
        self.mark(ix[~cut], DecodeError.APP_PARSE, app.label)

    def need(
        self, ix: Index, off: Ints, size: Ints | int, limit: Ints, layer: str
    ) -> npt.NDArray[np.bool_]:
        """Which packets have `size` bytes at `off` before `limit`; the others are recorded as
        truncated (past the frame) or malformed (past the declared length)."""
        end = off + size
        ok = end <= limit
        if not ok.all():
            bad = ~ok
            past_frame = end[bad] > self.cap[ix[bad]]
            self.mark(ix[bad][past_frame], DecodeError.TRUNCATED, layer)
            self.mark(ix[bad][~past_frame], DecodeError.MALFORMED, layer)
        return ok

    def by_key(self, ix: Index, keys: Ints, make: Callable[[int], str]) -> None:
        """`info` from a text that depends only on `keys`: built once per distinct key."""
        if not ix.size:
            return
        top = int(keys.max())
        if int(keys.min()) >= 0 and top < _DENSE_KEYS:
            present = np.zeros(top + 1, dtype=bool)
            present[keys] = True
            unique = np.flatnonzero(present)
            lookup = np.zeros(top + 1, dtype=np.int64)
            lookup[unique] = [self.text_of(text(make(key))) for key in unique.tolist()]
            self.text_id[ix] = lookup[keys]
        else:
            unique, inverse = np.unique(keys, return_inverse=True)
            ids = np.array(
                [self.text_of(text(make(key))) for key in unique.tolist()], dtype=np.int64
            )
            self.text_id[ix] = ids[inverse]

    def set_info(self, ix: Index, texts: list[bytes]) -> None:
        """One text per packet (texts that rarely repeat)."""
        if ix.size:
            first = len(self.texts)
            self.texts.extend(texts)
            self.text_id[ix] = np.arange(first, len(self.texts), dtype=np.int64)

    def set_info_array(self, ix: Index, texts: npt.NDArray[np.bytes_]) -> None:
        """One text per packet, built as a numpy bytes array: copied into the records as it is
        (no Python object per packet), unless a later stage sets another text."""
        if ix.size:
            self.text_id[ix] = 0
            self._info_blocks.append((ix, texts))

    def set_results(self, ix: Index, results: list[Result]) -> None:
        if ix.size:
            apps, texts, errors = zip(*results, strict=True)
            self.app[ix] = np.fromiter(apps, dtype=np.uint8, count=ix.size)
            first = len(self.texts)
            self.texts.extend(texts)
            self.text_id[ix] = np.arange(first, len(self.texts), dtype=np.int64)
            error = np.fromiter(errors, dtype=np.uint8, count=ix.size)
            if error.any():
                self.error[ix] = error
                self.flags[ix[error == DecodeError.TRUNCATED]] |= F_TRUNCATED

    def set_texts(self, ix: Index, app: App, texts: list[bytes], errors: list[int] | None) -> None:
        """One application and one text per packet; `errors` None when every one read."""
        if ix.size:
            self.app[ix] = app
            self.set_info(ix, texts)
            error = np.array(errors or (), dtype=np.uint8)
            if error.any():
                self.error[ix] = error
                self.flags[ix[error == DecodeError.TRUNCATED]] |= F_TRUNCATED

    def spans(self, ix: Index, begin: Ints, end: Ints) -> tuple[list[int], list[int]]:
        """Where `frame[begin:end]` of each packet lies in `blob`."""
        at = self.start[ix]
        return (at + begin).tolist(), (at + end).tolist()

    def payloads(self, ix: Index, begin: Ints, end: Ints) -> list[bytes]:
        blob = self.blob
        return [blob[a:b] for a, b in zip(*self.spans(ix, begin, end), strict=True)]

    # --- output --------------------------------------------------------------------------------

    def write(self, out: npt.NDArray[np.void], ts: Ints, wire: Ints, linktype: int) -> None:
        self.proto[:] = np.where(
            self.ip_version > 0, _PROTO_BY_VERSION[self.ip_version, self.ip_proto], self.proto
        )
        out["seq"] = 0
        out["sensor"] = 0
        out["ts_ns"] = ts
        out["wire_len"] = wire & 0xFFFF_FFFF
        out["cap_len"] = self.cap
        out["linktype"] = linktype & 0xFFFF
        for name in (
            "src_hi", "src_lo", "dst_hi", "dst_lo", "ethertype", "vlan", "tcp_flags",
            "ip_version", "ip_proto", "icmp_type", "icmp_code", "proto", "app", "flags", "error",
        ):  # fmt: skip
            out[name] = getattr(self, name)
        out["src_port"] = self.sport
        out["dst_port"] = self.dport
        out["info"] = np.array(self.texts, dtype=f"S{INFO_BYTES}")[self.text_id]
        for ix, texts in self._info_blocks:
            unset = self.text_id[ix] == 0
            out["info"][ix[unset]] = texts[unset]
