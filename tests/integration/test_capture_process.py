"""`run_capture` in a real spawned child: live on `lo`, on a veth pair, a replay, fatal errors,
and the watchdog on a decode that never returns."""

from __future__ import annotations

import functools
import multiprocessing
import os
import pwd
import signal
import socket
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import dpkt
import numpy as np
import pytest

from leireye.capture.process import run_capture
from leireye.config import CaptureConfig, Config, ReplayConfig
from leireye.decode.batch import DecodedBatch
from leireye.decode.decode import decode_batch
from leireye.exitcodes import ExitCode
from leireye.privileges import ensure_account
from leireye.record import Proto
from leireye.ring import Ring, RingLayout, RingReader
from leireye.ring.shm import unlink_segment
from leireye.ring.status import CaptureState, CaptureStatus, StatusBlock
from leireye.supervisor import child_main
from tests.records import ip_to_halves
from tests.unit.test_source import write_pcap
from tests.waiting import scaled, wait_for

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="live capture and privilege drop need root"),
]


def writer() -> pwd.struct_passwd:
    """The default `capture.user`, created when missing as the supervisor creates it."""
    name = CaptureConfig().user
    assert name is not None
    ensure_account(name, "capture.user")
    return pwd.getpwnam(name)


HANG_MARKER = b"LEIREYE-TEST-HANG"


@dataclass
class Run:
    ring_name: str
    status_name: str
    status: StatusBlock
    state_dir: Path
    process: BaseProcess | None = None

    def start(self, capture: CaptureConfig, decode: Any = None) -> BaseProcess:
        target = functools.partial(run_capture, decode=decode, state_dir=str(self.state_dir))
        ctx = multiprocessing.get_context("spawn")
        args = ("capture", "INFO", None, target, Config(capture=capture), self.ring_name)
        self.process = ctx.Process(target=child_main, args=(*args, self.status_name))
        self.process.start()
        return self.process

    @property
    def pid(self) -> int:
        assert self.process is not None and self.process.pid is not None
        return self.process.pid

    def read(self) -> CaptureStatus:
        return self.status.read()

    def wait_state(self, state: CaptureState, timeout: float = 20) -> CaptureStatus:
        def reached() -> CaptureStatus | None:
            st = self.read()
            if st.state == state:
                return st
            if self.process is not None and self.process.exitcode is not None:
                raise AssertionError(f"capture exited {self.process.exitcode}: {st.last_error}")
            return None

        result = wait_for(reached, timeout, f"capture state {state}")
        assert result is not None
        return result

    def exit_code(self, timeout: float = 20) -> int | None:
        assert self.process is not None
        self.process.join(scaled(timeout))
        return self.process.exitcode


@pytest.fixture
def run() -> Iterator[Run]:
    base = f"leireye-test-cap-{uuid.uuid4().hex[:10]}"
    account = writer()
    owner = (account.pw_uid, account.pw_gid)
    ring = Ring.create(f"{base}-ring", RingLayout(capacity=16384, raw_bytes=128), owner=owner)
    ring.close()
    status = StatusBlock.create(f"{base}-status", owner=owner)
    state_dir = Path(tempfile.mkdtemp(prefix="leireye-state-"))
    state_dir.chmod(0o755)  # the unprivileged capture must reach state_dir/stuck
    r = Run(f"{base}-ring", f"{base}-status", status, state_dir)
    yield r
    if r.process is not None and r.process.exitcode is None:
        r.process.kill()
        r.process.join(10)
    status.close()
    status.unlink()
    unlink_segment(r.ring_name)
    for path in sorted(state_dir.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    state_dir.rmdir()


def read_records(ring_name: str, count: int, what: str) -> np.ndarray:
    ring = Ring.attach(ring_name)
    reader = RingReader(ring, "oldest")
    parts: list[np.ndarray] = []

    def enough() -> bool:
        parts.append(reader.read().records)
        return sum(len(p) for p in parts) >= count

    wait_for(enough, 20, what)
    records = np.concatenate(parts)
    ring.close()
    return records


def proc_ids(pid: int) -> dict[str, list[int]]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in lines)
    return {k: [int(v) for v in fields[k].split()] for k in ("Uid", "Gid", "Groups")}


