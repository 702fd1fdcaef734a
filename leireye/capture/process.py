"""The capture process: read packets, decode them, publish them to the ring, report status.

`run_capture` is the target of a spawned child of the supervisor. It opens everything it needs
as root (ring, status block, capture handle, the directory for stuck frames), drops to
`capture.user` before reading the first packet, and then loops: poll the source, decode the
batch, write it to the ring (which never waits for readers), update the status block.

Exit codes (`ExitCode`; the supervisor acts on them):

    0   OK: stopped by SIGTERM or `stop`, or a replay reached the end of its file
    1   ERROR: an error while capturing (the interface went away, an unexpected bug): restart
    3   FATAL: the capture cannot start (no such interface or user, no permission, bad BPF,
        unreadable file, missing or incompatible shared memory); restarting will not help
    4   NO_FANOUT: shard k > 0 of a multi-process capture, and the kernel refused
        PACKET_FANOUT: shard 0 captures alone, this one is not needed (not restarted)
    70  STUCK: the watchdog found a decode stuck on one batch, saved it, and exited

The watchdog is a thread: the loop marks each iteration and the batch it is decoding; if an
iteration takes longer than `heartbeat_timeout_s`, the watchdog writes that batch (and, when it
can tell, the exact frame) to `<state_dir>/stuck/stuck-<UTC time>.pcap` and exits with 70. While
the loop is healthy the watchdog also beats the heartbeat, so a decode hung in C code that holds
the GIL (where no thread runs) stops the heartbeat and the supervisor's SIGKILL is the backstop.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np

from leireye.capture.fanout import FanoutJoin, FanoutRefused, ShardSpec
from leireye.capture.handoff import FrameHandoff
from leireye.capture.ownfilter import WebListener, own_traffic
from leireye.capture.pcapfile import write_pcap
from leireye.capture.source import CapturedFrames, PacketSource, open_source
from leireye.config import Config
from leireye.decode.batch import DecodedBatch
from leireye.errors import CaptureError, LeirEyeError
from leireye.exitcodes import ExitCode
from leireye.privileges import drop_privileges, lookup_user, private_dir
from leireye.proctitle import set_title
from leireye.record import RECORD_DTYPE, DecodeError
from leireye.ring import Ring
from leireye.ring.ids import IdAllocator
from leireye.ring.shards import ShardSet, ShardWriter, ids_name, shard_name
from leireye.ring.status import CaptureState, CaptureStatus, StatusBlock, StatusReport
from leireye.stopping import StopEvent, StopFlag, stop_on_sigterm

log = logging.getLogger("leireye.capture")

STATUS_PERIOD_S: Final = 0.1  # status block (and kernel drop counters) refresh
_U32: Final = 1 << 32


class Decode(Protocol):
    """`leireye.decode.decode.decode_batch`, or a stand-in (tests)."""

    def __call__(
        self,
        frames: Sequence[bytes],
        ts_ns: Sequence[int],
        wire_lens: Sequence[int],
        linktype: int,
        out: np.ndarray | None = None,
    ) -> DecodedBatch: ...


def run_capture(
    config: Config,
    ring_name: str,
    status_name: str,
    stop: StopEvent | None = None,
    *,
    decode: Decode | None = None,
    state_dir: Path | str | None = None,
    shard: ShardSpec | None = None,
    web: WebListener | None = None,
) -> int:
    """Capture until SIGTERM, `stop`, or the end of a replay; return the exit code.

    `ring_name`/`status_name` name the run's first shard; `shard` says which one this process
    writes (`leireye.ring.shards.shard_name`) and which fanout group it joins. `web` is where
    the sensor's web server listens: a live capture leaves that traffic out
    (`leireye.capture.ownfilter`)."""
    with stop_on_sigterm(stop) as flag:
        spec = shard or ShardSpec()
        return _run(config, ring_name, status_name, flag, decode, state_dir, spec, web)


def _set_nice(nice: int) -> None:
    """Run this process at `nice` (capture.nice): only root may lower it, hence before the
    privilege drop. A refusal is logged, not fatal: the capture works, with less headroom."""
    try:
        if os.getpriority(os.PRIO_PROCESS, 0) != nice:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError as exc:
        log.warning("capture.nice %d not applied: %s", nice, exc)


def _run(
    config: Config,
    ring_name: str,
    status_name: str,
    stopping: StopFlag,
    decode: Decode | None,
    state_dir: Path | str | None,
    spec: ShardSpec,
    web: WebListener | None,
) -> int:
    try:
        status = StatusBlock.attach(shard_name(status_name, spec.index), writable=True)
    except LeirEyeError as exc:
        log.error("capture cannot start: %s", exc)
        return ExitCode.FATAL
    cap = config.capture
    report = StatusReport(status, CaptureStatus(
        state=CaptureState.STARTING, interface=cap.pcap or cap.interface, bpf=cap.bpf,
        pid=os.getpid(), started_at_ns=time.time_ns(),
    ))  # fmt: skip
    source: PacketSource | None = None
    ring: Ring | None = None
    peers: ShardSet | None = None
    ids: IdAllocator | None = None
    fanout = FanoutJoin(spec, cap.interface)
    handoff = FrameHandoff(None)  # whole frames for the packet store
    try:
        try:
            ring = Ring.attach(shard_name(ring_name, spec.index), writable=True)
            if spec.count > 1:
                peers = ShardSet.attach(ring_name)
                ids = IdAllocator.attach(ids_name(ring_name), writable=True)
            handoff = FrameHandoff.open(config, ring_name, spec.index)
            decoder = decode or _default_decode()
            account = lookup_user(cap.user)
            stuck_dir = _stuck_dir(Path(state_dir or config.state_dir), account)
            source = open_source(
                cap, after_open=fanout if spec.count > 1 else None, own=own_traffic(cap, web)
            )
            set_title(f"leireye: capture {spec.index} {source.description}",
                      f"leireye-cap{spec.index}")  # fmt: skip
            if note := fanout.refused or _replay_note(config):
                report.update(last_error=note)
            if cap.pcap is None and cap.nice is not None:  # a file cannot overflow
                _set_nice(cap.nice)
            drop_privileges(account)
            source.check_reopen()
            if stuck_dir is not None and not os.access(stuck_dir, os.W_OK | os.X_OK):
                log.warning("%s is not writable after dropping privileges: stuck frames will "
                            "not be saved", stuck_dir)  # fmt: skip
                stuck_dir = None
        except FanoutRefused as exc:
            log.warning("capture shard %d not needed: %s", spec.index, exc)
            report.update(state=CaptureState.STOPPED, last_error=str(exc))
            return ExitCode.NO_FANOUT
        except LeirEyeError as exc:
            log.error("capture cannot start: %s", exc)
            report.update(state=CaptureState.ERROR, last_error=str(exc))
            return ExitCode.FATAL
        watchdog = Watchdog(
            max(cap.heartbeat_timeout_s, 2 * cap.poll_ms / 1000), stuck_dir, source,
            beat=status.beat, on_stuck=lambda text: report.update(
                state=CaptureState.ERROR, capturing=False, last_error=text),
        )  # fmt: skip
        writer = ShardWriter(ring, spec.index, ids, peers)
        handoff.start(source.linktype, source.snaplen)
        loop = _Loop(config, source, writer, report, decoder, stopping, watchdog, handoff)
        watchdog.start()
        try:
            return loop.run()
        finally:
            watchdog.stop()
    except CaptureError as exc:
        log.error("capture failed: %s", exc)
        report.update(state=CaptureState.ERROR, capturing=False, last_error=str(exc))
        return ExitCode.ERROR
    except Exception as exc:  # a bug: say so loudly, leave a trace in the status, restart
        log.exception("capture crashed")
        report.update(state=CaptureState.ERROR, capturing=False, last_error=f"crashed: {exc!r}")
        return ExitCode.ERROR
    finally:
        if source is not None:
            source.close()
        handoff.close()
        for mapped in (ids, peers, ring):
            if mapped is not None:
                mapped.close()
        status.close()


def _replay_note(config: Config) -> str:
    workers = config.capture.workers
    if config.capture.pcap is None or workers == 1:
        return ""
    note = f"capture.workers: {workers} ignored: a pcap replay is read by one process"
    log.warning("%s", note)
    return note


def _default_decode() -> Decode:
    from leireye.decode.decode import decode_batch

    return decode_batch


def _stuck_dir(state_dir: Path, account: Any) -> Path | None:
    try:
        return private_dir(state_dir / "stuck", account)
    except OSError as exc:
        log.warning("cannot prepare %s for stuck frames (%s); they will not be saved",
                    state_dir / "stuck", exc.strerror)  # fmt: skip
        return None


class _Loop:
    def __init__(
        self,
        config: Config,
        source: PacketSource,
        writer: ShardWriter,
        report: StatusReport,
        decode: Decode,
        stopping: StopFlag,
        watchdog: Watchdog,
        handoff: FrameHandoff,
    ) -> None:
        self.source = source
        self.handoff = handoff
        self.writer = writer
        self.report = report
        self.decode = decode
        self.stopping = stopping
        self.poll_s = config.capture.poll_ms / 1000
        self.watchdog = watchdog
        self.packets = 0
        self.bytes = 0
        self.errors_by_kind = np.zeros(len(DecodeError), dtype=np.int64)
        self.out = np.empty(config.capture.batch_max, dtype=RECORD_DTYPE)  # reused every batch
        self.kernel = _WrappingCounters()

    def run(self) -> int:
        source, report = self.source, self.report
        report.update(
            state=CaptureState.CAPTURING, capturing=True, interface=source.description,
            effective_bpf=source.bpf, linktype=source.linktype, snaplen=source.snaplen,
        )  # fmt: skip
        log.info("capturing on %s (linktype %d, snaplen %d, filter %r)", source.description,
                 source.linktype, source.snaplen, source.bpf)  # fmt: skip
        beat = report.block.beat
        next_status = 0.0
        while not self.stopping() and not source.finished:
            batch = source.poll(self.poll_s)
            if batch.frames:
                self._handle(batch)
            self.watchdog.mark(None)
            beat()
            now = time.monotonic()
            if now >= next_status:
                self._publish(CaptureState.CAPTURING)
                next_status = now + STATUS_PERIOD_S
        state = CaptureState.FINISHED if source.finished else CaptureState.STOPPED
        self._publish(state, capturing=False)
        log.info("capture %s: %d packets, %d bytes, %d kernel drops", state, self.packets,
                 self.bytes, self.kernel.drop)  # fmt: skip
        return ExitCode.OK

    def _handle(self, batch: CapturedFrames) -> None:
        self.watchdog.mark(batch)
        out = self.out if len(batch.frames) <= len(self.out) else None
        decoded = self.decode(batch.frames, batch.ts_ns, batch.wire_lens, batch.linktype, out)
        first_id = self.writer.write(decoded.records, batch.frames)
        self.handoff.append(first_id, batch)
        self.packets += len(batch.frames)
        self.bytes += sum(batch.wire_lens)
        self.errors_by_kind += decoded.errors[: len(DecodeError)]

    def _publish(self, state: CaptureState, **changes: Any) -> None:
        try:
            self.kernel.update(self.source.stats())
        except OSError as exc:
            log.debug("pcap stats unavailable: %s", exc)
        by_kind = {k.name.lower(): int(self.errors_by_kind[k]) for k in DecodeError if k}
        self.report.update(
            state=state, packets_captured=self.packets, bytes_captured=self.bytes,
            kernel_drops=self.kernel.drop, if_drops=self.kernel.ifdrop,
            decode_errors=sum(by_kind.values()), decode_errors_by_kind=by_kind, **changes,
        )  # fmt: skip


class _WrappingCounters:
    """libpcap's `ps_drop`/`ps_ifdrop` are 32-bit and wrap: accumulate their differences."""

    def __init__(self) -> None:
        self.drop = self.ifdrop = 0
        self._last: tuple[int, int] | None = None

    def update(self, stats: tuple[int, int, int]) -> None:
        _, drop, ifdrop = stats
        last = self._last or (0, 0)
        self.drop += (drop - last[0]) % _U32
        self.ifdrop += (ifdrop - last[1]) % _U32
        self._last = (drop, ifdrop)


