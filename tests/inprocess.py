"""A sensor without capture, root, processes or network: the web tier in-process, for unit tests.

`InProcessSensor` makes, in shared-memory segments of its own, what the supervisor makes for a
run (ring, capture status, stats series, connection registry), and in a temporary `state_dir`
the JWT secret, a users file (`admin` with a random password, `ana` ANALYST and `vic` VIEWER
with `USER_PASSWORD`) and a real control server on its Unix socket, answering with the
supervisor's own handlers. The test plays the other processes with their own code: it writes the
ring with `RingWriter` rows that the real decoder made from tests/data/*.pcap, the status block
as a capture process does, and the stats series the way the stats process does
(`StatsAccumulator` -> `publish`). The web worker's side is built as `run_web_worker` builds it:
`Hub.attach`, `ApiContext.for_worker`, `build_app`; `http()` and `websocket()` call the app
through `tests.asgi`.

Capture requests on the control channel go to a `Supervisor` that is never run: it refuses a
stop (nothing captures) and tries a start's settings (`open_check`) before it would start a
capture process, so the refusals are real; an accepted start would wait for its main loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import dpkt
import numpy as np

from leireye.accounts.tokens import issue_token, load_or_create_secret
from leireye.accounts.useredit import add_user, edit_users_file
from leireye.accounts.users import User, ensure_users_file, load_users
from leireye.accounts.userview import USERS_VIEW_FILE, UsersViewWriter
from leireye.config import Config, parse_config
from leireye.control.handlers import ControlHandlers
from leireye.control.server import ControlServer, socket_path
from leireye.decode.decode import decode_batch
from leireye.flows.view import FlowView
from leireye.ring import Ring, RingLayout, RingWriter
from leireye.ring.frames import FrameAppender, FrameReader, FrameSegment
from leireye.ring.ids import IdAllocator
from leireye.ring.segments import SegmentNames, close_and_unlink
from leireye.ring.shards import ShardSet, ShardWriter
from leireye.ring.status import CaptureState, CaptureStatus, StatusBlock
from leireye.stats.accumulator import StatsAccumulator
from leireye.stats.series import StatsSeries
from leireye.store.writer import StoreFiles
from leireye.supervisor import Supervisor
from leireye.web.api.context import ApiContext
from leireye.web.app import build_app
from leireye.web.hub import Hub
from leireye.web.registry import ConnectionRegistry
from tests.asgi import Reply, WebSocket, request

DATA = Path(__file__).resolve().parent / "data"
REPLAY: Final = DATA / "mixed.pcap"
ROLES = {"admin": "ADMIN", "ana": "ANALYST", "vic": "VIEWER"}
USER_PASSWORD = "correct horse battery staple"  # ana and vic (admin's is random)


@dataclass(frozen=True)
class Frames:
    """The frames of a pcap file, as a capture would hand them to the decoder."""

    linktype: int
    ts_ns: list[int]
    frames: list[bytes]

    def decode(self) -> np.ndarray:
        wire = [len(f) for f in self.frames]
        return decode_batch(self.frames, self.ts_ns, wire, self.linktype).records


def read_pcap(name: str) -> Frames:
    with (DATA / name).open("rb") as f:
        reader = dpkt.pcap.Reader(f)
        packets = [(round(ts * 1e6) * 1000, bytes(buf)) for ts, buf in reader]
        linktype = int(reader.datalink())
    return Frames(linktype, [ts for ts, _ in packets], [frame for _, frame in packets])


def sensor_config(state_dir: Path, **sections: dict[str, Any]) -> Config:
    """A run's configuration for tests: nobody to switch to, a pcap replay as the source (so
    a capture request never opens an interface), and `sections` on top."""
    data: dict[str, Any] = {
        "state_dir": str(state_dir),
        "capture": {"pcap": str(REPLAY), "user": None},
        "web": {"user": None, "workers": 1},
    }
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    return parse_config(data)


class InProcessSensor:
    def __init__(
        self,
        state_dir: Path,
        *,
        capacity: int = 1024,
        raw_bytes: int = 256,
        base_id: int = 0,
        shards: int = 1,
        **config: Any,
    ) -> None:
        """`base_id`: the ring's (a central's ring continuing its previous run's ids)."""
        self.config = sensor_config(state_dir, **config)
        self.base = f"leireye-test-{uuid.uuid4().hex[:12]}"
        self.names = SegmentNames.for_run(self.base, shards)
        self._stack = contextlib.ExitStack()
        self._frame_segments: dict[int, FrameSegment] = {}
        try:
            self._make_segments(capacity, raw_bytes, shards, base_id)
            self._make_accounts()
            self._start_control()
            self.hub = Hub.attach(self.config, self.names.as_dict(), 0)
            self._stack.callback(self._close_hub)
        except BaseException:
            self._stack.close()
            raise
        self.app = build_app(ApiContext.for_worker(self.config, self.hub))
        self.frames: dict[int, bytes] = {}  # id -> the frame written under it
        self._records: list[np.ndarray] = []

    # -- what the supervisor makes ------------------------------------------------------------

    def _make_segments(self, capacity: int, raw_bytes: int, shards: int, base_id: int) -> None:
        """With `shards` > 1, one ring and status block per capture shard and the id allocator
        (`shard_writers`, ids run-wide); `ring`/`writer`/`status` are shard 0's."""
        names, stack = self.names, self._stack
        rings = []
        for k, name in enumerate(names.rings()):
            layout = RingLayout(capacity, raw_bytes, k, shards)
            rings.append(Ring.create(name, layout, base_id=base_id))
            stack.callback(close_and_unlink, rings[-1])
        self.ring = rings[0]
        self.writer = RingWriter(self.ring)
        self.shard_writers: list[ShardWriter] = []
        if shards > 1:
            stack.callback(close_and_unlink, IdAllocator.create(names.ids, shards))
            ids = IdAllocator.attach(names.ids, writable=True)
            stack.callback(ids.close)
            peers = ShardSet(rings, ids)
            self.shard_writers = [ShardWriter(r, k, ids, peers) for k, r in enumerate(rings)]
        for name in names.statuses():
            block = StatusBlock.create(name)
            stack.callback(close_and_unlink, block)
            if name == names.status:
                self.status = block
        self.stats = StatsSeries.create(names.stats, self.config.stats)
        stack.callback(close_and_unlink, self.stats)
        registry = ConnectionRegistry.create(names.conns, 1)
        stack.callback(close_and_unlink, registry)
        self.flow_view: FlowView | None = None
        if self.config.flows.enabled:  # written by the test itself (`add_events`)
            self.flow_view = FlowView.create(names.flows, self.config.flows, owner=None)
            stack.callback(close_and_unlink, self.flow_view)

    def _make_accounts(self) -> None:
        users_file = self.config.state_path(self.config.auth.users_file)
        password = ensure_users_file(users_file)
        assert password is not None
        self.admin_password = password
        for name in ("ana", "vic"):
            edit_users_file(
                users_file, lambda users, n=name: add_user(users, n, ROLES[n], USER_PASSWORD)
            )
        self.secret = load_or_create_secret(self.config)
        self.users_view = UsersViewWriter(
            users_file, self.config.state_path(USERS_VIEW_FILE), group=None
        )
        self.users_view.sync()

    def _start_control(self) -> None:
        supervisor = Supervisor(self.config, base_name=self.base)
        supervisor.statuses = [self.status]  # as `create_segments` would have made them
        supervisor.status = self.status
        self._stack.callback(_close_wake_pipe, supervisor)
        handlers = ControlHandlers.for_config(
            self.config, self.secret, supervisor, self.users_view.sync
        )
        # This process plays the web worker: the only caller the channel admits.
        control = ControlServer(socket_path(self.config.state_dir), handlers, lambda: {os.getpid()})
        control.start()
        self._stack.callback(control.close)

    def _close_hub(self) -> None:
        hub = self.hub
        for conn in list(hub.connections):
            hub.close(conn)
        hub.ring.close()
        hub.status_block.close()
        hub.stats_series.close()
        hub.registry.close()

    def close(self) -> None:
        self._stack.close()

    # -- what the capture and stats processes do ----------------------------------------------

    def write(self, frames: Frames, count: int | None = None, shard: int = 0) -> list[int]:
        """Decode `frames` (the first `count`) and write them to the ring (of capture shard
        `shard`); their ids."""
        chosen = frames.frames[:count]
        part = Frames(frames.linktype, frames.ts_ns[: len(chosen)], chosen)
        records = part.decode()
        if self.shard_writers:
            first = self.shard_writers[shard].write(records, chosen)
        else:
            first = self.writer.write(records, chosen)
        ids = list(range(first, first + len(chosen)))
        records["seq"] = ids
        self._records.append(records)
        self.frames.update(zip(ids, chosen, strict=True))
        return ids

    def store(
        self,
        linktype: int,
        first_id: int,
        ts_ns: list[int],
        frames: list[bytes],
        shard: int = 0,
    ) -> None:
        """Hand `frames` (ids from `first_id`) over and write them into the store (run 1)."""
        self.hand_off(linktype, first_id, ts_ns, frames, shard)
        self.write_stored(shard)

    def hand_off(
        self,
        linktype: int,
        first_id: int,
        ts_ns: list[int],
        frames: list[bytes],
        shard: int = 0,
    ) -> None:
        """Append `frames` (ids from `first_id`) to capture shard `shard`'s frame segment, as
        the capture does after its ring write."""
        FrameAppender(self.frame_segment(shard), linktype, 262144).append(
            first_id, ts_ns, [len(f) for f in frames], frames
        )

    def write_stored(self, shard: int = 0, most: int = 1 << 20) -> None:
        """Write (at most `most` of) the frames handed over to shard `shard` whole into the
        packet store's directory, as the store writer does (`StoreFiles`, then `disk_seq`), as
        run 1."""
        segment = self.frame_segment(shard)
        self.config.store_dir.mkdir(parents=True, exist_ok=True)
        files = StoreFiles(
            self.config.store_dir, run=1, file_bytes=1 << 30, file_s=3600.0,
            max_bytes=1 << 40, max_age_s=1e9,
        )  # fmt: skip
        reader = FrameReader(segment, segment.disk_seq + 1)
        files.write(shard, reader.read(most), *segment.link)
        files.close()
        segment.disk_seq = reader.next_seq - 1

    def frame_segment(self, shard: int) -> FrameSegment:
        """Shard `shard`'s frame segment (all of them are made on first use, as the supervisor
        makes them with the store on)."""
        if not self._frame_segments:
            for k, name in enumerate(self.names.frames()):
                segment = FrameSegment.create(name, 4 << 20, k)
                self._stack.callback(close_and_unlink, segment)
                self._frame_segments[k] = segment
        return self._frame_segments[shard]

    def record(self, packet_id: int) -> np.void:
        """The record the decoder made for the frame written under `packet_id`."""
        records = np.concatenate(self._records)
        found: np.void = records[records["seq"] == packet_id][0]
        return found

    def capturing(self, frames: Frames, packets: int) -> None:
        """The status block as a capture process replaying `frames` writes it."""
        now = time.time_ns()
        self.status.write(
            CaptureStatus(
                state=CaptureState.CAPTURING, capturing=True, interface=str(REPLAY),
                linktype=frames.linktype, snaplen=262144, pid=os.getpid(), started_at_ns=now,
                packets_captured=packets,
            )
        )  # fmt: skip

    def publish_stats(self, ago_s: int = 2) -> None:
        """Count every record in the ring as having arrived `ago_s` seconds ago, and publish
        the frame and history as the stats process does (that second is then a closed one)."""
        now = time.time_ns()
        acc = StatsAccumulator(self.config.stats, now - (ago_s + 1) * 10**9)
        batch = self.ring.copy_range(self.ring.oldest_id, self.ring.write_seq)
        acc.ingest(batch.records, now - ago_s * 10**9)
        self.stats.publish(acc.frame(now), acc.history, acc.take_dirty())

    # -- accounts -----------------------------------------------------------------------------

    def user(self, name: str) -> User:
        users = load_users(self.config.state_path(self.config.auth.users_file))
        return next(u for u in users if u.username == name)

    def token(self, name: str, ttl_s: int = 600) -> str:
        return issue_token(self.secret, self.user(name), ttl_s, time.time())

    # -- clients ------------------------------------------------------------------------------

    def http(
        self,
        method: str,
        target: str,
        *,
        token: str | None = None,
        body: Any = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> Reply:
        """One request to the app (on an event loop of its own)."""
        sent = headers
        if token is not None:
            sent += (("authorization", f"Bearer {token}"),)
        data = b""
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            if not any(k.lower() == "content-type" for k, _ in headers):
                sent += (("content-type", "application/json"),)
        return asyncio.run(request(self.app, method, target, headers=sent, body=data))

    def websocket(self, target: str, headers: tuple[tuple[str, str], ...] = ()) -> WebSocket:
        """A WebSocket session to open with `connect()` inside the test's event loop."""
        return WebSocket(self.app, target, headers)


def _close_wake_pipe(supervisor: Supervisor) -> None:
    """A supervisor that never ran still holds the pipe its main loop would close."""
    os.close(supervisor._wake_r)
    os.close(supervisor._wake_w)
