"""What the central counts per sensor: the pure core of its ingest (no NATS, no clock).

Each sensor gets an index on first sight (1, 2, ...; 0 stays "no fleet sensor", what a lone
sensor writes), kept for good: it is in every record the ring holds and in the sensor table
file, from which a restarted central takes the indexes and counters back.

Counted per sensor:

- `packets`: records received (and written to the ring), `bytes` their wire lengths;
- `lost`: sensor ids that never reached the central: each batch's `LE-Lost` (the sensor's ring
  overwrote them before it could publish), or, when larger, the gap between the previous
  batch's `LE-Last-Id` and this one's `LE-First-Id` (ids in batches that were published but are
  gone from the stream, or never published). Ids going *back* mean the sensor restarted with
  a new ring: only that batch's `LE-Lost` counts;
- `missed_messages`: stream sequence numbers skipped between two messages the central got (or
  after the last one it acknowledged before a restart), on any of the sensor's streams;
- `bad_batches`: packet and flows messages that could not be decoded (skipped);
- `flows`: ended flows received (written to the central's flow store); `flows_missed`: the
  sum of its flows messages' `missed` (flow events its publisher could not read in time);
- `minutes`: host and app minute rows received (written to the central's flow store);
  `minutes_missed`: the sum of its minutes messages' `missed`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from leireye.fleet.model import BatchHeader, Kind, SensorState, SensorTable


@dataclass
class SensorTrack:
    name: str
    index: int
    packets: int = 0
    lost: int = 0
    bad_batches: int = 0
    missed_messages: int = 0
    last_message_ns: int = 0
    status: dict[str, Any] | None = None
    stats: dict[str, Any] | None = None
    last_id: int = 0  # the sensor id of the last record received (0: none in this run)
    sequences: dict[str, int] = field(default_factory=dict)  # last stream sequence per kind
    flows: int = 0
    flows_missed: int = 0
    bytes: int = 0
    counted_seq: int = -1  # the packets sequence the saved counters count up to (-1: unknown)
    minutes: int = 0
    minutes_missed: int = 0

    def on_message(self, kind: Kind, stream_seq: int, stored_ns: int) -> bool:
        """A message of `kind` with this stream sequence, stored by JetStream at `stored_ns`.
        False for a message seen already (a redelivery): skip it."""
        last = self.sequences.get(kind)
        if last is not None:
            if stream_seq <= last:
                return False
            self.missed_messages += stream_seq - last - 1
        self.sequences[kind] = stream_seq
        self.last_message_ns = max(self.last_message_ns, stored_ns)
        return True

    def on_batch(self, header: BatchHeader, wire_bytes: int = 0) -> None:
        lost = header.lost
        if self.last_id and header.first_id > self.last_id:
            lost = max(lost, header.first_id - self.last_id - 1)
        self.lost += lost
        self.packets += header.count
        self.bytes += wire_bytes
        self.last_id = header.last_id

    def state(self, now_ns: int, silent_after_s: float) -> SensorState:
        if not self.last_message_ns:
            name = "never"
        elif now_ns - self.last_message_ns > silent_after_s * 1e9:
            name = "silent"
        else:
            name = "live"
        return SensorState(
            name=self.name, index=self.index, state=name,  # type: ignore[arg-type]
            last_message_ns=self.last_message_ns, packets=self.packets, lost=self.lost,
            bad_batches=self.bad_batches, status=self.status, stats=self.stats,
            missed_messages=self.missed_messages, flows=self.flows,
            flows_missed=self.flows_missed, bytes=self.bytes,
            packets_seq=self.sequences.get("packets", self.counted_seq),
            minutes=self.minutes, minutes_missed=self.minutes_missed,
        )  # fmt: skip


class Fleet:
    """Every sensor the central follows, by name and index."""

    def __init__(self, silent_after_s: float, saved: SensorTable | None = None) -> None:
        self.silent_after_s = silent_after_s
        self.sensors: dict[str, SensorTrack] = {}
        for s in saved.sensors if saved is not None else ():
            self.sensors[s.name] = SensorTrack(
                s.name, s.index, s.packets, s.lost, s.bad_batches, s.missed_messages,
                s.last_message_ns, s.status, s.stats, flows=s.flows, flows_missed=s.flows_missed,
                bytes=s.bytes, counted_seq=s.packets_seq,
                minutes=s.minutes, minutes_missed=s.minutes_missed,
            )  # fmt: skip

    def add(self, name: str) -> tuple[SensorTrack, bool]:
        """The sensor `name`, and whether it is new (then its index must be saved before any
        of its records is written)."""
        track = self.sensors.get(name)
        if track is not None:
            return track, False
        index = max((t.index for t in self.sensors.values()), default=0) + 1
        if index > 0xFFFF:
            raise ValueError(f"more than {0xFFFF} sensors: the record's `sensor` field is full")
        track = self.sensors[name] = SensorTrack(name, index)
        return track, True

    def table(self, now_ns: int) -> SensorTable:
        states = [t.state(now_ns, self.silent_after_s) for t in self.sensors.values()]
        return SensorTable(updated_ns=now_ns, sensors=sorted(states, key=lambda s: s.index))

    @property
    def packets(self) -> int:
        return sum(t.packets for t in self.sensors.values())

    @property
    def lost(self) -> int:
        return sum(t.lost for t in self.sensors.values())