class Watchdog:
    """Exits the process when one loop iteration takes longer than `timeout_s`; see the module
    docstring. The loop calls `mark(batch)` before decoding a batch and `mark(None)` after."""

    def __init__(
        self,
        timeout_s: float,
        stuck_dir: Path | None,
        source: PacketSource,
        *,
        beat: Callable[[], None],
        on_stuck: Callable[[str], None],
        exit: Callable[[int], object] = os._exit,
    ) -> None:
        self.timeout_s = timeout_s
        self.stuck_dir = stuck_dir
        self.linktype, self.snaplen = source.linktype, source.snaplen
        self._beat, self._on_stuck, self._exit = beat, on_stuck, exit
        self._mark: tuple[float, CapturedFrames | None] = (time.monotonic(), None)
        self._loop_thread = threading.get_ident()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="capture-watchdog", daemon=True)

    def mark(self, batch: CapturedFrames | None) -> None:
        self._mark = (time.monotonic(), batch)  # one reference store: never seen half-updated

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()

    def _run(self) -> None:
        period = min(0.25, self.timeout_s / 4)
        while not self._stopped.wait(period):
            since, batch = self._mark
            stalled = time.monotonic() - since
            if stalled <= self.timeout_s:
                self._beat()
                continue
            if batch is None:
                text = f"capture loop stalled for {stalled:.1f}s outside decoding"
                code = ExitCode.ERROR
            else:
                text = f"decode stuck for {stalled:.1f}s; {self._save(batch)}"
                code = ExitCode.STUCK
            log.critical("%s; exiting with %d", text, code)
            self._on_stuck(text)
            self._exit(code)
            return

    def _save(self, batch: CapturedFrames) -> str:
        """Write the batch (and the exact frame, if the loop thread's stack shows which) as pcap;
        return what was saved, for the log."""
        index = current_frame_index(self._loop_thread, batch.frames)
        where = f"frame {index + 1} of {len(batch.frames)}" if index is not None else None
        if self.stuck_dir is None:
            return f"{where or f'{len(batch.frames)} frames'} not saved (no directory)"
        now = time.time_ns()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now // 10**9))
        base = self.stuck_dir / f"stuck-{stamp}.{now // 10**6 % 1000:03d}Z"
        try:
            if index is None:
                self._write(Path(f"{base}.pcap"), batch, slice(None))
                return f"batch of {len(batch.frames)} frames saved to {base}.pcap"
            self._write(Path(f"{base}.pcap"), batch, slice(index, index + 1))
            self._write(Path(f"{base}-batch.pcap"), batch, slice(None))
        except OSError as exc:
            return f"{where or 'batch'} could not be saved: {exc}"
        return f"{where} saved to {base}.pcap (its batch to {base}-batch.pcap)"

    def _write(self, path: Path, batch: CapturedFrames, rows: slice) -> None:
        """A nanosecond pcap of `batch[rows]`; refuses to overwrite."""
        columns = (batch.ts_ns[rows], batch.wire_lens[rows], batch.frames[rows])
        write_pcap(path, *columns, self.linktype, self.snaplen, nanoseconds=True, exclusive=True)


def current_frame_index(thread_id: int, frames: Sequence[bytes]) -> int | None:
    """Which of `frames` the thread is working on: the innermost local variable of its stack
    that *is* one of them (identity, not equality); None when no frame shows one."""
    by_id = {id(f): i for i, f in enumerate(frames)}
    frame = sys._current_frames().get(thread_id)
    while frame is not None:
        for value in list(frame.f_locals.values()):
            i = by_id.get(id(value))
            if i is not None and frames[i] is value:
                return i
        frame = frame.f_back
    return None
