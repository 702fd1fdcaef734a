"""The supervisor: owns the shared memory, starts the children, restarts them, stops them all.

Why it is shaped so
-------------------
Every segment (ring, capture status, stats series) is created here and unlinked here, so a child
killed with SIGKILL can never take the ring with it, and a clean or unclean child exit never
leaves `/dev/shm` dirty. The supervisor keeps root, because a capture process that dropped its
privileges cannot reopen a capture handle: restarting one is the supervisor's job.

Children are `spawn`ed (no fork of a parent that holds mappings and handlers). Each child ignores
SIGINT (a Ctrl-C in the terminal reaches the whole process group; only the supervisor acts on
it), asks the kernel for SIGTERM if the supervisor dies, and stops on SIGTERM.

Signal handlers only set a flag and wake the loop through a pipe; the main loop does all the
work: reap exits, restart with backoff, watch the capture heartbeat, and on stop send SIGTERM to
every child, wait, SIGKILL what is left when the shutdown budget runs out, and unlink.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import pwd
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

from leireye.config import Config
from leireye.errors import CaptureError, LeirEyeError
from leireye.logs import setup_logging
from leireye.ring import Ring, RingLayout
from leireye.shm import SHM_DIR, unlink_segment

log = logging.getLogger("leireye.supervisor")

EXIT_FATAL = 3  # a child's "restarting will not help" (bad interface, BPF, permission)
EXIT_STUCK = 70  # the capture watchdog found a decode stuck on one frame
PR_SET_PDEATHSIG = 1
HEARTBEAT_GRACE_S = 10.0  # a fresh capture process gets this long to open its handle


@dataclass(frozen=True)
class SegmentNames:
    ring: str
    status: str
    stats: str

    @classmethod
    def for_run(cls, base: str) -> SegmentNames:
        return cls(ring=f"{base}-ring", status=f"{base}-status", stats=f"{base}-stats")

    def all(self) -> tuple[str, ...]:
        return (self.ring, self.status, self.stats)


def child_main(role: str, level: str, target: Callable[..., int | None], *args: Any) -> None:
    """The first code every child runs: logging, signals, parent-death signal, then `target`."""
    multiprocessing.current_process().name = role
    setup_logging(level)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    code = target(*args)
    raise SystemExit(code or 0)


@dataclass
class Child:
    role: str
    target: Callable[..., int | None]
    args: tuple[Any, ...]
    process: BaseProcess | None = None
    restarts: int = 0
    started_at: float = 0.0
    next_start: float = 0.0  # monotonic time of the next (re)start; 0: now
    fatal: bool = False
    history: list[int | None] = field(default_factory=list)


class Supervisor:
    def __init__(self, config: Config, base_name: str | None = None) -> None:
        self.config = config
        self.base = base_name or config.ring.name or f"leireye-{os.getpid()}"
        self.names = SegmentNames.for_run(self.base)
        self.ctx = multiprocessing.get_context("spawn")
        self.children: list[Child] = []
        self._stop = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._created: list[Callable[[], None]] = []
        self.status: Any = None

    # -- shared memory ------------------------------------------------------------------------

    def _owner(self) -> tuple[int, int] | None:
        user = self.config.capture.user
        if os.geteuid() != 0 or user is None:
            return None
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise CaptureError(f"capture.user: no such user {user!r}") from None
        return entry.pw_uid, entry.pw_gid

    def create_segments(self) -> None:
        from leireye.capture.status import StatusBlock
        from leireye.stats.series import StatsSeries

        remove_stale_segments()
        owner = self._owner()
        cfg = self.config
        layout = RingLayout(capacity=cfg.ring.capacity, raw_bytes=cfg.ring.raw_bytes)
        ring = Ring.create(self.names.ring, layout, owner=owner)
        self._created.append(lambda: _close_and_unlink(ring))
        self.status = StatusBlock.create(self.names.status, owner=owner)
        status = self.status
        self._created.append(lambda: _close_and_unlink(status))
        stats = StatsSeries.create(self.names.stats, cfg.stats, owner=owner)
        self._created.append(lambda: _close_and_unlink(stats))
        ring.close()  # the supervisor never reads packets; the name stays until unlink
        log.info(
            "shared memory %s: ring %d records x %d B + %d raw B (%.1f MiB)",
            self.base,
            layout.capacity,
            256,
            layout.raw_bytes,
            layout.size / 2**20,
        )

    def remove_segments(self) -> None:
        while self._created:
            cleanup = self._created.pop()
            try:
                cleanup()
            except (OSError, BufferError, LeirEyeError) as exc:
                log.warning("cleanup: %s", exc)
        for name in self.names.all():
            unlink_segment(name)

    # -- children -----------------------------------------------------------------------------

    def add_default_children(self) -> None:
        from leireye.capture.process import run_capture
        from leireye.stats.process import run_stats

        cfg, names = self.config, self.names
        self.children.append(Child("capture", run_capture, (cfg, names.ring, names.status)))
        self.children.append(
            Child(
                "stats", run_stats, (cfg, names.ring, names.stats, None, StatusDrops(names.status))
            )
        )

    def _start(self, child: Child) -> None:
        process = self.ctx.Process(
            target=child_main,
            args=(child.role, self.config.logging.level, child.target, *child.args),
            name=child.role,
            daemon=False,
        )
        process.start()
        child.process = process
        child.started_at = time.monotonic()
        log.info("%s started pid=%s", child.role, process.pid)

    def _on_exit(self, child: Child, now: float) -> None:
        assert child.process is not None
        code = child.process.exitcode
        child.process.close()
        child.process = None
        child.history.append(code)
        if code == 0 and child.role == "capture" and self.config.capture.pcap:
            log.info("capture finished replaying %s", self.config.capture.pcap)
            child.fatal = True  # nothing left to do; stats and readers keep running
            return
        if code == EXIT_FATAL:
            child.fatal = True
            log.error("%s exited with a configuration or capture error; not restarting", child.role)
            return
        backoff = self.config.supervisor.restart_backoff_s
        delay = backoff[min(child.restarts, len(backoff) - 1)]
        if now - child.started_at > 60:  # it ran fine for a while: start the backoff over
            child.restarts = 0
            delay = backoff[0]
        child.restarts += 1
        child.next_start = now + delay
        reason = "stuck on a frame (saved)" if code == EXIT_STUCK else f"exit code {code}"
        log.warning("%s died (%s); restart %d in %.1fs", child.role, reason, child.restarts, delay)
        if child.role == "capture" and self.status is not None:
            self.status.set_restarts(sum(1 for c in child.history if c != 0))

    def _check_heartbeat(self, child: Child, now: float) -> None:
        if child.role != "capture" or child.process is None or self.status is None:
            return
        if now - child.started_at < HEARTBEAT_GRACE_S:
            return
        age_s = self.status.heartbeat_age_s()
        if age_s is not None and age_s > self.config.capture.heartbeat_timeout_s:
            log.error("capture heartbeat is %.1fs old; killing pid=%s", age_s, child.process.pid)
            child.process.kill()

    def poll(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.process is not None and child.process.exitcode is not None:
                self._on_exit(child, now)
            if child.process is None and not child.fatal and now >= child.next_start:
                self._start(child)
            self._check_heartbeat(child, now)

    def first_start_failed(self) -> Child | None:
        """A child that died fatally on its very first start (the run cannot do its job)."""
        for child in self.children:
            if child.fatal and child.history[:1] == [EXIT_FATAL]:
                return child
        return None

    # -- signals and the main loop ------------------------------------------------------------

    def request_stop(self, *_: object) -> None:
        self._stop = True
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def run(self, ready: Callable[[Supervisor], None] | None = None) -> int:
        """Run until SIGINT/SIGTERM; return the process exit code."""
        previous = {
            sig: signal.signal(sig, self.request_stop) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            self.create_segments()
            if not self.children:
                self.add_default_children()
            self.poll()
            if ready is not None:
                ready(self)
            while not self._stop:
                readable, _, _ = select.select([self._wake_r], [], [], 0.1)
                if readable:
                    os.read(self._wake_r, 64)
                self.poll()
                failed = self.first_start_failed()
                if failed is not None:
                    status = self.status.read() if self.status is not None else None
                    reason = status.last_error if status is not None else ""
                    log.error("%s could not start: %s", failed.role, reason or "see above")
                    return 2
            return 0
        finally:
            self.shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(self._wake_r)
            os.close(self._wake_w)

    def shutdown(self) -> None:
        budget = self.config.supervisor.shutdown_timeout_s
        deadline = time.monotonic() + budget * 0.8
        alive = [c.process for c in self.children if c.process is not None]
        for process in alive:
            if process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
        for process in alive:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in alive:
            if process.exitcode is None:
                log.warning("%s did not stop in time; killing pid=%s", process.name, process.pid)
                process.kill()
                process.join(1.0)
        for child in self.children:
            child.process = None
        self.remove_segments()
        log.info("stopped; shared memory %s removed", self.base)


class StatusDrops:
    """The stats process's view of the capture's kernel drops: `(ps_drop, ps_ifdrop)` read from
    the status block. Picklable (it holds only the name), so it crosses the spawn boundary."""

    def __init__(self, status_name: str) -> None:
        self.status_name = status_name
        self._block: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"status_name": self.status_name, "_block": None}

    def __call__(self) -> tuple[int, int]:
        from leireye.capture.status import StatusBlock

        if self._block is None:
            self._block = StatusBlock.attach(self.status_name)
        status = self._block.read()
        return status.kernel_drops, status.if_drops


def _close_and_unlink(segment_owner: Any) -> None:
    with contextlib.suppress(LeirEyeError, FileNotFoundError):
        segment_owner.unlink()
    segment_owner.close()


def remove_stale_segments() -> list[str]:
    """Unlink `leireye-<pid>-*` segments whose supervisor is gone (left by a SIGKILLed run)."""
    removed = []
    for path in SHM_DIR.glob("leireye-*-*"):
        parts = path.name.split("-")
        if len(parts) < 3 or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if pid == os.getpid() or _pid_alive(pid):
            continue
        if unlink_segment(path.name):
            removed.append(path.name)
    if removed:
        log.warning("removed stale shared memory of dead runs: %s", ", ".join(sorted(removed)))
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