# -- live -------------------------------------------------------------------------------------


def test_live_capture_on_lo_publishes_exactly_the_matching_packets(run: Run) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        port = rx.getsockname()[1]
        capture = CaptureConfig(
            interface="lo", bpf=f"udp and dst port {port}", snaplen=256, buffer_mb=8
        )
        proc = run.start(capture)
        st = run.wait_state(CaptureState.CAPTURING)
        assert (st.capturing, st.pid, st.interface, st.linktype) == (True, proc.pid, "lo", 1)
        assert st.bpf == f"udp and dst port {port}"
        ids = proc_ids(run.pid)
        assert ids["Uid"] == [writer().pw_uid] * 4
        assert ids["Gid"] == [writer().pw_gid] * 4
        assert ids["Groups"] == []

        n, payload = 200, b"leireye-capture-test"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            tx.bind(("127.0.0.1", 0))
            sport = tx.getsockname()[1]
            for _ in range(n):
                tx.sendto(payload, ("127.0.0.1", port))
        wait_for(lambda: run.read().packets_captured >= n, 20, f"{n} packets counted")
        records = read_records(run.ring_name, n, f"{n} records in the ring")

    assert len(records) == n  # nothing else matched the filter; each packet once
    lo = ip_to_halves("127.0.0.1")
    assert (records["src_hi"] == lo[0]).all() and (records["src_lo"] == lo[1]).all()
    assert (records["dst_lo"] == lo[1]).all()
    assert (records["src_port"] == sport).all() and (records["dst_port"] == port).all()
    assert (records["proto"] == Proto.UDP).all()
    assert (records["wire_len"] == 14 + 20 + 8 + len(payload)).all()
    assert (np.diff(records["seq"].astype(np.int64)) == 1).all()
    st = run.read()
    assert st.packets_captured == n and st.bytes_captured == n * (42 + len(payload))
    assert st.state == CaptureState.CAPTURING and st.decode_errors == 0
    age = run.status.heartbeat_age_s()
    assert age is not None and age < scaled(2)

    os.kill(run.pid, signal.SIGTERM)
    assert run.exit_code(timeout=2) == 0
    st = run.read()
    assert st.state == CaptureState.STOPPED and not st.capturing


def test_veth_accounting_is_exact(run: Run) -> None:
    from tests.netns import inject_frames, veth_pair

    with veth_pair(ipv6=False) as pair:
        port = 9999
        run.start(CaptureConfig(interface=pair.host_if, bpf=f"udp and dst port {port}"))
        run.wait_state(CaptureState.CAPTURING)
        eth = dpkt.ethernet.Ethernet(
            src=bytes.fromhex(pair.ns_mac.replace(":", "")),
            dst=bytes.fromhex(pair.host_mac.replace(":", "")),
        )
        frames = []
        for i in range(3000):
            udp = dpkt.udp.UDP(sport=1000 + i % 50000, dport=port, data=b"v" * 32)
            udp.ulen = len(udp)
            ip = dpkt.ip.IP(
                src=socket.inet_aton(pair.ns_ip), dst=socket.inet_aton(pair.host_ip), p=17
            )
            ip.data = udp
            ip.len = len(ip)
            eth.data = ip
            frames.append(bytes(eth))
        sent = inject_frames(pair.ns_if, frames, ns=pair.ns)

        def accounted() -> bool:
            st = run.read()
            return st.packets_captured + st.kernel_drops >= sent

        wait_for(accounted, 20, "every injected frame captured or dropped")
        st = run.read()
        assert st.packets_captured + st.kernel_drops == sent
        records = read_records(run.ring_name, st.packets_captured, "the captured records")
        assert len(records) == st.packets_captured
        os.kill(run.pid, signal.SIGTERM)
        assert run.exit_code(timeout=2) == 0


