"""The fleet's sensors as a web worker knows them: name <-> ring index, and their last states.

At a fleet central (`central.enabled`) one ring holds every sensor's packets, and a record's
`sensor` field indexes the central's sensor table (`leireye.fleet.model.SensorTable`), a JSON
file that the central's ingest replaces atomically about once a second. `SensorDirectory` reads
it again only when its inode, size or mtime changed: `refresh` is one `stat`, called on the
hub's tick (never per packet), and `resolve` calls it once more (at most every `MISS_CHECK_S`)
when a batch holds an index the directory does not know yet, so the first packets of a new
sensor carry its name. An index keeps its name for the life of the central's ring, so nothing
resolved before a re-read turns false after it; a table that does not decode keeps the last
good one (logged once per change of the file).

On a lone sensor the directory is fixed and `central` is False: its own `fleet.sensor` (when
set) is index 0, the value of every record's `sensor` field there. Nothing of this shows in a
lone sensor's messages; it only lets a `sensor` filter naming the sensor itself be accepted.

What `SensorDirectory` offers the rest of the web tier:

- `indexes(names)`, the indexes of the names it knows (for `filters.PacketFilter.mask`: a
  name not in the table matches nothing until it appears there);
- `json_names()`, the JSON text of each index's name (`null` for an index not in the table),
  for the packet encoders;
- `states(allowed)`, the table's `SensorState`s a user may see;
- `scope(allowed)`, for a user limited to some sensors, the sensors whose sums replace the
  central's own totals (`narrow_stats`, `narrow_status`): a central's counters, top lists and
  history mix every sensor's traffic, and their size tells how busy the sensors one may not see
  are (docs/fleet-central.md, "Users limited to some sensors").
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np
import numpy.typing as npt

from leireye.config import Config
from leireye.fleet.model import (
    SENSOR_TABLE_FILE,
    FleetError,
    SensorState,
    SensorTable,
    read_sensor_table,
)
from leireye.ring.status import CaptureStatus
from leireye.stats.layout import StatsSnapshot
from leireye.web.columns import column_batches
from leireye.web.frames import BinaryBatcher
from leireye.wire import SensorInfo

log = logging.getLogger("leireye.web")

MISS_CHECK_S: Final = 0.1  # a batch with an unknown index stats the table at most this often
_NO_INDEXES: Final = np.empty(0, dtype=np.uint16)
_Signature = tuple[int, int, int, int]


class SensorDirectory:
    def __init__(self, path: Path | None, own: str | None = None) -> None:
        """`path`: the central's sensor table; None on a lone sensor, whose `own` name (its
        `fleet.sensor`, when set) is index 0."""
        self.path = path
        self.central = path is not None
        self.own = own
        self.table: SensorTable | None = None
        self.error: str | None = None  # why the file last failed to decode, None when it did
        self.version = 0  # grows with each table read
        self._signature: _Signature | None = None
        self._by_name: dict[str, int] = {} if own is None or self.central else {own: 0}
        self._by_index: dict[int, str] = {v: k for k, v in self._by_name.items()}
        self._indexes: dict[tuple[str, ...], npt.NDArray[np.uint16]] = {}
        self._json: list[str] = []
        self._json_version = -1
        self._next_miss_check = 0.0
        self._batcher: tuple[int, BinaryBatcher] | None = None

    @classmethod
    def of(cls, config: Config) -> SensorDirectory:
        own = config.fleet.sensor if config.fleet.enabled else None
        if config.central.enabled:
            return cls(config.state_path(SENSOR_TABLE_FILE))
        return cls(None, own)

    # -- reading the table ------------------------------------------------------------------

    def refresh(self) -> bool:
        """Read the table again if its file changed; True when a new table was taken."""
        if self.path is None:
            return False
        try:
            st = os.stat(self.path)
            signature = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            signature = (-1, -1, -1, -1)
        except OSError as exc:
            self._fail((-2, -2, -2, -2), f"{self.path}: {exc.strerror}")
            return False
        if signature == self._signature:
            return False
        try:
            table = read_sensor_table(self.path)
        except FleetError as exc:
            self._fail(signature, str(exc))
            return False
        except OSError as exc:
            self._fail(signature, f"{self.path}: {exc.strerror}")
            return False
        self._signature, self.error = signature, None
        if table is None:
            return False
        self.table = table
        for state in table.sensors:
            self._by_name[state.name] = state.index
            self._by_index[state.index] = state.name
        self._indexes.clear()
        self.version += 1
        return True

    def _fail(self, signature: _Signature, error: str) -> None:
        if signature != self._signature:
            log.error("sensor table: %s (keeping the last good one)", error)
        self._signature, self.error = signature, error

    def resolve(self, indexes: npt.NDArray[np.integer]) -> None:
        """A batch's `sensor` column: when it holds an index not known yet, look at the table
        file once more now (at most every MISS_CHECK_S)."""
        if not self.central or not len(indexes):
            return
        if all(i in self._by_index for i in np.unique(indexes).tolist()):
            return
        now = time.monotonic()
        if now >= self._next_miss_check:
            self._next_miss_check = now + MISS_CHECK_S
            self.refresh()

    # -- what the web tier asks -------------------------------------------------------------

    def index_of(self, name: str) -> int | None:
        return self._by_name.get(name)

    def name_of(self, index: int) -> str | None:
        return self._by_index.get(index)

    def indexes(self, names: tuple[str, ...]) -> npt.NDArray[np.uint16]:
        """The ring indexes of those of `names` the table holds (cached per table)."""
        found = self._indexes.get(names)
        if found is None:
            known = [self._by_name[n] for n in names if n in self._by_name]
            found = np.array(sorted(known), dtype=np.uint16) if known else _NO_INDEXES
            self._indexes[names] = found
        return found

    def json_names(self) -> list[str]:
        """`'"name"'` for each index up to the highest known, `'null'` for a gap."""
        if self._json_version != self.version or not self._json:
            top = max(self._by_index, default=-1)
            self._json = [
                json.dumps(self._by_index[i]) if i in self._by_index else "null"
                for i in range(top + 1)
            ]
            self._json_version = self.version
        return self._json

    def column_batcher(self) -> BinaryBatcher:
        """`columns.column_batches` with this table's names: one object per table, so that
        every subscriber of a group shares its binary frames (`frames.PacketRun`)."""
        if self._batcher is None or self._batcher[0] != self.version:
            batcher = functools.partial(column_batches, sensor_names=self.names())
            self._batcher = (self.version, batcher)
        return self._batcher[1]

    def names(self) -> list[str | None]:
        """Each index's name up to the highest known (None for a gap): for `packet_columns`."""
        top = max(self._by_index, default=-1)
        return [self._by_index.get(i) for i in range(top + 1)]

    def states(self, allowed: tuple[str, ...] | None = None) -> list[SensorState]:
        """The table's sensors (in index order) that a user limited to `allowed` may see."""
        if self.table is None:
            return []
        found = sorted(self.table.sensors, key=lambda s: s.index)
        return found if allowed is None else [s for s in found if s.name in allowed]

    def sees_all(self, allowed: tuple[str, ...] | None) -> bool:
        """Whether a user limited to `allowed` may see views that mix every sensor's traffic
        (flows, hosts, top lists): a user limited to none, or on a lone sensor to this one."""
        if allowed is None:
            return True
        return not self.central and self.own is not None and self.own in allowed

    def scope(self, allowed: tuple[str, ...] | None) -> list[SensorState] | None:
        """None for a user who sees every sensor; for one limited to `allowed`, the sensors
        whose counters they get in place of the central's totals (none on a lone sensor that
        is not theirs)."""
        return None if self.sees_all(allowed) else self.states(allowed)


