"""Per-second statistics: a pure accumulator, a shared-memory series, the process around them."""

from leireye.stats.accumulator import StatsAccumulator
from leireye.stats.layout import (
    HISTORY_DTYPE,
    StatsSnapshot,
    TopAddress,
    TopPort,
    decode_frame,
    frame_dtype,
)
from leireye.stats.process import run_stats
from leireye.stats.series import StatsSeries

__all__ = [
    "HISTORY_DTYPE",
    "StatsAccumulator",
    "StatsSeries",
    "StatsSnapshot",
    "TopAddress",
    "TopPort",
    "decode_frame",
    "frame_dtype",
    "run_stats",
]
