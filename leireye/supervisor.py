"""The supervisor: owns the shared memory, starts the children, restarts them, stops them all.

Why it is shaped so
-------------------
Every segment (ring, capture status, stats series, flow view) is created here and unlinked
here, so a child killed with SIGKILL can never take the ring with it, and a clean or unclean
child exit never leaves `/dev/shm` dirty. The supervisor keeps root, because a capture process
that dropped its privileges cannot reopen a capture handle: restarting one is the supervisor's
job.

Children are `spawn`ed (no fork of a parent that holds mappings and handlers). Each child ignores
SIGINT (a Ctrl-C in the terminal reaches the whole process group; only the supervisor acts on
it), asks the kernel for SIGTERM if the supervisor dies, and stops on SIGTERM.

A fleet central (`leireye central`, `central.enabled`) is the same run with the ingest process
(`leireye/fleet/ingest.py`) in the capture's place: it writes ring shard 0 and status block 0
and beats the same heartbeat; there are no flows or store children: the ingest writes the
sensors' ended flows into the central's own flow store (docs/fleet-central.md).

Signal handlers only set a flag and wake the loop through a pipe; the main loop does all the
work: reap exits, restart with backoff, watch the capture heartbeat, and on stop send SIGTERM to
every child, wait, SIGKILL what is left when the shutdown budget runs out, and unlink.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import multiprocessing
import os
import pwd
import queue
import select
import signal
import socket
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from leireye.capture.fanout import capture_shards, shard_specs
from leireye.capture.ownfilter import WebListener
from leireye.config import Config
from leireye.errors import CaptureError, ConfigError, LeirEyeError
from leireye.exitcodes import ExitCode
from leireye.logs import setup_logging
from leireye.privileges import (
    Owners,
    drop_privileges,
    ensure_account,
    lookup_user,
    reachable_by,
    state_directory,
)
from leireye.proctitle import role_title, set_title
from leireye.ring import Ring, RingLayout
from leireye.ring.ids import IdAllocator
from leireye.ring.segments import (
    SegmentNames,
    StatusDrops,
    close_and_unlink,
    remove_stale_segments,
)
from leireye.ring.shm import unlink_segment

if TYPE_CHECKING:
    from leireye.accounts.userview import UsersViewWriter

log = logging.getLogger("leireye.supervisor")

PR_SET_PDEATHSIG = 1
SEGMENT_MODE = 0o640  # the writer (capture.user) writes, the web user's group reads
HEARTBEAT_GRACE_S = 10.0  # a fresh capture process gets this long to open its handle


def child_main(
    role: str,
    level: str,
    run_as: str | None,
    target: Callable[..., int | None],
    *args: Any,
) -> None:
    """The first code every child runs: logging, signals, parent-death signal, then `target`.
    A child that needs no privilege at all drops to `run_as` before `target` runs; the others
    (capture, web) drop it themselves once they have opened what only root may open."""
    multiprocessing.current_process().name = role
    set_title(*role_title(role))
    setup_logging(level)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if run_as is not None:
        drop_privileges(lookup_user(run_as), key=f"{role} user")
    code = target(*args)
    raise SystemExit(code or ExitCode.OK)


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
    web_index: int | None = None
    shard: int | None = None  # the ring shard this child writes (capture children, the ingest)
    run_as: str | None = None  # drop to this user before `target` (children needing no root)
    held: bool = False  # stopped on request: not restarted until released
    requested: bool = False  # started by a control request: a failure does not end the run


class Supervisor:
    def __init__(self, config: Config, base_name: str | None = None) -> None:
        self.central = config.central.enabled
        self.config = config = central_config(config) if self.central else config
        self.base = base_name or config.ring.name or f"leireye-{os.getpid()}"
        self.names = SegmentNames.for_run(self.base, capture_shards(config))
        self.run_id = int(time.time())  # names this run's packet store files
        self.ctx = multiprocessing.get_context("spawn")
        self.children: list[Child] = []
        self._stop = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._created: list[Callable[[], None]] = []
        self.status: Any = None  # shard 0's status block
        self.statuses: list[Any] = []  # one per capture shard
        self.registry: Any = None
        self.socket: socket.socket | None = None
        self.web_listener: WebListener | None = None  # what the capture leaves out (ownfilter)
        self.web_workers = 0
        # The first run's `admin` password and the root-only file that holds it (for the CLI
        # to point to, and to show on a terminal).
        self.first_admin_password: str | None = None
        self.first_admin_file: Path | None = None
        self.new_tls_fingerprint: str | None = None  # of a certificate just made, shown once
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self.owners = Owners()  # set in `prepare_accounts`
        self.web_pids: frozenset[int] = frozenset()  # who may call the control channel
        self.users_view: UsersViewWriter | None = None  # the workers' copy, without hashes

    # -- accounts -----------------------------------------------------------------------------

    def prepare_accounts(self) -> None:
        """Create the sensor's system accounts when missing (root only) and settle who owns what
        (`Owners`)."""
        cfg = self.config
        if os.geteuid() == 0:
            for user, key in ((cfg.capture.user, "capture.user"), (cfg.web.user, "web.user")):
                if user is not None:
                    ensure_account(user, key, ConfigError)
            if cfg.capture.user is not None and cfg.capture.user == cfg.web.user:
                log.warning("capture.user and web.user are both %s: the web workers can write "
                            "the shared memory", cfg.web.user)  # fmt: skip
        self.owners = Owners.of(cfg.capture.user, cfg.web.user)

    # -- shared memory ------------------------------------------------------------------------

    def create_segments(self) -> None:
        from leireye.ring.status import StatusBlock
        from leireye.stats.series import StatsSeries

        remove_stale_segments()
        owner = self.owners.writer  # written by capture and stats, read by the web workers
        cfg, names = self.config, self.names
        base_id = self._central_base_id()
        for k in range(names.shards):
            layout = RingLayout(cfg.ring.capacity, cfg.ring.raw_bytes, k, names.shards)
            ring = Ring.create(
                names.rings()[k], layout, owner=owner, mode=SEGMENT_MODE, base_id=base_id
            )
            ring.close()  # the supervisor never reads packets; the name stays until unlink
            self._created.append(functools.partial(close_and_unlink, ring))
            status = StatusBlock.create(names.statuses()[k], owner=owner, mode=SEGMENT_MODE)
            self.statuses.append(status)
            self._created.append(functools.partial(close_and_unlink, status))
        self.status = self.statuses[0]
        if names.shards > 1:
            ids = IdAllocator.create(names.ids, names.shards, owner=owner)
            self._created.append(lambda: close_and_unlink(ids))
        stats = StatsSeries.create(self.names.stats, cfg.stats, owner=owner, mode=SEGMENT_MODE)
        self._created.append(lambda: close_and_unlink(stats))
        if cfg.flows.enabled:
            from leireye.flows.view import FlowView

            view = FlowView.create(names.flows, cfg.flows, owner=owner, mode=SEGMENT_MODE)
            self._created.append(lambda: close_and_unlink(view))
        if cfg.store.enabled:
            self._create_frame_segments()
        if cfg.fleet.enabled:
            from leireye.fleet.status import StatusPage

            page = StatusPage.create(names.fleet, owner=owner, mode=SEGMENT_MODE)
            self._created.append(lambda: close_and_unlink(page))
        log.info(
            "shared memory %s: %d ring%s of %d records x %d B + %d raw B (%.1f MiB each)",
            self.base,
            names.shards,
            "s" if names.shards > 1 else "",
            layout.capacity,
            256,
            layout.raw_bytes,
            layout.size / 2**20,
        )

    def _central_base_id(self) -> int:
        """A central's ring continues the ids of its previous run (leireye/fleet/checkpoint.py);
        after a clean stop or a crash on the same boot it starts where the ingest replays the
        journal's last packets from (leireye/fleet/journal.py). Its directory is made here, as
        root, for the ingest."""
        if not self.central:
            return 0
        from leireye.fleet.checkpoint import prepare_central_dir
        from leireye.fleet.journal import planned_resume

        state_dir = state_directory(Path(self.config.state_dir), self.owners.group)
        prepare_central_dir(state_dir, self.owners.writer)
        resume = planned_resume(state_dir, self.config.ring.capacity)
        if len(resume.plan):
            return int(resume.plan["first_id"][0]) - 1
        return resume.next_id - 1

    def _create_frame_segments(self) -> None:
        from leireye.ring.frames import FrameSegment

        for k, name in enumerate(self.names.frames()):
            segment = FrameSegment.create(
                name, self.config.store.buffer_mb << 20, k, owner=self.owners.writer,
                mode=SEGMENT_MODE,
            )  # fmt: skip
            self._created.append(functools.partial(close_and_unlink, segment))

    def prepare_store(self) -> None:
        """The store directory: owned by capture.user (the store writer runs as it), group of
        web.user, 2750 (files inherit the group; the writer makes them 0640): the web workers
        read the packets, nobody else."""
        cfg, owners = self.config, self.owners
        if not cfg.store.enabled:
            return
        state_directory(Path(cfg.state_dir), owners.group)
        path = cfg.store_dir
        path.mkdir(parents=True, exist_ok=True, mode=0o750)
        if os.geteuid() == 0 and owners.writer is not None:
            os.chown(path, *owners.writer)
            os.chmod(path, 0o2750)
        log.info("store: %s (at most %.1f GB, %.0f h)", path, cfg.store.max_gb,
                 cfg.store.max_age_h)  # fmt: skip

    def prepare_web(self) -> None:
        """Bind the listening socket once, create the connection registry, make sure the
        secret and the users file exist (root's alone) and write the workers' users view,
        before any worker starts."""
        from leireye.accounts.tokens import load_or_create_secret
        from leireye.accounts.users import (
            FIRST_ADMIN_PASSWORD_FILE,
            ensure_users_file,
            write_first_admin_password,
        )
        from leireye.accounts.userview import USERS_VIEW_FILE, UsersViewWriter
        from leireye.tls import ensure_certificate
        from leireye.web.registry import ConnectionRegistry

        cfg, owners = self.config, self.owners
        state_directory(Path(cfg.state_dir), owners.group)
        if cfg.flows.enabled or self.central:  # a central's ingest writes its sensors' flows
            from leireye.flows.store import prepare_history_dir

            writer = None if owners.writer is None else pwd.getpwuid(owners.writer[0])
            prepare_history_dir(cfg.history_dir, writer, owners.group)
        secret = load_or_create_secret(cfg)
        users_file = cfg.state_path(cfg.auth.users_file)
        password = ensure_users_file(users_file)
        if password is not None:
            self.first_admin_file = cfg.state_path(FIRST_ADMIN_PASSWORD_FILE)
            write_first_admin_password(self.first_admin_file, password)
            self.first_admin_password = password
        view = cfg.state_path(USERS_VIEW_FILE)
        self.users_view = UsersViewWriter(users_file, view, owners.group)
        self.users_view.sync()
        if owners.web is not None and (blocked := reachable_by(view, *owners.web)) is not None:
            raise WebStartError(
                f"web.user {cfg.web.user} cannot read {view} ({blocked} is closed to it):"
                " choose a state_dir that user can reach"
            )
        self.new_tls_fingerprint = ensure_certificate(cfg)
        self._start_control(secret)
        self.web_workers = web_worker_count(cfg)
        registry = ConnectionRegistry.create(self.names.conns, self.web_workers, owner=owners.web)
        self.registry = registry
        self._created.append(lambda: close_and_unlink(registry))
        try:
            self.socket = socket.create_server((cfg.web.host, cfg.web.port), backlog=2048)
        except OSError as exc:
            raise WebStartError(
                f"cannot listen on {cfg.web.host}:{cfg.web.port}: {exc.strerror}"
            ) from None
        if cfg.web.send_buffer_kib:  # accepted connections inherit it (Linux)
            self.socket.setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, cfg.web.send_buffer_kib * 1024
            )
        host, port = self.socket.getsockname()[:2]
        self.web_listener = WebListener.of_socket(self.socket)
        self._created.append(self.socket.close)
        scheme = "http" if cfg.web.tls in (None, "off") else "https"
        log.info("web: listening on %s://%s:%d (%d workers)", scheme, _url_host(host), port,
                 self.web_workers)  # fmt: skip

    def _start_control(self, secret: bytes) -> None:
        from leireye.accounts.passwords import map_large_allocations
        from leireye.control.handlers import ControlHandlers
        from leireye.control.server import ControlServer, socket_path

        map_large_allocations()  # password hashes' memory goes back to the system after use
        web = self.owners.web
        assert self.users_view is not None
        handlers = ControlHandlers.for_config(self.config, secret, self, self.users_view.sync)
        try:
            control = ControlServer(
                socket_path(self.config.state_dir),
                handlers,
                lambda: self.web_pids,
                uid=web[0] if web is not None else None,
                group=self.owners.group,
            )
        except OSError as exc:
            raise WebStartError(f"cannot create the control socket: {exc.strerror}") from None
        control.start()
        self._created.append(control.close)

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
        from leireye.stats.process import run_stats
        from leireye.store.process import run_store
        from leireye.web.worker import run_web_worker

        cfg, names = self.config, self.names
        if self.central:
            from leireye.fleet.ingest import run_ingest

            ingest = Child("ingest", run_ingest, (cfg, names.ring, names.status), shard=0)
            self.children.append(ingest)  # root until its NATS credentials are read
        else:
            self.children.extend(self._capture_children(cfg))
        self.children.append(
            Child(
                "stats",
                run_stats,
                (cfg, names.ring, names.stats, None, StatusDrops(names.status, names.shards)),
                run_as=cfg.capture.user,  # the owner of every segment it maps
            )
        )
        if cfg.flows.enabled:
            from leireye.flows.process import run_flows

            self.children.append(
                Child("flows", run_flows, (cfg, names.ring, names.flows), run_as=cfg.capture.user)
            )
        if cfg.store.enabled:
            store = (cfg, names.ring, names.shards, self.run_id)
            self.children.append(Child("store", run_store, store, run_as=cfg.capture.user))
        if cfg.fleet.enabled:
            from leireye.fleet.publisher import run_publisher

            flows = names.flows if cfg.flows.enabled else None
            publisher = (cfg, names.ring, names.status, names.stats, flows, names.fleet)
            self.children.append(
                Child("publisher", run_publisher, publisher, run_as=cfg.capture.user)
            )
        for index in range(self.web_workers):
            args = (cfg, names.as_dict(), index, self.socket)
            self.children.append(Child(f"web-{index}", run_web_worker, args, web_index=index))

    def _capture_children(self, config: Config) -> list[Child]:
        """One capture child per ring shard, joined in one PACKET_FANOUT group when several."""
        from leireye.capture.process import run_capture

        names = self.names
        specs = shard_specs(config, os.getpid())[: names.shards]
        if len(specs) > 1:
            log.info("capture: %d processes in fanout group %d (%s)", len(specs), specs[0].group,
                     config.capture.fanout_mode)  # fmt: skip
        return [
            Child(
                "capture" if len(specs) == 1 else f"capture-{spec.index}",
                functools.partial(run_capture, shard=spec, web=self.web_listener),
                (config, names.ring, names.status),
                shard=spec.index,
            )
            for spec in specs
        ]

    # -- capture control (called from the control channel's threads) ----------------------------

    def call_in_loop(self, func: Callable[[], Any], timeout_s: float = 30.0) -> Any:
        """Run `func` on the main loop (which owns the children) and return its result."""
        future: Future[Any] = Future()
        self._calls.put((func, future))
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"c")
        return future.result(timeout_s)

    def _run_calls(self) -> None:
        while True:
            try:
                func, future = self._calls.get_nowait()
            except queue.Empty:
                return
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(func())
                except BaseException as exc:  # handed to the waiting thread, which re-raises
                    future.set_exception(exc)

    def start_capture(self, interface: str | None, bpf: str | None) -> dict[str, Any]:
        """Capture on `interface` with `bpf` (None: keep the current one). The new settings are
        tried first (as root, here): a missing interface or a bad filter raises CaptureError
        with libpcap's message and the running capture is left as it was."""
        from leireye.capture.control import open_check, wait_status
        from leireye.capture.ownfilter import own_traffic
        from leireye.control.handlers import CaptureConflict
        from leireye.web.statusview import status_view

        self._refuse_at_central()
        current = self.config.capture
        try:
            capture = msgspec.structs.replace(
                current,
                interface=current.interface if interface is None else interface,
                bpf=current.bpf if bpf is None else bpf,
                pcap=None if interface is not None else current.pcap,
            )
        except ValueError as exc:  # CaptureConfig's own checks
            raise CaptureError(f"invalid BPF filter: {exc}") from None
        status = self._capture_status()
        running = any(c.process is not None for c in self._captures())
        if running and status.capturing and capture == current:
            raise CaptureConflict(f"already capturing on {status.interface} with this filter")
        open_check(capture, own_traffic(capture, self.web_listener))
        config = msgspec.structs.replace(self.config, capture=capture)
        before_ns = status.started_at_ns
        self.call_in_loop(lambda: self._replace_capture(config))
        log.info("capture restarted on request: interface %s, filter %r", capture.pcap or
                 capture.interface, capture.bpf)  # fmt: skip
        return status_view(wait_status(self._capture_status, lambda st: st.started_at_ns !=
                                       before_ns and st.state != "starting"))  # fmt: skip

    def stop_capture(self) -> dict[str, Any]:
        from leireye.control.handlers import CaptureConflict
        from leireye.web.statusview import status_view

        self._refuse_at_central()
        captures = self._captures()
        if all(c.held for c in captures):
            raise CaptureConflict("capture is already stopped")
        self.call_in_loop(self._hold_capture)
        log.info("capture stopped on request")
        return status_view(self._capture_status())

    def _refuse_at_central(self) -> None:
        from leireye.control.handlers import CaptureConflict

        if self.central:
            raise CaptureConflict("a fleet central ingests its sensors: it has no capture to"
                                  " start or stop")  # fmt: skip

    def _captures(self) -> list[Child]:
        return [c for c in self.children if c.shard is not None]

    def _capture_status(self) -> Any:
        from leireye.ring.shardstatus import sum_statuses

        return sum_statuses([block.read() for block in self.statuses])

    def _stop_children(self, children: list[Child]) -> None:
        """Stop `children` for good (held: not restarted) within the shutdown budget."""
        for child in children:
            child.held = True
        processes = [c.process for c in children if c.process is not None]
        terminate(processes, self.config.supervisor.shutdown_timeout_s)
        for child in children:
            if child.process is not None:
                child.process.close()
                child.process = None

    def _hold_capture(self) -> None:
        from leireye.ring.status import CaptureState

        self._stop_children(self._captures())
        for block in self.statuses:
            status = block.read()
            if status.state != CaptureState.STOPPED:  # the process died before it could say so
                block.write(msgspec.structs.replace(
                    status, state=CaptureState.STOPPED, capturing=False))  # fmt: skip

    def _replace_capture(self, config: Config) -> None:
        old = self._captures()
        self._stop_children(old)
        self.children = [c for c in self.children if c not in old]
        self.config = config
        fresh = self._capture_children(config)
        for child in fresh:
            child.requested = True
        self.children[:0] = fresh
        self.poll()

    def _start(self, child: Child) -> None:
        process = self.ctx.Process(
            target=child_main,
            args=(child.role, self.config.logging.level, child.run_as, child.target, *child.args),
            name=child.role,
            daemon=False,
        )
        process.start()
        child.process = process
        child.started_at = time.monotonic()
        self._note_web_pids()
        log.info("%s started pid=%s", child.role, process.pid)

    def _on_exit(self, child: Child, now: float) -> None:
        assert child.process is not None
        code = child.process.exitcode
        child.process.close()
        child.process = None
        self._note_web_pids()
        child.history.append(code)
        if child.web_index is not None and self.registry is not None:
            self.registry.clear_worker(child.web_index)
        if code == ExitCode.OK and child.shard is not None and self.config.capture.pcap:
            log.info("capture finished replaying %s", self.config.capture.pcap)
            child.fatal = True  # nothing left to do; stats and readers keep running
            return
        if code == ExitCode.NO_FANOUT:
            child.fatal = True
            log.warning("%s is not needed: the kernel refused PACKET_FANOUT", child.role)
            return
        if code == ExitCode.FATAL:
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
        reason = "stuck on a frame (saved)" if code == ExitCode.STUCK else f"exit code {code}"
        log.warning("%s died (%s); restart %d in %.1fs", child.role, reason, child.restarts, delay)
        if child.shard is not None and child.shard < len(self.statuses):
            self.statuses[child.shard].set_restarts(
                sum(1 for c in child.history if c != ExitCode.OK)
            )

    def _note_web_pids(self) -> None:
        """The pids the control channel answers (replaced whole: its threads read it)."""
        self.web_pids = frozenset(
            c.process.pid
            for c in self.children
            if c.web_index is not None and c.process is not None and c.process.pid is not None
        )

    def _check_heartbeat(self, child: Child, now: float) -> None:
        if child.shard is None or child.process is None or child.shard >= len(self.statuses):
            return
        if now - child.started_at < HEARTBEAT_GRACE_S:
            return
        age_s = self.statuses[child.shard].heartbeat_age_s()
        if age_s is not None and age_s > self.config.capture.heartbeat_timeout_s:
            log.error("%s heartbeat is %.1fs old; killing pid=%s", child.role, age_s,
                  child.process.pid)  # fmt: skip
            child.process.kill()

    def poll(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.process is not None and child.process.exitcode is not None:
                self._on_exit(child, now)
            waiting = child.fatal or child.held or now < child.next_start
            if child.process is None and not waiting:
                self._start(child)
            self._check_heartbeat(child, now)

    def first_start_failed(self) -> Child | None:
        """A child that died fatally on its very first start (the run cannot do its job)."""
        for child in self.children:
            if child.fatal and child.history[:1] == [ExitCode.FATAL] and not child.requested:
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
        set_title("leireye: supervisor", "leireye")
        try:
            self.prepare_accounts()
            self.create_segments()
            self.prepare_web()
            self.prepare_store()
            if not self.children:
                self.add_default_children()
            self.poll()
            if ready is not None:
                ready(self)
            while not self._stop:
                readable, _, _ = select.select([self._wake_r], [], [], 0.1)
                if readable:
                    os.read(self._wake_r, 64)
                self._run_calls()
                if self.users_view is not None:  # `leireye user` in a shell edits the file
                    self.users_view.sync()
                self.poll()
                failed = self.first_start_failed()
                if failed is not None:
                    reason = ""
                    if failed.shard is not None and failed.shard < len(self.statuses):
                        reason = self.statuses[failed.shard].read().last_error
                    log.error("%s could not start: %s", failed.role, reason or "see above")
                    return ExitCode.FAILED
            return ExitCode.OK
        finally:
            self.shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(self._wake_r)
            os.close(self._wake_w)

    def shutdown(self) -> None:
        # The ring's writers first, then its readers: a reader still running when the last
        # packets are written (the publisher, the store, the flow process) can take them too.
        budget = self.config.supervisor.shutdown_timeout_s
        writers = [
            c.process for c in self.children if c.process is not None and c.shard is not None
        ]
        terminate(writers, budget * 0.4)
        terminate([c.process for c in self.children if c.process is not None and c.shard is None],
                  budget * 0.4)  # fmt: skip
        for child in self.children:
            child.process = None
        self.remove_segments()
        log.info("stopped; shared memory %s removed", self.base)


def terminate(processes: list[BaseProcess], budget_s: float) -> None:
    """SIGTERM every process, wait for all of them together at most `budget_s`, then SIGKILL
    (and say so) whichever is left."""
    deadline = time.monotonic() + budget_s
    for process in processes:
        if process.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.exitcode is None:
            log.warning("%s did not stop in time; killing pid=%s", process.name, process.pid)
            process.kill()
            process.join(1.0)


class WebStartError(LeirEyeError):
    """The web server cannot start (the port is taken, no such host address)."""


def central_config(config: Config) -> Config:
    """A central's config: one ring shard (written by the ingest), no flows, no packet store."""
    return msgspec.structs.replace(
        config,
        capture=msgspec.structs.replace(config.capture, workers=1, pcap=None),
        flows=msgspec.structs.replace(config.flows, enabled=False),
        store=msgspec.structs.replace(config.store, enabled=False),
    )


def web_worker_count(config: Config) -> int:
    workers = config.web.workers
    return (os.cpu_count() or 1) if workers == "auto" else workers


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
