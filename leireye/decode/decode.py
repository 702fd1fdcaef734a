"""The fast decoder: a batch of frames in, a batch of records out, headers read with numpy.

Why it is shaped so. A Python function per packet costs microseconds before it has read a
field; at half a million packets a second the whole budget is two. So the batch is joined into
one byte string and every header field of every packet is one numpy gather: `u16[start + off]`
over index arrays, where `u16`, `u32`, `u64` are big-endian views of the joined bytes with a
stride of one byte, so a field at any offset is a single fancy-index read. Each layer is a stage
over the indices of the packets that reached it: it checks that its header fits ("needs", see
`rules`), records the failures in bulk, reads its fields, and hands the survivors (with their
offsets and payload ends) to the next stage. Loops that depend on the packet (VLAN tags, MPLS
labels, IPv6 extension headers) run as a few rounds over a shrinking index set.

Only what needs a dissector goes through Python one packet at a time (`fastapp`): SSH banners,
TLS ClientHellos, HTTP start lines, DNS, DHCP and SSDP. Everything else is settled by masks:
"TLS Application Data" from a record header, "TLS ServerHello" from a handshake type, "QUIC
1-RTT" or "NTP client" from a first byte, "HTTPS [ACK]" from a port and the flags. Texts that
repeat (ICMP types, services with flags, error texts) are built once per distinct key of the
chunk and stored once, as ids into a table of texts, until the records are written. DNS messages
(after their id) and HTTP start lines seen before are looked up in small bounded caches instead
of being parsed again: names are asked for over and over, and the text depends on nothing else.

The chunk is the unit of work (at most CHUNK frames): a call costs ~0.5 ms whatever its size,
so batches of a few thousand frames are where the path is fast.

The rules are in `rules`; `reference.decode_reference` is the plain reading of them that this
module must agree with, field for field, on any bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from leireye.record import RECORD_DTYPE, LinkType

from . import rules
from .batch import DecodedBatch, count_errors, empty_records
from .chunk import Chunk
from .layers import ethernet_like, loopback, network_layers, raw, unsupported

CHUNK: Final = 8192
"""Frames decoded together; bounds the temporary arrays."""

_HEADER_LINKS: Final = {
    LinkType.EN10MB: (14, 12, "Ethernet"),
    LinkType.LINUX_SLL: (16, 14, "SLL"),
    LinkType.LINUX_SLL2: (20, 0, "SLL2"),
}


def _decode_chunk(c: Chunk, linktype: int) -> None:
    everyone = np.arange(c.n, dtype=np.int64)
    zero = np.zeros(c.n, dtype=np.int64)
    if linktype in _HEADER_LINKS:
        size, at, layer = _HEADER_LINKS[LinkType(linktype)]
        ethernet_like(c, everyone, size, at, layer)
    elif linktype in (LinkType.NULL, LinkType.LOOP):
        loopback(c, everyone, little_endian=linktype == LinkType.NULL)
    elif linktype in (LinkType.RAW, LinkType.RAW_OLD):
        raw(c, everyone)
    elif linktype == LinkType.IPV4:
        c.ethertype[:] = rules.ETH_P_IP
        c.v4.append((everyone, zero))
    elif linktype == LinkType.IPV6:
        c.ethertype[:] = rules.ETH_P_IPV6
        c.v6.append((everyone, zero))
    else:
        unsupported(c, linktype)
        return
    network_layers(c)


def decode_batch(
    frames: Sequence[bytes],
    ts_ns: Sequence[int] | npt.NDArray[np.int64],
    wire_lens: Sequence[int] | npt.NDArray[np.integer[Any]],
    linktype: int,
    out: npt.NDArray[Any] | None = None,
) -> DecodedBatch:
    """Decode `frames` (all of one `linktype`) into RECORD_DTYPE rows, `seq` left 0.

    `out`, when given, is a RECORD_DTYPE array of at least len(frames) rows: the first
    len(frames) are overwritten (every field) and returned as `records`. Never raises for any
    frame bytes; raises ValueError only for mismatched argument lengths or a wrong `out`.
    """
    n = len(frames)
    ts = np.asarray(ts_ns, dtype=np.int64).reshape(-1)
    wire = np.asarray(wire_lens, dtype=np.int64).reshape(-1)
    if len(ts) != n or len(wire) != n:
        raise ValueError(f"{n} frames but {len(ts)} timestamps and {len(wire)} wire lengths")
    if out is None:
        records = empty_records(n)
    elif out.dtype != RECORD_DTYPE or out.ndim != 1 or len(out) < n:
        raise ValueError("out must be a 1-D RECORD_DTYPE array with a row per frame")
    else:
        records = out[:n]
    for lo in range(0, n, CHUNK):
        hi = min(lo + CHUNK, n)
        chunk = Chunk(frames[lo:hi])
        _decode_chunk(chunk, int(linktype))
        chunk.write(records[lo:hi], ts[lo:hi], wire[lo:hi], int(linktype))
    return DecodedBatch(records, count_errors(records))
