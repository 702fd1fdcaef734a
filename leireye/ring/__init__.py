"""The shared-memory packet ring: layout, single writer, lock-free readers."""

from leireye.ring.layout import LAYOUT_VERSION, RingLayout
from leireye.ring.ring import Ring, RingRead, RingReader, RingWriter, RowsCopy, Start

__all__ = [
    "LAYOUT_VERSION",
    "Ring",
    "RingLayout",
    "RingRead",
    "RingReader",
    "RingWriter",
    "RowsCopy",
    "Start",
]
