"""`leireye run` as a user runs it: a real supervisor, real children, real signals, real packets."""

from __future__ import annotations

import importlib.util
import os
import pwd
import signal
import subprocess
import sys
from pathlib import Path

import dpkt
import pytest

from leireye.ring import Ring, RingReader
from leireye.stats.series import StatsSeries
from tests.sensor import SensorFactory, free_udp_port, send_udp
from tests.waiting import scaled, wait_for

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root"),
]
DATA = Path(__file__).resolve().parents[1] / "data"


def read_until(reader: RingReader, count: int, what: str) -> list[int]:
    ids: list[int] = []

    def enough() -> bool:
        ids.extend(int(i) for i in reader.read().records["seq"])
        return len(ids) >= count

    wait_for(enough, 20, what)
    return ids


def test_run_captures_publishes_stats_and_stops_clean(sensor_factory: SensorFactory) -> None:
    port = free_udp_port()
    sensor = sensor_factory("--interface", "lo", "--bpf", f"udp and dst port {port}")
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
    wait_for(lambda: "web worker 0 serving" in sensor.log, 20, "the web worker to serve")
    writer, web = (pwd.getpwnam(name).pw_uid for name in ("leireye", "leireye-web"))
    titles = {
        "capture": ("leireye-cap0", "leireye: capture 0 lo"),
        "stats": ("leireye-stats", "leireye: stats"),
        "web-0": ("leireye-web0", "leireye: web 0"),
    }
    for role, uid in (("capture", writer), ("stats", writer), ("web-0", web)):
        pid = int(  # only the supervisor keeps root; each child runs as its own account
            next(line for line in sensor.lines if f"{role} started pid=" in line).split("=")[-1]
        )
        uids = Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[:4]
        assert uids == [str(uid)] * 4, (role, uids)
        comm, title = titles[role]  # what `top` and `ps -f` show
        assert Path(f"/proc/{pid}/comm").read_text() == f"{comm}\n"
        if importlib.util.find_spec("setproctitle") is not None:
            assert Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0") == title.encode()
    assert Path(f"/proc/{sensor.proc.pid}/comm").read_text() == "leireye\n"
    ring.close()
    stats.close()
    status.close()
    assert sensor.stop(signal.SIGINT) == 0, sensor.log
    assert sensor.segments() == []
    assert "Traceback" not in sensor.log


def test_killed_capture_is_restarted_and_ids_continue(sensor_factory: SensorFactory) -> None:
    port = free_udp_port()
    sensor = sensor_factory("--interface", "lo", "--bpf", f"udp and dst port {port}")
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
    sensor_factory: SensorFactory,
) -> None:
    sensor = sensor_factory("--interface", "lo", "--bpf", "udp and port 9")
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
    sensor_factory: SensorFactory, args: tuple[str, ...], expected: str
) -> None:
    sensor = sensor_factory(*args)
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


def test_pcap_replay_fills_the_ring(sensor_factory: SensorFactory) -> None:
    pcaps = sorted(DATA.glob("*.pcap"))
    if not pcaps:
        pytest.skip("no pcaps in tests/data")
    path = pcaps[0]
    with path.open("rb") as f:
        expected = sum(1 for _ in dpkt.pcap.Reader(f))
    sensor = sensor_factory("--pcap", str(path), config="capture: {replay: {speed: max}}\n")
    status = sensor.status()
    wait_for(lambda: status.read().state == "finished", 30, "the replay to finish")
    ring = Ring.attach(f"{sensor.name}-ring")
    batch = RingReader(ring, "oldest").read()
    assert len(batch.records) == expected
    del batch
    ring.close()
    status.close()
    assert sensor.stop() == 0, sensor.log
