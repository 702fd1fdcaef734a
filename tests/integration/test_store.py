"""The packet store on a real sensor, on a veth pair: every frame kept whole and byte for byte
what `tcpdump -w` recorded at the same time (jumbo frames and a burst larger than the ring
included), files only the sensor's accounts can read; and its faults: a full disk stops the store
but not the capture, a SIGKILLed writer is restarted and counts what it lost."""

from __future__ import annotations

import hashlib
import os
import pwd
import random
import re
import shutil
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dpkt
import pytest

from leireye.errors import RingError
from leireye.privileges import reachable_by
from leireye.ring.frames import FrameSegment, frames_name
from leireye.ring.storestatus import StoreState, StoreStatus, read_status
from leireye.store.reader import PacketStore
from tests.accounts import users_yaml
from tests.http import Http
from tests.netns import VethPair, inject_frames, skip_unless_root, udp_frame, veth_pair
from tests.sensor import Sensor, SensorFactory
from tests.waiting import wait_for

pytestmark = [pytest.mark.root, skip_unless_root]
PORT = 9999
JUMBO_MTU = 9000
SNAPLEN = 9100


def jumbo_pair() -> Iterator[VethPair]:
    with veth_pair(ipv6=False) as pair:
        subprocess.run(["ip", "link", "set", pair.host_if, "mtu", str(JUMBO_MTU)], check=True)
        pair.run(["ip", "link", "set", pair.ns_if, "mtu", str(JUMBO_MTU)], check=True)
        yield pair


@pytest.fixture
def pair() -> Iterator[VethPair]:
    yield from jumbo_pair()


