"""Packet sources: a live interface or a pcap file, behind one small polling interface.

Both read through libpcap (pypcap). `poll(timeout_s)` returns the copied frames of one read
(`CapturedFrames`), none when nothing arrived within the timeout; it never blocks longer than
that, so the capture loop can beat its heartbeat and notice a stop request even on an idle link.

Live: the handle is non-blocking and the wait is a `poll()` on its descriptor (pypcap's blocking
reads hold the GIL and may never return on an idle interface). Offline: the file is paced by its
own timestamps ("original"), a multiple of them (a float), or not at all ("max").

Timestamps of a replay are the file's, shifted so that its first packet is stamped with the wall
clock at replay start, and divided by the speed factor ("max" keeps the file's own spacing and can
therefore run ahead of the clock). Each looped pass continues one mean inter-packet gap after the
previous pass's latest packet, so timestamps keep increasing. The console thus shows current times.

Wire lengths: pypcap 1.3.0 hands over the captured bytes only (not `pcap_pkthdr.len`). A frame
shorter than the snapshot length was captured whole, so its wire length is its length; a frame cut
at the snapshot length gets the length its IP header announces (see `wire_length`).
"""

from __future__ import annotations

import ast
import logging
import os
import re
import select
import struct
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, NamedTuple

import pcap

from leireye.capture.ownfilter import OwnTraffic, kernel_filter
from leireye.capture.pcapfile import FILE_MAGICS
from leireye.config import CaptureConfig
from leireye.errors import CaptureError
from leireye.record import LinkType

log = logging.getLogger("leireye.capture")

PROC_NET: Final = Path("/proc/net")
_RTF_UP: Final = 0x0001
_RTF_REJECT: Final = 0x0200


class CapturedFrames(NamedTuple):
    """Frames read in one poll, in capture order. `frames` are private copies."""

    ts_ns: list[int]
    wire_lens: list[int]
    frames: list[bytes]
    linktype: int


