"""Several capture processes on one interface: the PACKET_FANOUT group they join.

Neither pypcap nor libpcap exposes PACKET_FANOUT, but the handle's descriptor is an AF_PACKET
socket: right after libpcap activates it (and before the BPF filter and the privilege drop) a
`setsockopt(SOL_PACKET, PACKET_FANOUT, group | mode << 16)` on a duplicate of it joins the group.
The kernel then hands each packet of the interface to exactly one member. Between activation and
joining (microseconds) a member sees every packet, so a packet arriving exactly then can be
captured twice; nothing else is.

The group id comes from the supervisor's pid (16 bits), so two sensors on one host do not share
a group by accident (or from `capture.fanout_group`); a restarted shard rejoins the same group.
"""

from __future__ import annotations

import enum
import logging
import os
import socket
from dataclasses import dataclass
from typing import Final

from leireye.config import Config
from leireye.errors import CaptureError

log = logging.getLogger("leireye.capture")

SOL_PACKET: Final = 263
PACKET_FANOUT: Final = 18


class FanoutMode(enum.IntEnum):
    HASH = 0  # by flow: both directions of a connection land on one member
    LB = 1  # round robin
    CPU = 2  # the CPU that received the packet


@dataclass(frozen=True)
class ShardSpec:
    """Which shard a capture process is, and the fanout group it joins when `count > 1`."""

    index: int = 0
    count: int = 1
    group: int = 0
    mode: FanoutMode = FanoutMode.HASH


def fanout_group(supervisor_pid: int) -> int:
    return supervisor_pid & 0xFFFF


def capture_shards(config: Config, cores: int | None = None) -> int:
    """How many capture processes (and ring shards) a run has: one for a replay."""
    workers = config.capture.workers
    if config.capture.pcap is not None:
        return 1
    if workers == "auto":
        return max(1, (cores or os.cpu_count() or 1) - 1)
    return workers


def shard_specs(config: Config, supervisor_pid: int) -> list[ShardSpec]:
    count = capture_shards(config)
    mode = FanoutMode[config.capture.fanout_mode.upper()]
    fixed = config.capture.fanout_group
    group = fanout_group(supervisor_pid) if fixed == "auto" else fixed
    return [ShardSpec(index=i, count=count, group=group, mode=mode) for i in range(count)]


def join_fanout(fd: int, group: int, mode: FanoutMode) -> None:
    """Join fanout group `group` with the AF_PACKET socket `fd`; OSError if the kernel refuses."""
    sock = socket.socket(fileno=os.dup(fd))
    try:
        sock.setsockopt(SOL_PACKET, PACKET_FANOUT, group | (int(mode) << 16))
    finally:
        sock.close()  # closes the duplicate only: the membership belongs to the socket


class FanoutRefused(CaptureError):
    """The kernel refused PACKET_FANOUT on this interface."""


class FanoutJoin:
    """The `after_open` hook of a shard: join the group, or note why not."""

    def __init__(self, spec: ShardSpec, interface: str) -> None:
        self.spec = spec
        self.interface = interface
        self.refused = ""

    def __call__(self, fd: int) -> None:
        spec = self.spec
        try:
            join_fanout(fd, spec.group, spec.mode)
        except OSError as exc:
            self.refused = (
                f"PACKET_FANOUT refused on {self.interface} ({exc.strerror or exc}): "
                f"capturing with one process instead of {spec.count}"
            )
            if spec.index > 0:
                raise FanoutRefused(self.refused) from None
            log.warning("%s", self.refused)