def sensor_infos(states: list[SensorState]) -> list[SensorInfo]:
    """The `sensors` of a central's `status` message."""
    return [
        SensorInfo(
            name=s.name,
            state=s.state,
            last_message_ms=s.last_message_ns // 1_000_000,
            packets=s.packets,
            lost=s.lost,
            bad_batches=s.bad_batches,
        )
        for s in states
    ]


def by_sensor(states: list[SensorState]) -> dict[str, dict[str, Any]]:
    """The `by_sensor` of a central's `stats` message: each sensor's last stats snapshot as it
    published it (an empty object before its first)."""
    return {s.name: dict(s.stats or {}) for s in states}


def fleet_key(states: list[SensorState]) -> tuple[object, ...]:
    """What makes a central's `status` worth sending again: a sensor seen or changing state."""
    return tuple((s.name, s.state) for s in states)


# -- a limited user's totals ---------------------------------------------------------------------

_SUMMED: Final = ("packets_total", "bytes_total", "kernel_drops", "if_drops", "ring_lost",
                  "decode_errors")  # fmt: skip
_RATES: Final = ("packets_per_second", "bytes_per_second")
_LABELLED_TOTALS: Final = ("protocols_total", "apps_total")
_LABELLED_RATES: Final = ("protocols", "apps")


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def narrow_stats(snapshot: StatsSnapshot, states: list[SensorState]) -> StatsSnapshot:
    """`snapshot` (the central's) as a user who sees only `states` gets it: each counter the sum
    of those sensors' last published stats (as they measured them), the per-second figures over
    the live ones only (a silent sensor's last rate is not traffic now), and no top lists
    (they mix every sensor). A value that is not a count is taken as 0."""
    sums = dict.fromkeys(_SUMMED + _RATES, 0)
    labelled: dict[str, dict[str, int]] = {k: {} for k in _LABELLED_TOTALS + _LABELLED_RATES}
    for state in states:
        stats = state.stats or {}
        live = state.state == "live"
        for key in _SUMMED + (_RATES if live else ()):
            sums[key] += _count(stats.get(key))
        for key in _LABELLED_TOTALS + (_LABELLED_RATES if live else ()):
            counts = stats.get(key)
            if isinstance(counts, dict):
                into = labelled[key]
                for label, value in counts.items():
                    if _count(value):
                        into[str(label)] = into.get(str(label), 0) + _count(value)
    return msgspec.structs.replace(
        snapshot, **sums, **labelled, top_complete=False, top_sources=[], top_destinations=[],
        top_ports=[],
    )  # fmt: skip


def narrow_status(status: CaptureStatus, states: list[SensorState]) -> CaptureStatus:
    """The central's capture status as a user who sees only `states` gets it: packets and bytes
    received from those sensors, their lost ids as `kernel_drops` (what the central's own
    status counts there), and its interface without the number of sensors it follows."""
    return msgspec.structs.replace(
        status,
        interface=status.interface.partition(" (")[0],  # "fleet central NAME (N sensors)"
        packets_captured=sum(s.packets for s in states),
        bytes_captured=sum(s.bytes for s in states),
        kernel_drops=sum(s.lost for s in states),
        if_drops=0,
        decode_errors=0,
        decode_errors_by_kind={},
    )
