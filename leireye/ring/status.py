"""The capture status block: what the capture process is doing, in a small shared-memory segment.

The supervisor creates the block (and owns, hands over and unlinks it); the capture process
attaches it writable before dropping privileges and keeps it up to date; the supervisor, the stats
process and the web workers read it. Nobody waits for anybody: the writer never blocks, a reader
retries while a write is in progress.
"""

from __future__ import annotations

import enum
import struct
import time
from typing import Any, Final

import msgspec
import numpy as np

from leireye.errors import RingError
from leireye.record import DecodeError
from leireye.ring.shm import Segment, attach_segment, create_segment

MAGIC: Final = b"LEISTAT\x00"
VERSION: Final = 2
SIZE: Final = 16384
KIND_SLOTS: Final = 16  # per-DecodeError counters stored, indexed by the kind's value
SOURCE_BYTES: Final = 256
BPF_BYTES: Final = 4096  # capture.bpf as given (config.BPF_MAX_BYTES: none is longer)
EFFECTIVE_BPF_BYTES: Final = 8192  # what the kernel runs; ownfilter refuses longer
ERROR_BYTES: Final = 512

_HEADER = struct.Struct("<8sII")  # magic, version, body size
_SEQ_WORD, _HEARTBEAT_WORD, _RESTARTS_WORD = 2, 3, 4  # u8 words at offsets 16, 24, 32
_BODY_OFFSET: Final = 64
_TEXTS: Final = f"{SOURCE_BYTES}s{BPF_BYTES}s{EFFECTIVE_BPF_BYTES}s{ERROR_BYTES}s"
_BODY = struct.Struct(f"<BBBxIiI qqQQQQQ {KIND_SLOTS}Q {_TEXTS}")
_READ_TIMEOUT_S: Final = 0.1


class CaptureState(enum.StrEnum):
    """Stored as its index in this enum's order: append new members, never reorder."""

    IDLE = "idle"  # the block exists, no capture process has written it yet
    STARTING = "starting"
    CAPTURING = "capturing"
    STOPPED = "stopped"  # stopped on request
    ERROR = "error"  # see last_error
    FINISHED = "finished"  # a replay reached the end of its file


_STATES: Final = tuple(CaptureState)


class CaptureStatus(msgspec.Struct, frozen=True, kw_only=True):
    state: CaptureState = CaptureState.IDLE
    capturing: bool = False
    interface: str = ""  # the interface, or the pcap file of a replay
    bpf: str = ""  # capture.bpf, as the user gave it
    effective_bpf: str = ""  # the filter set on the handle (leireye.capture.ownfilter)
    linktype: int = -1  # DLT_*; -1 before the source is open
    snaplen: int = 0
    pid: int = 0
    started_at_ns: int = 0  # wall clock (time.time_ns)
    updated_ns: int = 0  # wall clock of the last write; set by `StatusBlock.write`
    packets_captured: int = 0
    bytes_captured: int = 0  # sum of wire lengths
    kernel_drops: int = 0  # ps_drop
    if_drops: int = 0  # ps_ifdrop
    decode_errors: int = 0
    decode_errors_by_kind: dict[str, int] = msgspec.field(default_factory=dict)  # DecodeError name
    last_error: str = ""
    heartbeat_ns: int = 0  # wall clock (time.time_ns) of the last beat; 0: never
    restarts: int = 0  # written by the supervisor