class PacketSource(ABC):
    """What the capture loop reads from. `stats()` is `(ps_recv, ps_drop, ps_ifdrop)`."""

    description: str  # the interface name or the file path
    bpf: str  # the filter set on the handle (for a live source, with `own` left out)
    linktype: int
    snaplen: int
    batch_max: int
    _handle: Any  # the pypcap handle

    @property
    def finished(self) -> bool:
        """True once a replay reached its end (never for a live source)."""
        return False

    @abstractmethod
    def poll(self, timeout_s: float) -> CapturedFrames: ...

    @abstractmethod
    def stats(self) -> tuple[int, int, int]: ...

    def check_reopen(self) -> None:  # noqa: B027 - deliberately a no-op by default
        """Raise CaptureError if the source could not reopen itself now (after a privilege
        drop); a no-op for sources that never reopen."""

    def fileno(self) -> int:
        return int(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def _read(self, ts: list[int], frames: list[bytes], limit: int | None = None) -> int:
        """One `pcap_dispatch` of up to `limit` (default `batch_max`) packets, appended as
        private copies."""

        first = len(frames)

        # The one Python call per packet: the appends are bound once, not looked up per packet.
        def collect(t: int, pkt: bytes, ts_add: Any = ts.append, add: Any = frames.append) -> None:
            ts_add(t)
            add(pkt)

        n: int = self._handle.dispatch(limit or self.batch_max, collect)
        if len(frames) > first and type(frames[-1]) is not bytes:  # pypcap 1.3 copies to bytes;
            frames[first:] = [bytes(f) for f in frames[first:]]  # never keep a view into libpcap
        return n


def open_source(
    config: CaptureConfig,
    *,
    after_open: Callable[[int], None] | None = None,
    own: OwnTraffic | None = None,
) -> PacketSource:
    """Open the source the configuration names: `pcap` (a file) if set, else `interface`.

    `after_open(fd)` runs on a live handle right after activation, before any packet is read:
    the hook for joining a PACKET_FANOUT group when several capture processes share a link.
    `own` (the sensor's own web traffic) is left out of a live capture by its kernel filter;
    a replay ignores it.
    """
    if config.pcap is not None:
        return OfflineSource(config.pcap, config)
    return LiveSource(resolve_interface(config.interface), config, after_open=after_open, own=own)


class LiveSource(PacketSource):
    """A live interface: immediate mode, non-blocking, nanosecond timestamps."""

    def __init__(
        self,
        interface: str,
        config: CaptureConfig,
        *,
        after_open: Callable[[int], None] | None = None,
        own: OwnTraffic | None = None,
    ) -> None:
        if os.path.isfile(interface):
            # pypcap tries a name as a savefile first: "lo" would silently read ./lo.
            raise CaptureError(f"interface {interface!r} is also a file in {os.getcwd()}")
        self.description = interface
        self.batch_max = config.batch_max
        self.coalesce_s = config.coalesce_ms / 1000
        try:
            self._handle = pcap.pcap(
                name=interface,
                snaplen=config.snaplen,
                promisc=config.promisc,
                timeout_ms=config.poll_ms,
                immediate=True,
                timestamp_in_ns=True,
                buffer_size=config.buffer_mb << 20,
            )
        except OSError as exc:
            text = libpcap_text(exc)
            hint = " (capturing needs root or CAP_NET_RAW)" if "ermi" in text else ""
            raise CaptureError(f"cannot capture on {interface!r}: {text}{hint}") from None
        try:
            if after_open is not None:
                after_open(self._handle.fileno())
            self.linktype = int(self._handle.datalink())
            self.bpf = kernel_filter(config.bpf, own, self.linktype)
            set_filter(self._handle, self.bpf, config.bpf)
            self._handle.setnonblock(True)
        except BaseException:
            self._handle.close()
            raise
        self.snaplen = int(self._handle.snaplen)
        self._poller = select.poll()
        self._poller.register(self._handle.fileno(), select.POLLIN)

    def poll(self, timeout_s: float) -> CapturedFrames:
        """Wait up to `timeout_s` for packets; once some arrived, keep gathering for up to
        `coalesce_ms` or until `batch_max`, since each decode call has a fixed cost."""
        ts: list[int] = []
        frames: list[bytes] = []
        n = self._read(ts, frames)
        if n == 0:
            self._poller.poll(max(0, int(timeout_s * 1000)))
            n = self._read(ts, frames)
        if n > 0 and self.coalesce_s > 0 and len(frames) < self.batch_max:
            deadline = time.monotonic() + self.coalesce_s
            while len(frames) < self.batch_max and n >= 0:
                left_ms = int((deadline - time.monotonic()) * 1000 + 0.999)
                if left_ms <= 0 or not self._poller.poll(left_ms):
                    break
                n = self._read(ts, frames, self.batch_max - len(frames))
        if n < 0:
            raise CaptureError(f"reading {self.description!r}: {_text(self._handle.geterr())}")
        return CapturedFrames(
            ts, wire_lengths(frames, self.linktype, self.snaplen), frames, self.linktype
        )

    def stats(self) -> tuple[int, int, int]:
        recv, drop, ifdrop = self._handle.stats()
        return int(recv), int(drop), int(ifdrop)


class OfflineSource(PacketSource):
    """A pcap or pcapng file, paced by `config.replay`. `clock` (monotonic ns) and `sleep` are
    injectable for tests."""

    def __init__(
        self,
        path: str,
        config: CaptureConfig,
        *,
        clock: Callable[[], int] = time.monotonic_ns,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.description = path
        self.bpf = config.bpf
        speed = config.replay.speed
        self.speed = None if speed == "max" else 1.0 if speed == "original" else float(speed)
        self.loop = config.replay.loop
        self.batch_max = config.batch_max
        self._clock = clock
        self._sleep = sleep
        self._handle = _open_file(path, self.bpf)
        self.linktype = int(self._handle.datalink())
        self.snaplen = int(self._handle.snaplen)
        self._finished = False
        self._emitted = 0
        self._pending_ts: list[int] = []
        self._pending: list[bytes] = []
        self._pos = 0
        self._first_ts: int | None = None  # the file's first timestamp, as read
        self._anchor_wall = 0
        self._anchor_mono = 0
        self._offset = 0  # added to file timestamps of the current pass
        self._pass_min: int | None = None
        self._pass_max = 0
        self._pass_count = 0

    @property
    def finished(self) -> bool:
        return self._finished

    def poll(self, timeout_s: float) -> CapturedFrames:
        deadline = self._clock() + int(timeout_s * 1e9)
        ts: list[int] = []
        frames: list[bytes] = []
        factor = self.speed or 1.0
        while len(frames) < self.batch_max and not self._finished:
            if self._pos >= len(self._pending) and not self._refill():
                continue
            first = self._first_ts or 0
            end = min(len(self._pending), self._pos + self.batch_max - len(frames))
            take = end
            if self.speed is not None:
                now_rel = (self._clock() - self._anchor_mono) * self.speed
                take = self._pos
                while take < end and self._pending_ts[take] - first <= now_rel:
                    take += 1
            if take > self._pos:
                moved = self._pending_ts[self._pos : take]
                base = self._anchor_wall - first
                if factor == 1.0:
                    ts.extend([base + t for t in moved])
                else:
                    wall = self._anchor_wall
                    ts.extend([wall + int((t - first) / factor) for t in moved])
                frames.extend(self._pending[self._pos : take])
            self._pos = take
            if take < end:  # paced, and the next packet is not due yet
                now = self._clock()
                if frames or now >= deadline:
                    break
                due = self._anchor_mono + int((self._pending_ts[take] - first) / factor)
                self._sleep(max(0, min(due, deadline) - now) / 1e9)
        self._emitted += len(frames)
        return CapturedFrames(
            ts, wire_lengths(frames, self.linktype, self.snaplen), frames, self.linktype
        )

    def _refill(self) -> bool:
        """Read the next chunk into the pending lists; False if none (EOF or a new pass)."""
        ts: list[int] = []
        frames: list[bytes] = []
        if self._read(ts, frames) < 0:
            error = _text(self._handle.geterr())
            log.warning("%s: %s; treating it as the end of the file", self.description, error)
        if not frames:
            self._end_of_pass()
            return False
        if self._first_ts is None:
            self._first_ts = ts[0]
            self._anchor_wall = time.time_ns()
            self._anchor_mono = self._clock()
        self._pass_min = min(ts) if self._pass_min is None else min(self._pass_min, min(ts))
        self._pass_max = max(self._pass_max, max(ts))
        self._pass_count += len(ts)
        off = self._offset
        self._pending_ts = [t + off for t in ts] if off else ts
        self._pending = frames
        self._pos = 0
        return True

    def _end_of_pass(self) -> None:
        if not self.loop or self._pass_min is None:
            if self.loop:
                log.warning("%s: no packets in a whole pass; not looping", self.description)
            self._finished = True
            return
        span = self._pass_max - self._pass_min
        gap = span // (self._pass_count - 1) if self._pass_count > 1 else 1_000_000
        self._offset += span + max(gap, 1)
        self._pass_min, self._pass_max, self._pass_count = None, 0, 0
        self._handle.close()
        self._handle = _open_file(self.description, self.bpf)

    def check_reopen(self) -> None:
        if not self.loop:
            return
        try:
            with open(self.description, "rb"):
                pass
        except OSError as exc:
            raise CaptureError(
                f"replay.loop reopens {self.description} at each pass, and this process can no "
                f"longer read it: {exc.strerror}"
            ) from None

    def stats(self) -> tuple[int, int, int]:
        return self._emitted, 0, 0


def _open_file(path: str, bpf: str) -> Any:
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise CaptureError(f"cannot read pcap file {path}: {exc.strerror}") from None
    if magic not in FILE_MAGICS:
        raise CaptureError(f"{path} is not a pcap or pcapng file")
    try:
        handle = pcap.pcap(name=path, timestamp_in_ns=True)
    except OSError:
        # pypcap falls back to opening the name as an interface: its message would mislead.
        raise CaptureError(f"{path}: libpcap cannot read this capture file") from None
    try:
        set_filter(handle, bpf)
    except BaseException:
        handle.close()
        raise
    return handle


def set_filter(handle: Any, bpf: str, user_bpf: str | None = None) -> None:
    """Set `bpf` on `handle`; `user_bpf` is the part of it the user wrote, which an error names
    unless that part compiles on its own (then the sensor's own addition is at fault)."""
    if not bpf:
        return
    try:
        handle.setfilter(bpf)
    except OSError as exc:
        text = libpcap_text(exc)
        if user_bpf is None or user_bpf == bpf or not _compiles(user_bpf, handle.datalink()):
            raise CaptureError(f"invalid BPF filter {user_bpf or bpf!r}: {text}") from None
        raise CaptureError(
            f"invalid BPF filter {bpf!r} (the sensor's own web traffic left out of {user_bpf!r}; "
            f"capture.include_own_traffic: true keeps it): {text}"
        ) from None


def _compiles(bpf: str, linktype: int) -> bool:
    try:
        pcap.bpf(bpf.encode("utf-8", "replace"), linktype)
    except OSError:
        return False
    return True


def libpcap_text(exc: OSError) -> str:
    """libpcap's own message out of a pypcap OSError (which wraps it in bytes repr)."""
    arg = exc.args[0] if exc.args else str(exc)
    if isinstance(arg, bytes):
        return _text(arg)
    match = re.search(r"library was (b'.*'|b\".*\")$", str(arg))
    if match:
        return _text(ast.literal_eval(match.group(1)))
    return str(arg)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


# -- interface resolution ---------------------------------------------------------------------


def resolve_interface(name: str, proc_net: Path = PROC_NET) -> str:
    """`auto` -> the interface of the default route (IPv4 first, then IPv6), else `lo`."""
    if name != "auto":
        return name
    texts = []
    for file in ("route", "ipv6_route"):
        try:
            texts.append((proc_net / file).read_text())
        except OSError:  # no IPv6, or no /proc: fall back below
            texts.append("")
    return default_route_interface(*texts) or "lo"


def default_route_interface(route: str, ipv6_route: str) -> str | None:
    """The interface of the lowest-metric usable default route, IPv4 before IPv6, from the
    text of /proc/net/route and /proc/net/ipv6_route; None when there is none."""
    v4 = [
        (f[0], f[3], int(f[6])) for f in _rows(route.splitlines()[1:], 8) if f[1] == f[7] == "0" * 8
    ]
    v6 = [
        (f[9], f[8], int(f[5], 16))
        for f in _rows(ipv6_route.splitlines(), 10)
        if f[0] == "0" * 32 and f[1] == "00"
    ]
    for routes in (v4, v6):
        usable = [
            (metric, iface)
            for iface, flags, metric in routes
            if int(flags, 16) & (_RTF_UP | _RTF_REJECT) == _RTF_UP and iface != "lo"
        ]
        if usable:
            return min(usable)[1]
    return None


def _rows(lines: list[str], width: int) -> list[list[str]]:
    return [f for f in (line.split() for line in lines) if len(f) >= width]


# -- wire length ------------------------------------------------------------------------------

_VLAN_TPIDS: Final = (0x8100, 0x88A8, 0x9100)
_IP_ETHERTYPES: Final = (0x0800, 0x86DD)
_U16: Final = struct.Struct("!H")
_FIXED_IP_OFFSET: Final[dict[int, int]] = {
    LinkType.RAW: 0, LinkType.RAW_OLD: 0, LinkType.IPV4: 0, LinkType.IPV6: 0,
    LinkType.NULL: 4, LinkType.LOOP: 4,
}  # fmt: skip
_COOKED: Final[dict[int, tuple[int, int]]] = {
    LinkType.LINUX_SLL: (14, 16),
    LinkType.LINUX_SLL2: (0, 20),
}


def wire_lengths(frames: list[bytes], linktype: int, snaplen: int) -> list[int]:
    lengths = list(map(len, frames))
    if not lengths or max(lengths) < snaplen:  # nothing was cut: the common case, no walk
        return lengths
    for i, n in enumerate(lengths):
        if n >= snaplen:
            lengths[i] = wire_length(frames[i], linktype, snaplen)
    return lengths


def wire_length(frame: bytes, linktype: int, snaplen: int) -> int:
    """The length of `frame` on the wire: its own length unless it was cut at `snaplen`, then
    the link header plus the IP length field (never less than what was captured)."""
    n = len(frame)
    if n < snaplen:
        return n
    off = _ip_offset(frame, linktype)
    if off is None or n < off + 6:
        return n
    version = frame[off] >> 4
    if version == 4:
        return max(n, off + int(_U16.unpack_from(frame, off + 2)[0]))
    if version == 6:
        payload = int(_U16.unpack_from(frame, off + 4)[0])
        return max(n, off + 40 + payload) if payload else n  # 0: a jumbogram
    return n


def _ip_offset(frame: bytes, linktype: int) -> int | None:
    if linktype in _FIXED_IP_OFFSET:
        return _FIXED_IP_OFFSET[linktype]
    if linktype in _COOKED:  # Linux cooked captures: (where the protocol is, header length)
        at, off = _COOKED[linktype]
        ok = len(frame) >= off and _U16.unpack_from(frame, at)[0] in _IP_ETHERTYPES
        return off if ok else None
    off = 12
    while linktype == LinkType.EN10MB and len(frame) >= off + 2:
        ethertype = _U16.unpack_from(frame, off)[0]
        if ethertype not in _VLAN_TPIDS:
            return off + 2 if ethertype in _IP_ETHERTYPES else None
        off += 4
    return None
