"""`leireye run` as a user runs it: a real supervisor, real children, real signals, real packets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import dpkt
import pytest

from leireye.capture.status import StatusBlock
from leireye.ring import Ring, RingReader
from leireye.shm import SHM_DIR, segment_exists
from leireye.stats.series import StatsSeries
from tests.waiting import scaled, wait_for

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root"),
]
DATA = Path(__file__).resolve().parents[1] / "data"


class Sensor:
    """A `leireye run` subprocess, its stderr collected line by line."""

    def __init__(self, tmp_path: Path, *args: str, config: str = "") -> None:
        self.name = f"leireye-t{uuid.uuid4().hex[:10]}"
        config_path = tmp_path / "sensor.yaml"
        state_dir = tmp_path / "state"
        base = (
            f"state_dir: {state_dir}\n"
            "stats: {log_interval_s: 0.2}\n"
            "web: {port: 0, workers: 1}\n"
        )
        config_path.write_text(base + config)
        cmd = [sys.executable, "-m", "leireye.cli", "run", "-c", str(config_path)]
        cmd += ["--name", self.name, *args]
        self.proc = subprocess.Popen(
            cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()

    def _collect(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def segments(self) -> list[str]:
        return sorted(p.name for p in SHM_DIR.glob(f"{self.name}-*"))

    def status(self) -> StatusBlock:
        block: StatusBlock = wait_for(
            lambda: segment_exists(f"{self.name}-status")
            and _attach(StatusBlock, f"{self.name}-status"),
            20,
            "the status segment",
        )
        return block

    def wait_capturing(self, status: StatusBlock, timeout: float = 20) -> int:
        def capturing() -> int:
            if self.proc.poll() is not None:
                raise AssertionError(f"sensor exited early:\n{self.log}")
            st = status.read()
            return st.pid if st.capturing and st.state == "capturing" else 0

        return wait_for(capturing, timeout, "capture to start")

    def stop(self, sig: int = signal.SIGINT) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(scaled(2.0) + 0.5)
        finally:
            self._reader.join(5)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def _attach(kind: type, name: str) -> object | None:
    try:
        return kind.attach(name)  # type: ignore[attr-defined, no-any-return]
    except Exception:  # the segment may exist before its header is written
        return None


@pytest.fixture
def sensor_factory(tmp_path: Path) -> Iterator[object]:
    started: list[Sensor] = []

    def start(*args: str, config: str = "") -> Sensor:
        sensor = Sensor(tmp_path, *args, config=config)
        started.append(sensor)
        return sensor

    yield start
    for sensor in started:
        sensor.kill()
        for name in sensor.segments():
            (SHM_DIR / name).unlink(missing_ok=True)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def send_udp(port: int, count: int, payload: bytes = b"leireye") -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(count):
            s.sendto(payload, ("127.0.0.1", port))


def read_until(reader: RingReader, count: int, what: str) -> list[int]:
    ids: list[int] = []

    def enough() -> bool:
        ids.extend(int(i) for i in reader.read().records["seq"])
        return len(ids) >= count

    wait_for(enough, 20, what)
    return ids


def test_run_captures_publishes_stats_and_stops_clean(sensor_factory: object) -> None:
    port = free_udp_port()
    sensor = sensor_factory("--interface", "lo", "--bpf", f"udp and dst port {port}")  # type: ignore[operator]
    status = sensor.status()
    sensor.wait_capturing(status)
    ring = Ring.attach(f"{sensor.name}-ring")
    reader = RingReader(ring, "oldest")
    send_udp(port, 25)
    ids = read_until(reader, 25, "25 packets in the ring")
    assert len(ids) == 25 and ids == sorted(ids)
    stats = StatsSeries.attach(f"{sensor.name}-stats")
    wait_for(lambda: stats.read().packets_total >= 25, 10, "the stats process to count 25")
    wait_for(lambda: "pps=" in sensor.log, 10, "a rate line in the log")
    ring.close()
    stats.close()
    status.close()
    assert sensor.stop(signal.SIGINT) == 0, sensor.log
    assert sensor.segments() == []
    assert "Traceback" not in sensor.log


def test_killed_capture_is_restarted_and_ids_continue(sensor_factory: object) -> None:
    port = free_udp_port()
    sensor = sensor_factory("--interface", "lo", "--bpf", f"udp and dst port {port}")  # type: ignore[operator]
    status = sensor.status()
    first_pid = sensor.wait_capturing(status)
    ring = Ring.attach(f"{sensor.name}-ring")
    reader = RingReader(ring, "oldest")
    send_udp(port, 10)
    before = read_until(reader, 10, "packets before the kill")
    os.kill(first_pid, signal.SIGKILL)
    wait_for(lambda: status.read().pid not in (0, first_pid), 20, "a new capture process")
    sensor.wait_capturing(status)
    send_udp(port, 10)
    after = read_until(reader, 10, "packets after the restart")
    assert min(after) > max(before)
    assert reader.lost_total == 0
    assert status.read().restarts >= 1
    ring.close()
    status.close()
    assert sensor.stop(signal.SIGTERM) == 0, sensor.log
    assert sensor.segments() == []


def test_sigterm_after_a_child_was_sigkilled_still_removes_shared_memory(
    sensor_factory: object,
) -> None:
    sensor = sensor_factory("--interface", "lo", "--bpf", "udp and port 9")  # type: ignore[operator]
    status = sensor.status()
    pid = sensor.wait_capturing(status)
    status.close()
    os.kill(pid, signal.SIGKILL)
    assert sensor.stop(signal.SIGTERM) == 0, sensor.log
    assert sensor.segments() == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--interface", "lo", "--bpf", "udp and port"), "syntax error"),
        (("--interface", "nosuchif0"), "nosuchif0"),
    ],
)
def test_capture_errors_are_one_clear_line_not_a_traceback(
    sensor_factory: object, args: tuple[str, ...], expected: str
) -> None:
    sensor = sensor_factory(*args)  # type: ignore[operator]
    code = sensor.proc.wait(scaled(30))
    sensor._reader.join(5)
    assert code == 2, sensor.log
    assert expected in sensor.log
    assert "Traceback" not in sensor.log
    assert sensor.segments() == []


def test_bad_config_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("capture:\n  snaplen: lots\n")
    result = subprocess.run(
        [sys.executable, "-m", "leireye.cli", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=scaled(30),
        check=False,
    )
    assert result.returncode == 2
    assert "$.capture.snaplen" in result.stderr
    assert "Traceback" not in result.stderr


def test_pcap_replay_fills_the_ring(sensor_factory: object) -> None:
    pcaps = sorted(DATA.glob("*.pcap"))
    if not pcaps:
        pytest.skip("no pcaps in tests/data")
    path = pcaps[0]
    with path.open("rb") as f:
        expected = sum(1 for _ in dpkt.pcap.Reader(f))
    sensor = sensor_factory(  # type: ignore[operator]
        "--pcap", str(path), config="capture: {replay: {speed: max}}\n"
    )
    status = sensor.status()
    wait_for(lambda: status.read().state == "finished", 30, "the replay to finish")
    ring = Ring.attach(f"{sensor.name}-ring")
    batch = RingReader(ring, "oldest").read()
    assert len(batch.records) == expected
    del batch
    ring.close()
    status.close()
    assert sensor.stop() == 0, sensor.log
