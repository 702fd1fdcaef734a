from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from leireye.config import Config, StatsConfig
from leireye.errors import RingError
from leireye.record import F_HAS_ADDR, F_HAS_PORTS, RECORD_DTYPE, Proto
from leireye.ring import Ring, RingLayout, RingWriter
from leireye.ring.shm import unlink_segment
from leireye.stats.layout import frame_dtype
from leireye.stats.process import log_line, run_stats
from leireye.stats.series import StatsSeries

TIMEOUT = 20 * float(os.environ.get("LEIREYE_TEST_TIMEOUT_SCALE", "1"))
CONFIG = Config(stats=StatsConfig(update_ms=20, history_s=60, log_interval_s=0.05))
CAPACITY = 4096


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


class FileDrops:
    """A drops source the child process can unpickle: `kernel if` read from a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self) -> tuple[int, int]:
        kernel, interface = self.path.read_text().split()
        return int(kernel), int(interface)

    def set(self, kernel: int, interface: int) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{kernel} {interface}")
        os.replace(tmp, self.path)


def records(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = np.zeros(n, RECORD_DTYPE)
    r["proto"] = rng.choice([Proto.TCP, Proto.UDP, Proto.ARP], n)
    r["wire_len"] = rng.integers(60, 1515, n)
    r["src_lo"] = 0xFFFF_0A00_0000 + rng.integers(0, 5, n)
    r["dst_port"] = 443
    r["flags"] = F_HAS_ADDR | F_HAS_PORTS
    return r


@pytest.fixture
def names() -> Iterator[tuple[str, str]]:
    tag = uuid.uuid4().hex[:12]
    ring_name, stats_name = f"leireye-test-ring-{tag}", f"leireye-test-stats-{tag}"
    yield ring_name, stats_name
    unlink_segment(ring_name)
    unlink_segment(stats_name)


def test_stats_process_counts_what_the_ring_carries(names: tuple[str, str], tmp_path: Path) -> None:
    ring_name, stats_name = names
    ring = Ring.create(ring_name, RingLayout(capacity=CAPACITY, raw_bytes=0))
    series = StatsSeries.create(stats_name, CONFIG.stats)
    drops = FileDrops(tmp_path / "drops")
    drops.set(3, 0)  # the baseline: drops before the stats process started are not counted
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=run_stats, args=(CONFIG, ring_name, stats_name, None, drops))
    child.start()
    try:
        wait_for(lambda: series.read().timestamp_ns > 0, "the first publish")
        written = [records(1000, seed) for seed in range(3)]
        writer = RingWriter(ring)
        for batch in written:
            writer.write(batch)
        drops.set(8, 2)
        wait_for(lambda: series.read().packets_total == 3000, "3000 packets")
        wait_for(lambda: series.read().kernel_drops == 5, "the drops")

        all_records = np.concatenate(written)
        snap = series.read()
        assert snap.bytes_total == int(all_records["wire_len"].sum())
        assert snap.protocols_total == dict(
            Counter(Proto(int(p)).label for p in all_records["proto"])
        )
        assert snap.if_drops == 2
        assert snap.ring_lost == 0
        history = series.history(60, include_current=True)
        assert int(history["packets"].sum()) == 3000
        assert int(history["kernel_drops"].sum()) == 5

        # The capture restarts: a new writer carries on from the published sequence.
        del writer
        RingWriter(ring).write(records(1000, 7))
        wait_for(lambda: series.read().packets_total == 4000, "packets after a writer restart")

        # A burst of ten laps between two polls: the stats reader loses records, and says so.
        RingWriter(ring).write(records(10 * CAPACITY, 8))

        def all_accounted() -> bool:
            snap = series.read()
            return snap.packets_total + snap.ring_lost == 4000 + 10 * CAPACITY

        wait_for(all_accounted, "packets + ring_lost == written")
        assert series.read().ring_lost > 0
        wait_for(lambda: len(series.read().top_sources) == 5, "the top sources")

        os.kill(child.pid or 0, signal.SIGTERM)
        child.join(TIMEOUT)
        assert child.exitcode == 0
        assert series.read().packets_total + series.read().ring_lost == 4000 + 10 * CAPACITY
    finally:
        if child.is_alive():
            child.kill()
            child.join()
        series.close()
        ring.close()


def test_stats_waits_for_the_ring_and_stops_on_its_event(
    names: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    ring_name, stats_name = names
    series = StatsSeries.create(stats_name, CONFIG.stats)
    stop = threading.Event()
    caplog.set_level(logging.INFO, logger="leireye.stats")
    thread = threading.Thread(target=run_stats, args=(CONFIG, ring_name, stats_name, stop))
    thread.start()
    ring = None
    try:
        wait_for(lambda: "waiting for the ring" in caplog.text, "the wait for the ring")
        ring = Ring.create(ring_name, RingLayout(capacity=CAPACITY, raw_bytes=0))
        wait_for(lambda: series.read().timestamp_ns > 0, "the first publish")
        RingWriter(ring).write(records(10, 1))
        wait_for(lambda: series.read().packets_total == 10, "10 packets")
        wait_for(lambda: "packets=10 " in caplog.text, "a log line")
    finally:
        stop.set()
        thread.join(TIMEOUT)
        series.close()
        if ring is not None:
            ring.close()
    assert not thread.is_alive()


def test_the_stats_process_refuses_a_segment_made_for_another_configuration(
    names: tuple[str, str],
) -> None:
    _, stats_name = names
    StatsSeries.create(stats_name, StatsConfig(top_n=3)).close()
    with pytest.raises(RingError, match="configuration asks"):
        run_stats(CONFIG, "unused", stats_name, threading.Event())


def test_log_line() -> None:
    frame = np.zeros((), frame_dtype(10))
    frame["packets_per_second"] = 1234
    frame["bytes_per_second"] = 5_600_000
    frame["packets_total"] = 123456
    frame["bytes_total"] = 1_234_567_890
    frame["kernel_drops"] = 2
    assert log_line(frame) == (
        "pps=1234 bytes_per_s=5.6M (44.8 Mbit/s) packets=123456 bytes=1.2G "
        "kernel_drops=2 if_drops=0 ring_lost=0 decode_errors=0"
    )