class StatusBlock:
    """A mapped status block. Layout (little-endian, 16384 bytes):

        offset  size  field
        0       8     magic b"LEISTAT\\0"
        8       4     version (u4): bumped on any change to this layout
        12      4     body size (u4): catches a body changed without a version bump
        16      8     seq (u8): the seqlock; odd while the body is being written
        24      8     heartbeat_ns (i8): wall clock (time.time_ns), outside the seqlock
        32      8     restarts (u8): the supervisor's, outside the seqlock
        40      24    reserved
        64      ...   body, under the seqlock, in this order:
                      state u1 (index in CaptureState), capturing u1, kind slots u1 (16), pad u1,
                      snaplen u4, linktype i4, pid u4,
                      started_at_ns i8, updated_ns i8, packets_captured u8, bytes_captured u8,
                      kernel_drops u8, if_drops u8, decode_errors u8,
                      decode_errors_by_kind 16 x u8 (index = DecodeError value),
                      interface 256 bytes, bpf 4096 bytes, effective_bpf 8192 bytes,
                      last_error 512 bytes (UTF-8, NUL-padded; interface and last_error
                      are cut on a character boundary, a filter that does not fit raises)

    Write order, and why: the writer makes `seq` odd, copies the whole body in one `memcpy`,
    then makes `seq` even again. A reader loads `seq`, copies the body, loads `seq` again and
    keeps the copy only if both loads are the same even number; otherwise it retries. x86-64
    keeps stores in program order and loads in program order, which is all this needs. The body
    has one writer at a time: the capture process while it runs (the supervisor may write it when
    no capture process is alive, e.g. to record a crash).

    `heartbeat_ns` and `restarts` are single aligned 8-byte stores through numpy, never torn, so
    they stay outside the seqlock: `beat()` costs one clock read and one store, and the
    supervisor writes `restarts` without becoming a second writer of the body.

    The heartbeat is the wall clock (`time.time_ns()`, CLOCK_REALTIME), what the supervisor
    compares it with. A step of the clock (NTP, an operator) larger than the heartbeat timeout
    can fake or hide one missed beat; `heartbeat_age_s()` keeps the choice in this one place
    should it become CLOCK_MONOTONIC (system-wide on Linux, so also comparable across processes).
    """

    def __init__(self, segment: Segment) -> None:
        self.segment = segment
        self.name = segment.name
        self._mv = memoryview(segment.buf)
        self._words = np.ndarray((_BODY_OFFSET // 8,), dtype="<u8", buffer=self._mv)

    @classmethod
    def create(
        cls, name: str, owner: tuple[int, int] | None = None, mode: int = 0o600
    ) -> StatusBlock:
        """Create the segment (the supervisor; it owns and later unlinks it)."""
        block = cls(create_segment(name, SIZE, mode=mode, owner=owner))
        _HEADER.pack_into(block._mv, 0, MAGIC, VERSION, _BODY.size)
        return block

    @classmethod
    def attach(cls, name: str, writable: bool = False) -> StatusBlock:
        """Map an existing block, validating its layout; RingError says what is off."""
        segment = attach_segment(name, writable=writable)
        size = segment.size
        if size < _BODY_OFFSET + _BODY.size:
            segment.close()
            raise RingError(f"{name}: segment too small for a status block ({size} bytes)")
        magic, version, body_size = _HEADER.unpack_from(segment.buf, 0)
        problem = None
        if magic != MAGIC:
            problem = f"not a LeirEye status block (bad magic {magic!r})"
        elif version != VERSION:
            problem = f"status layout version is {version}, this LeirEye expects {VERSION}"
        elif body_size != _BODY.size:
            problem = f"status body size is {body_size}, this LeirEye expects {_BODY.size}"
        if problem:
            segment.close()
            raise RingError(f"{name}: {problem}")
        block = cls(segment)
        if writable and block._words[_SEQ_WORD] & 1:
            block._words[_SEQ_WORD] += 1  # a writer died mid-update: the next write repairs it
        return block

    # -- writer side --------------------------------------------------------------------------

    def write(self, status: CaptureStatus) -> None:
        """Publish `status` (all but `heartbeat_ns` and `restarts`), stamp `updated_ns` and beat."""
        kinds = [0] * KIND_SLOTS
        for name, count in status.decode_errors_by_kind.items():
            kind = DecodeError.__members__.get(name.upper())
            if kind is not None and kind < KIND_SLOTS:
                kinds[kind] = count
        body = _BODY.pack(
            _STATES.index(status.state),
            status.capturing,
            KIND_SLOTS,
            status.snaplen,
            status.linktype,
            status.pid,
            status.started_at_ns,
            time.time_ns(),
            status.packets_captured,
            status.bytes_captured,
            status.kernel_drops,
            status.if_drops,
            status.decode_errors,
            *kinds,
            _cut(status.interface, SOURCE_BYTES),
            _fit(status.bpf, BPF_BYTES, "bpf"),
            _fit(status.effective_bpf, EFFECTIVE_BPF_BYTES, "effective_bpf"),
            _cut(status.last_error, ERROR_BYTES),
        )
        words = self._words
        seq = int(words[_SEQ_WORD])
        words[_SEQ_WORD] = seq + 1
        self._mv[_BODY_OFFSET : _BODY_OFFSET + _BODY.size] = body
        words[_SEQ_WORD] = seq + 2
        self.beat()

    def beat(self) -> None:
        """The cheap heartbeat: one clock read, one aligned store."""
        self._words[_HEARTBEAT_WORD] = time.time_ns()

    def set_restarts(self, restarts: int) -> None:
        """The supervisor's counter of capture restarts."""
        self._words[_RESTARTS_WORD] = restarts

    # -- reader side --------------------------------------------------------------------------

    @property
    def heartbeat_ns(self) -> int:
        return int(self._words[_HEARTBEAT_WORD])

    def heartbeat_age_s(self, now_ns: int | None = None) -> float | None:
        """Seconds since the last beat, by the heartbeat's own clock; None if none yet."""
        beat = self.heartbeat_ns
        if beat == 0:
            return None
        return ((time.time_ns() if now_ns is None else now_ns) - beat) / 1e9

    def read(self, timeout_s: float = _READ_TIMEOUT_S) -> CaptureStatus:
        """A consistent copy. Retries while a write is in progress; raises RingError if the
        body stays mid-update for `timeout_s` (a writer killed in the middle of a write)."""
        deadline = time.monotonic() + timeout_s
        words = self._words
        while True:
            before = int(words[_SEQ_WORD])
            if not before & 1:
                body = self._copy_body()
                if int(words[_SEQ_WORD]) == before:
                    return self._decode(body)
            if time.monotonic() > deadline:
                raise RingError(f"{self.name}: status block stuck mid-update (writer died?)")
            time.sleep(0)

    def _copy_body(self) -> bytes:
        return bytes(self._mv[_BODY_OFFSET : _BODY_OFFSET + _BODY.size])

    def _decode(self, body: bytes) -> CaptureStatus:
        f = _BODY.unpack(body)
        state, capturing, slots = f[0], f[1], f[2]
        kinds = f[13 : 13 + KIND_SLOTS]
        by_kind = {k.name.lower(): kinds[k] for k in DecodeError if k and k < slots}
        by_kind.update({f"kind_{i}": n for i, n in enumerate(kinds) if n and i >= len(DecodeError)})
        interface, bpf, effective_bpf, last_error = (_uncut(raw) for raw in f[13 + KIND_SLOTS :])
        return CaptureStatus(
            state=_STATES[state] if state < len(_STATES) else CaptureState.ERROR,
            capturing=bool(capturing),
            snaplen=f[3],
            linktype=f[4],
            pid=f[5],
            started_at_ns=f[6],
            updated_ns=f[7],
            packets_captured=f[8],
            bytes_captured=f[9],
            kernel_drops=f[10],
            if_drops=f[11],
            decode_errors=f[12],
            decode_errors_by_kind=by_kind,
            interface=interface,
            bpf=bpf,
            effective_bpf=effective_bpf,
            last_error=last_error,
            heartbeat_ns=self.heartbeat_ns,
            restarts=int(self._words[_RESTARTS_WORD]),
        )

    # -- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        """Drop the views and unmap (once; a second call does nothing)."""
        if not hasattr(self, "_words"):
            return
        del self._words
        self._mv.release()
        self.segment.close()

    def unlink(self) -> None:
        """Remove the name (the creator only)."""
        self.segment.unlink()


class StatusReport:
    """The status a writer (a capture process, the central's ingest) publishes in its block: a
    frozen struct, replaced field by field and written whole at each change."""

    def __init__(self, block: StatusBlock, status: CaptureStatus) -> None:
        self.block = block
        self.status = status
        block.write(status)

    def update(self, **changes: Any) -> None:
        self.status = msgspec.structs.replace(self.status, **changes)
        self.block.write(self.status)


def _cut(text: str, size: int) -> bytes:
    """`text` as UTF-8 of at most `size` bytes, cut on a character boundary."""
    data = text.encode("utf-8", "replace")
    if len(data) <= size:
        return data
    return data[:size].decode("utf-8", "ignore").encode("utf-8")


def _fit(text: str, size: int, name: str) -> bytes:
    """`text` as UTF-8; ValueError when it is longer than `size` bytes: a filter cut short would
    show something other than what the kernel runs."""
    data = text.encode("utf-8", "replace")
    if len(data) > size:
        raise ValueError(f"{name} is {len(data)} bytes, the status block holds {size}")
    return data


def _uncut(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")