# -- replay -----------------------------------------------------------------------------------


def test_a_replay_fills_the_ring_and_finishes(run: Run, tmp_path: Path) -> None:
    pcap = run.state_dir / "replay.pcap"  # readable by the capture user after the drop
    frames = write_pcap(pcap, [1000] * 300, dport=5353)
    pcap.chmod(0o644)
    capture = CaptureConfig(pcap=str(pcap), replay=ReplayConfig(speed="max"))
    run.start(capture)
    assert run.exit_code() == 0
    st = run.read()
    assert st.state == CaptureState.FINISHED and not st.capturing
    assert st.packets_captured == len(frames)
    records = read_records(run.ring_name, len(frames), "the replayed records")
    assert len(records) == len(frames)
    assert (records["dst_port"] == 5353).all()
    assert (np.diff(records["ts_ns"]) == 1000).all()


# -- errors that restarting will not fix -------------------------------------------------------


@pytest.mark.parametrize(
    ("capture", "message"),
    [
        (CaptureConfig(interface="lo", bpf="udp and port"), "syntax error"),
        (CaptureConfig(interface="nosuchif0"), "No such device"),
        (CaptureConfig(interface="lo", user="no-such-user-here"), "no such user"),
        (CaptureConfig(pcap="/nonexistent/x.pcap"), "No such file"),
    ],
)
def test_start_errors_exit_fatal_with_the_reason_in_the_status(
    run: Run, capture: CaptureConfig, message: str
) -> None:
    run.start(capture)
    assert run.exit_code() == ExitCode.FATAL
    st = run.read()
    assert st.state == CaptureState.ERROR and not st.capturing
    assert message in st.last_error


# -- the watchdog -----------------------------------------------------------------------------


def hanging_decode(
    frames: Sequence[bytes],
    ts_ns: Sequence[int],
    wire_lens: Sequence[int],
    linktype: int,
    out: np.ndarray | None = None,
) -> DecodedBatch:
    """The real decoder, except that it spins forever on a frame carrying HANG_MARKER, the way
    dpkt once looped on some GRE and SCTP packets."""
    for frame in frames:
        spins = 0
        while HANG_MARKER in frame:
            spins += 1
    return decode_batch(frames, ts_ns, wire_lens, linktype, out)


def test_a_stuck_decode_saves_the_frame_and_exits_70(run: Run) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        port = rx.getsockname()[1]
        capture = CaptureConfig(
            interface="lo", bpf=f"udp and dst port {port}", heartbeat_timeout_s=1.0
        )
        proc = run.start(capture, decode=hanging_decode)
        run.wait_state(CaptureState.CAPTURING)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            tx.sendto(b"fine", ("127.0.0.1", port))
            wait_for(lambda: run.read().packets_captured == 1, 20, "a normal packet")
            tx.sendto(b"x" + HANG_MARKER, ("127.0.0.1", port))
            beat = run.status.heartbeat_ns
            assert run.exit_code(timeout=15) == ExitCode.STUCK
    assert proc.exitcode == ExitCode.STUCK
    st = run.read()
    assert st.state == CaptureState.ERROR and "decode stuck" in st.last_error
    assert run.status.heartbeat_ns >= beat  # the watchdog kept beating while deciding
    stuck = sorted((run.state_dir / "stuck").glob("stuck-*.pcap"))
    assert [p.name.endswith("-batch.pcap") for p in stuck] == [True, False]
    with stuck[1].open("rb") as f:
        saved = [buf for _, buf in dpkt.pcap.Reader(f)]
    assert len(saved) == 1 and saved[0].endswith(b"x" + HANG_MARKER)
    udp = dpkt.ethernet.Ethernet(saved[0]).data.data  # the whole frame, from its first byte
    assert isinstance(udp, dpkt.udp.UDP) and udp.dport == port
    assert stuck[1].stat().st_uid == writer().pw_uid