def frames_of_all_sizes(pair: VethPair, count: int, seed: int = 15) -> list[bytes]:
    """UDP frames from 60 bytes to a whole jumbo frame (9014), each payload different."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        size = rng.choice([0, 18, 200, 1472, 1473, 4000, 8972, rng.randint(0, 8972)])
        payload = i.to_bytes(4, "big") + rng.randbytes(max(0, size - 4))
        out.append(udp_frame(pair, 20000 + i % 50, PORT, payload))
    return out


def start(sensor_factory: SensorFactory, pair: VethPair, store: str = "") -> Sensor:
    return sensor_factory(
        "--interface", pair.host_if, "--bpf", f"udp and dst port {PORT}",
        config=(
            f"capture: {{snaplen: {SNAPLEN}, buffer_mb: 256}}\n"
            "ring: {capacity: 1024}\n"  # the burst is larger than the ring
            f"store: {{max_gb: 1, file_mb: 4{store}}}\n"
        ),
    )  # fmt: skip


def store_status(sensor: Sensor) -> StoreStatus:
    try:
        segment = FrameSegment.attach(frames_name(f"{sensor.name}-ring", 0))
    except RingError:
        return StoreStatus()
    try:
        return read_status(segment)
    finally:
        segment.close()


def wait_written(sensor: Sensor, count: int, what: str = "the store") -> StoreStatus:
    def done() -> StoreStatus | None:
        status = store_status(sensor)
        return status if status.frames_written + status.frames_lost >= count else None

    with sensor.explained():
        return wait_for(done, 60, f"{what} to account for {count} frames")


def pcap_count(path: Path) -> int:
    """Packets in a pcap file being written (a cut last record is not counted)."""
    count = 0
    with open(path, "rb") as f:
        try:
            for _ in dpkt.pcap.Reader(f):
                count += 1
        except (dpkt.NeedData, ValueError):
            pass
    return count


def digests(frames: Iterator[bytes] | list[bytes]) -> list[str]:
    return [hashlib.sha256(frame).hexdigest() for frame in frames]


def test_the_store_holds_every_frame_byte_for_byte_like_tcpdump(
    sensor_factory: SensorFactory, pair: VethPair, tmp_path: Path
) -> None:
    if shutil.which("tcpdump") is None:
        pytest.skip("needs tcpdump")
    reference = tmp_path / "tcpdump.pcap"
    tcpdump = subprocess.Popen(
        ["tcpdump", "-i", pair.host_if, "-s", str(SNAPLEN), "-B", "262144", "-U", "-n",
         "--time-stamp-precision=nano", "-w", str(reference), f"udp and dst port {PORT}"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert tcpdump.stderr is not None
        assert "listening on" in tcpdump.stderr.readline()
        sensor = start(sensor_factory, pair)
        status = sensor.status()
        sensor.wait_capturing(status)
        frames = frames_of_all_sizes(pair, 6000)
        # ~5k frames/s: tcpdump -U (a write per packet) keeps up; the ring (1024) does not.
        inject_frames(pair.ns_if, frames, ns=pair.ns, interval=0.0002)
        wait_for(lambda: status.read().packets_captured + status.read().kernel_drops
                 >= len(frames), 60, "the capture to see every frame")  # fmt: skip
        assert status.read().kernel_drops == 0, "the capture dropped frames: nothing to compare"
        stored = wait_written(sensor, len(frames))
        assert stored.frames_lost == 0 and stored.state == StoreState.WRITING
        wait_for(lambda: pcap_count(reference) >= len(frames), 30, "tcpdump to write them all")
    finally:
        tcpdump.send_signal(signal.SIGINT)
        tcpdump.communicate(timeout=30)
    with open(reference, "rb") as f:
        theirs = [(ts, bytes(buf)) for ts, buf in dpkt.pcap.Reader(f)]
    assert len(theirs) == len(frames), "tcpdump dropped frames: nothing to compare"

    store = PacketStore(sensor.state_dir / "store")
    ours = list(store.between(0, 2**63 - 1))
    assert [f.id for f in ours] == sorted(f.id for f in ours)
    assert digests(f.data for f in ours) == digests(buf for _, buf in theirs)
    assert digests(f.data for f in ours) == digests(frames)
    assert [f.wire_len for f in ours] == [len(f) for f in frames]
    assert [f.ts_ns for f in ours] == [int(ts * 10**9) for ts, _ in theirs]  # same kernel stamp
    assert max(len(f.data) for f in ours) == 9014  # jumbo frames, whole
    assert store.info().files > 1  # rotated (file_mb: 4)

    # Each file alone, read by other readers: dpkt's pcapng reader and tshark.
    files = sorted((sensor.state_dir / "store").glob("*.pcapng"))
    again: list[bytes] = []
    for path in files:
        with open(path, "rb") as f:
            again += [bytes(buf) for _, buf in dpkt.pcapng.Reader(f)]
    assert digests(again) == digests(frames)
    if shutil.which("tshark"):
        out = subprocess.run(["tshark", "-r", str(files[0]), "-T", "fields", "-e", "frame.len"],
                             capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
        assert len(out.stdout.split()) == store.indexes()[0].count

    # One packet and a set of them by id, as the web tier asks.
    assert store.frame(ours[100].id) == ours[100]
    wanted = [ours[i].id for i in (0, 1, 2, 999, 3000, len(ours) - 1)]
    assert [f.id for f in store.frames(wanted)] == wanted

    # Who may read them: the sensor's own accounts (owner leireye, group of the web user).
    directory = sensor.state_dir / "store"
    assert stat.S_IMODE(directory.stat().st_mode) & 0o007 == 0
    web, nobody = pwd.getpwnam("leireye-web"), pwd.getpwnam("nobody")
    for path in directory.iterdir():
        mode = path.stat().st_mode
        assert stat.S_IMODE(mode) == 0o640, path
        assert path.stat().st_gid == directory.stat().st_gid == web.pw_gid
        assert reachable_by(path, web.pw_uid, web.pw_gid) is None  # the web workers read it
        assert reachable_by(path, nobody.pw_uid, nobody.pw_gid) is not None  # nobody else
    sensor.stop()


def metrics(sensor: Sensor) -> str:
    return Http(sensor.web_port()).login("vic", "viewer-pass-3").metrics()


def test_a_full_disk_stops_the_store_and_not_the_capture(pair: VethPair, tmp_path: Path) -> None:
    users = users_yaml({"vic": ("VIEWER", "viewer-pass-3")})
    sensor = Sensor(tmp_path, "--interface", pair.host_if, "--bpf", f"udp and dst port {PORT}",
                    config=f"capture: {{snaplen: {SNAPLEN}}}\n"
                    "store: {max_gb: 1, file_mb: 4, buffer_mb: 8}\n", users=users)  # fmt: skip
    status = sensor.status()
    sensor.wait_capturing(status)
    store_dir = sensor.state_dir / "store"
    wait_for(lambda: store_status(sensor).state == StoreState.WRITING, 30, "the store writer")
    owner = _owner(sensor)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=2750", "tmpfs", str(store_dir)],
                   check=True)  # fmt: skip
    try:
        os.chown(store_dir, *owner)
        frames = frames_of_all_sizes(pair, 2000)
        inject_frames(pair.ns_if, frames, ns=pair.ns)

        def failed() -> StoreStatus | None:
            found = store_status(sensor)
            return found if found.state == StoreState.FAILED else None

        with sensor.explained():
            stopped = wait_for(failed, 60, "the store to stop on the full disk")
        assert "No space left on device" in stopped.last_error
        wait_for(lambda: status.read().packets_captured >= len(frames), 60, "the capture")
        assert status.read().capturing
        stopped = wait_written(sensor, len(frames))
        assert stopped.frames_lost > 0  # counted, not hidden
        assert "store stopped" in sensor.log and "No space left on device" in sensor.log
        more = frames_of_all_sizes(pair, 100, seed=2)
        inject_frames(pair.ns_if, more, ns=pair.ns)  # the capture goes on
        wait_for(lambda: status.read().packets_captured >= len(frames) + len(more), 60,
                 "the capture to go on")  # fmt: skip
        shown = metrics(sensor)
        assert "leireye_store_up 0" in shown
        assert 'leireye_store_state{state="failed"} 1' in shown
        lost = re.search(r"^leireye_store_frames_lost_total (\d+)", shown, re.M)
        assert lost is not None and int(lost.group(1)) > 0
    finally:
        sensor.stop()
        subprocess.run(["umount", "-l", str(store_dir)], check=False)
        sensor.kill()


def test_a_killed_writer_is_restarted_and_counts_its_loss(
    sensor_factory: SensorFactory, pair: VethPair
) -> None:
    sensor = start(sensor_factory, pair, store=", buffer_mb: 2")  # lapped while down
    status = sensor.status()
    sensor.wait_capturing(status)
    first = frames_of_all_sizes(pair, 300)
    inject_frames(pair.ns_if, first, ns=pair.ns)
    before = wait_written(sensor, len(first))
    assert before.frames_lost == 0
    os.kill(before.pid, signal.SIGKILL)
    second = frames_of_all_sizes(pair, 3000, seed=3)  # ~9 MB while no writer runs
    inject_frames(pair.ns_if, second, ns=pair.ns)

    def restarted() -> StoreStatus | None:
        found = store_status(sensor)
        return found if found.pid not in (0, before.pid) else None

    with sensor.explained():
        wait_for(restarted, 60, "the store writer to be restarted")
    sent = [*first, *second]
    after = wait_written(sensor, len(sent))
    store = PacketStore(sensor.state_dir / "store")
    held = list(store.between(0, 2**63 - 1))
    # Lost while no writer ran (overwritten before the new one started, or while it caught up,
    # or a capture batch larger than the whole segment): counted, whichever it was.
    assert after.frames_lost > 0
    assert sensor.log.count("store: writing") == 2  # started, killed, restarted
    assert after.frames_lost + len(held) == len(sent)  # every frame stored or counted
    assert len({f.id for f in held}) == len(held)  # nothing written twice
    by_id = dict(zip(range(1, len(sent) + 1), digests(sent), strict=True))
    assert digests(f.data for f in held) == [by_id[f.id] for f in held]
    assert digests(f.data for f in held[: len(first)]) == digests(first)  # kept across the kill
    sensor.stop()


def _owner(sensor: Sensor) -> tuple[int, int]:
    st = (sensor.state_dir / "store").stat()
    return st.st_uid, st.st_gid


def test_two_capture_shards_store_every_frame_once(
    sensor_factory: SensorFactory, pair: VethPair
) -> None:
    sensor = sensor_factory(
        "--interface", pair.host_if, "--bpf", f"udp and dst port {PORT}",
        config=f"capture: {{snaplen: {SNAPLEN}, workers: 2}}\nstore: {{max_gb: 1, file_mb: 4}}\n",
    )  # fmt: skip
    status = sensor.status()
    sensor.wait_capturing(status)
    frames = frames_of_all_sizes(pair, 2000)
    inject_frames(pair.ns_if, frames, ns=pair.ns)

    def stored() -> list[int] | None:
        written = []
        for shard in (0, 1):
            try:
                segment = FrameSegment.attach(frames_name(f"{sensor.name}-ring", shard))
            except RingError:
                return None
            try:
                found = read_status(segment)
            finally:
                segment.close()
            written.append(found.frames_written + found.frames_lost)
        return written if sum(written) >= len(frames) else None

    with sensor.explained():
        per_shard = wait_for(stored, 60, "both shards' frames in the store")
    store = PacketStore(sensor.state_dir / "store")
    held = list(store.between(0, 2**63 - 1))
    if all(per_shard):  # the kernel spread the 50 flows over both processes
        assert {i.shard for i in store.indexes()} == {0, 1}
    assert len(held) == len(frames) and len({f.id for f in held}) == len(frames)
    assert sorted(digests(f.data for f in held)) == sorted(digests(frames))
    assert [f.ts_ns for f in held] == sorted(f.ts_ns for f in held)  # merged by time
    assert [f.id for f in store.frames(f.id for f in held[::7])] == sorted(f.id for f in held[::7])
    sensor.stop()
