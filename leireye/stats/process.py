"""The stats process: read the ring every `update_ms`, feed the accumulator, publish, log.

The supervisor creates the stats segment with `StatsSeries.create` (it owns it, sets who may
read it, and unlinks it at the end), so the series outlives a restart of this process and the
web workers keep their mapping; `run_stats` only attaches to it writable. The ring (every
shard of it, `leireye/ring/shards.py`) is attached read-only; until it exists, `run_stats`
waits for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

import numpy as np

from leireye.config import Config
from leireye.errors import LeirEyeError
from leireye.ring.shards import MergedReader, attach_when_ready
from leireye.stats.accumulator import StatsAccumulator
from leireye.stats.series import StatsSeries
from leireye.stopping import StopEvent, StopFlag, stop_on_sigterm

log = logging.getLogger("leireye.stats")

DropsSource = Callable[[], tuple[int, int]]

READ_MAX: Final = 65536
READS_PER_TICK: Final = 32  # at most 2 M records per tick; the rest waits for the next one


def epoch_clock() -> Callable[[], int]:
    """A monotonic clock in Unix nanoseconds, anchored to the wall clock once, now."""
    offset = time.time_ns() - time.monotonic_ns()
    return lambda: offset + time.monotonic_ns()


def _si(value: float, sep: str = "") -> str:
    """`5600000` -> `5.6M` (`sep` goes between the number and the prefix)."""
    for prefix in ("", "k", "M", "G", "T"):
        if abs(value) < 1000 or prefix == "T":
            return f"{value:.0f}{sep}" if prefix == "" else f"{value:.1f}{sep}{prefix}"
        value /= 1000
    raise AssertionError("unreachable")


def log_line(frame: np.ndarray) -> str:
    """One line for the log, from a frame: rates, totals and losses."""
    bps = int(frame["bytes_per_second"])
    return (
        f"pps={int(frame['packets_per_second'])} bytes_per_s={_si(bps)} ({_si(bps * 8, ' ')}bit/s) "
        f"packets={int(frame['packets_total'])} bytes={_si(int(frame['bytes_total']))} "
        f"kernel_drops={int(frame['kernel_drops'])} if_drops={int(frame['if_drops'])} "
        f"ring_lost={int(frame['ring_lost'])} decode_errors={int(frame['decode_errors'])}"
    )


class _DropsPoller:
    def __init__(self, source: DropsSource | None) -> None:
        self.source = source
        self.failing = False

    def poll(self, acc: StatsAccumulator, now_ns: int) -> None:
        if self.source is None:
            return
        try:
            kernel, interface = self.source()
        except (LeirEyeError, OSError) as exc:
            if not self.failing:
                log.warning("cannot read capture drops: %s", exc)
            self.failing = True
            return
        self.failing = False
        acc.observe_drops(kernel, interface, now_ns)


def run_stats(
    config: Config,
    ring_name: str,
    stats_name: str,
    stop: StopEvent | None = None,
    drops_source: DropsSource | None = None,
) -> None:
    """Run until `stop` is set or SIGTERM arrives (the handler is installed only when called
    from the main thread, and restored on return)."""
    with stop_on_sigterm(stop) as stopping:
        series = StatsSeries.attach(stats_name, writable=True)
        try:
            series.check_config(config.stats)
            _run(config, ring_name, series, stopping, _DropsPoller(drops_source))
        finally:
            series.close()


def _run(
    config: Config,
    ring_name: str,
    series: StatsSeries,
    stopping: StopFlag,
    drops: _DropsPoller,
) -> None:
    period = config.stats.update_ms / 1000
    log_every = config.stats.log_interval_s
    ring = attach_when_ready(ring_name, stopping, period, log)
    if ring is None:
        return
    try:
        clock = epoch_clock()
        # The first stats process of a run counts from the first packet, even one the capture
        # wrote before this process attached; a restarted one starts a new count from now
        # (recounting the whole ring would show it all as one second of traffic).
        first_start = series.read().timestamp_ns == 0
        reader = ring.reader("oldest" if first_start else "latest")
        acc = StatsAccumulator(config.stats, clock())
        log.info("stats: reading ring %s from id %d", ring_name, reader.cursor)
        next_tick = next_log = time.monotonic()
        while not stopping():
            now = clock()
            for _ in range(READS_PER_TICK):
                batch = reader.read(READ_MAX)
                acc.ingest(batch.records, now, lost=batch.lost)
                if len(batch.records) < READ_MAX:
                    break
            drops.poll(acc, now)
            frame = acc.frame(now)
            series.publish(frame, acc.history, acc.take_dirty())
            tick = time.monotonic()
            if log_every > 0 and tick >= next_log:
                laps = f" shard_laps={reader.lapped}" if isinstance(reader, MergedReader) else ""
                log.info("%s%s", log_line(frame), laps)
                next_log += log_every
                if next_log <= tick:
                    next_log = tick + log_every
            next_tick += period
            if next_tick < tick:  # late: skip the missed ticks rather than bunch them
                next_tick = tick
            stopping.wait(next_tick - tick)
    finally:
        ring.close()
