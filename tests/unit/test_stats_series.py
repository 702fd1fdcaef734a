from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import os
import time
import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from leireye.config import StatsConfig
from leireye.errors import RingError
from leireye.record import F_HAS_ADDR, F_HAS_PORTS, RECORD_DTYPE, Proto
from leireye.ring.shm import attach_segment, unlink_segment
from leireye.stats.accumulator import StatsAccumulator
from leireye.stats.layout import frame_dtype
from leireye.stats.series import HEADER_DTYPE, SEQ_WORD, StatsSeries

NS = 1_000_000_000
T0 = 1_700_000_000 * NS
TIMEOUT_SCALE = float(os.environ.get("LEIREYE_TEST_TIMEOUT_SCALE", "1"))


@pytest.fixture
def name() -> Iterator[str]:
    name = f"leireye-test-stats-{uuid.uuid4().hex[:12]}"
    yield name
    unlink_segment(name)


def filled_accumulator(config: StatsConfig) -> StatsAccumulator:
    acc = StatsAccumulator(config, T0)
    r = np.zeros(100, RECORD_DTYPE)
    r["proto"] = Proto.TCP
    r["wire_len"] = 1000
    r["flags"] = F_HAS_ADDR | F_HAS_PORTS
    r["src_lo"] = 0xFFFF_C000_0201
    r["dst_port"] = 443
    for second in range(5):
        acc.ingest(r[: 10 * (second + 1)], T0 + second * NS + 1)
    acc.observe_drops(0, 0, T0 + 5 * NS)
    acc.observe_drops(9, 1, T0 + 5 * NS + 1)
    return acc


def test_round_trip(name: str) -> None:
    config = StatsConfig(history_s=60, top_n=5)
    owner = StatsSeries.create(name, config)
    acc = filled_accumulator(config)
    now = T0 + 5 * NS + 2
    owner.publish(acc.frame(now), acc.history, acc.take_dirty())

    reader = StatsSeries.attach(name)
    try:
        assert reader.read() == acc.snapshot(now)
        snap = reader.read()
        assert snap.packets_total == 150
        assert snap.kernel_drops == 9
        assert snap.top_sources[0].address == "192.0.2.1"
        assert snap.top_ports[0].protocol == "TCP"
        history = reader.history(10)
        assert history["packets"].tolist() == [10, 20, 30, 40, 50]
        assert np.array_equal(history, acc.last_seconds(10))
        assert reader.history(1, include_current=True)["kernel_drops"].tolist() == [9]
        with pytest.raises((TypeError, ValueError)):
            reader._frame["packets_total"] = 1  # mapped read-only
    finally:
        reader.close()
        owner.close()


def test_nothing_published_yet(name: str) -> None:
    owner = StatsSeries.create(name, StatsConfig())
    reader = StatsSeries.attach(name)
    assert reader.read().timestamp_ns == 0
    assert len(reader.history(900)) == 0
    reader.close()
    reader.close()  # idempotent, as the supervisor's cleanup may close twice
    owner.close()


def corrupt(name: str, field: str, value: object) -> None:
    segment = attach_segment(name, writable=True)
    header = np.ndarray((), HEADER_DTYPE, buffer=segment.buf)
    header[field] = value
    del header
    segment.close()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("magic", b"LEIRING", "bad magic"),
        ("version", 99, "layout version is 99"),
        ("dtype_crc", 1, "layout checksum"),
        ("top_n", 11, "layout checksum"),
        ("history_rows", 1 << 30, "needs"),
        ("history_offset", 8192 * 4, "history offset"),
    ],
)
def test_attach_rejects_a_foreign_layout(
    name: str, field: str, value: object, message: str
) -> None:
    StatsSeries.create(name, StatsConfig()).close()
    corrupt(name, field, value)
    with pytest.raises(RingError, match=message):
        StatsSeries.attach(name)


def test_attach_rejects_a_missing_or_tiny_segment(name: str) -> None:
    with pytest.raises(RingError, match="does not exist"):
        StatsSeries.attach(name)
    with open(f"/dev/shm/{name}", "wb") as f:
        f.write(b"\0" * 100)
    with pytest.raises(RingError, match="too small"):
        StatsSeries.attach(name)


def test_writer_checks_the_configuration(name: str) -> None:
    StatsSeries.create(name, StatsConfig(top_n=10)).close()
    writer = StatsSeries.attach(name, writable=True)
    writer.check_config(StatsConfig(top_n=10, update_ms=500))
    with pytest.raises(RingError, match="configuration asks"):
        writer.check_config(StatsConfig(top_n=20))
    writer.close()


def test_a_writer_dead_mid_publish_is_recovered(name: str) -> None:
    owner = StatsSeries.create(name, StatsConfig())
    owner._words[SEQ_WORD] = 7  # odd: a publish that never finished
    reader = StatsSeries.attach(name)
    with pytest.raises(RingError, match="did not finish"):
        reader.read(retry_s=0.01)
    writer = StatsSeries.attach(name, writable=True)
    assert reader.read().timestamp_ns == 0
    acc = filled_accumulator(StatsConfig())
    writer.publish(acc.frame(T0 + 6 * NS), acc.history, acc.take_dirty())
    assert reader.read().packets_total == 150
    for series in (writer, reader, owner):
        series.close()


TOP_N = 100
ROWS = 301


def _publish_forever(name: str, rounds: int, started: multiprocessing.synchronize.Event) -> None:
    """Publish frames whose every counter equals the round number, and rewrite every history
    row with it too: any mix of two rounds is a torn read."""
    series = StatsSeries.attach(name, writable=True)
    frame = np.zeros((), frame_dtype(TOP_N))
    history = np.zeros(ROWS, series._history.dtype)
    history["second"] = np.arange(ROWS)
    started.set()
    for k in range(1, rounds + 1):
        for field in ("packets_total", "bytes_total", "packets_per_second", "ring_lost"):
            frame[field] = k
        frame["current_second"] = ROWS
        frame["proto_pps"] = k
        frame["top_sources"]["packets"] = k
        frame["top_ports"]["bytes"] = k
        history["packets"] = k
        series.publish(frame, history)
        time.sleep(50e-6)  # a pause, or a reader copying the whole history could never finish
    series.close()


def test_readers_never_see_a_torn_update(name: str) -> None:
    config = StatsConfig(history_s=ROWS - 1, top_n=TOP_N)
    owner = StatsSeries.create(name, config)
    reader = StatsSeries.attach(name)
    ctx = multiprocessing.get_context("spawn")
    started = ctx.Event()
    writer = ctx.Process(target=_publish_forever, args=(name, 5_000, started))
    writer.start()
    try:
        assert started.wait(30 * TIMEOUT_SCALE)
        seen: set[int] = set()
        while writer.is_alive() or not seen:
            f = reader.read_frame()
            k = int(f["packets_total"])
            values = np.concatenate(
                [
                    [int(f[x]) for x in ("bytes_total", "packets_per_second", "ring_lost")],
                    f["proto_pps"],
                    f["top_sources"]["packets"],
                    f["top_ports"]["bytes"],
                ]
            )
            assert (values == k).all(), f"torn frame around round {k}"
            rows = reader.history(ROWS)
            if len(rows):
                assert (rows["packets"] == rows["packets"][0]).all(), "torn history"
            seen.add(k)
        writer.join(30 * TIMEOUT_SCALE)
        assert writer.exitcode == 0
        assert len(seen) > 10, "the reader never overlapped the writer"
        assert reader.read().packets_total == 5_000
    finally:
        if writer.is_alive():
            writer.kill()
        reader.close()
        owner.close()
