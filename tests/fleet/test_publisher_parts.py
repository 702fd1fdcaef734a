"""The publisher's pure parts and its status: batches cut from ring reads with every id covered
(sent or lost), the status page shared with the web workers, and how the web tier shows it."""

from __future__ import annotations

import json
import os
import stat
import uuid
import zlib
from collections.abc import Iterator

import msgspec
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from leireye.config import config_errors, parse_config
from leireye.errors import ConfigError
from leireye.fleet.batching import Accumulator, recut
from leireye.fleet.model import (
    H_COUNT,
    H_ENCODING,
    H_LOST,
    H_RUN,
    MSG_ID,
    FleetError,
    decode_batch,
    encode_batch,
)
from leireye.fleet.status import PublisherStatus, StatusPage, public_server
from leireye.record import RECORD_DTYPE
from leireye.ring.ring import RingRead
from leireye.ring.shm import SHM_DIR
from leireye.ring.status import CaptureStatus
from leireye.web.statusview import status_key, status_message
from leireye.wire import encode


def read(ids: list[int], lost: int = 0, raw_bytes: int = 4) -> RingRead:
    records = np.zeros(len(ids), dtype=RECORD_DTYPE)
    records["seq"] = ids
    raw = np.full((len(ids), raw_bytes), 7, dtype=np.uint8)
    return RingRead(records, ids[0] if ids else 0, lost, raw)


def test_every_id_is_in_a_batch_or_counted_lost_in_the_next_one() -> None:
    acc = Accumulator("s1", run=77, batch_records=3, prev_last=0)
    acc.add(read([1, 2]), now=0.0)
    assert not acc.due(0.001, batch_s=0.005)
    assert acc.due(0.006, batch_s=0.005)
    acc.add(read([6, 7, 8, 9], lost=3), now=0.007)  # 3..5 overwritten before they were read
    assert acc.due(0.007, batch_s=1.0)
    batches = []
    while (batch := acc.take(3)) is not None:
        batches.append(batch)
    assert [(b.first_id, b.last_id, b.count, b.lost) for b in batches] == [
        (1, 6, 3, 3),
        (7, 9, 3, 0),
    ]
    assert sum(b.count + b.lost for b in batches) == 9
    first = decode_batch("s1", batches[0].headers, batches[0].body)
    assert first.records["seq"].tolist() == [1, 2, 6]
    assert first.raw is not None and first.raw.shape == (3, 4)
    assert batches[0].headers[MSG_ID] == "s1:77:1" and batches[0].headers[H_RUN] == "77"
    assert batches[0].headers[H_LOST] == "3" and first.header.run == 77


def test_a_batch_starts_after_where_the_last_run_stopped() -> None:
    acc = Accumulator("s1", run=5, batch_records=100, prev_last=500)
    acc.add(read([501, 502]), now=0.0)
    batch = acc.take(100)
    assert batch is not None and batch.lost == 0 and acc.count == 0
    assert acc.take(100) is None


def test_server_urls_lose_their_credentials() -> None:
    assert public_server("nats://bob:s3cret@nats.example:4222") == "nats://nats.example:4222"
    assert public_server("tls://[fd00::1]:4443") == "tls://[fd00::1]:4443"
    assert "s3cret" not in public_server("nats://tok:s3cret@h")


@pytest.fixture
def page() -> Iterator[StatusPage]:
    page = StatusPage.create(f"leireye-test-{uuid.uuid4().hex[:10]}-fleet")
    try:
        yield page
    finally:
        page.close()
        page.unlink()


def test_the_status_page_round_trips_and_is_closed_to_others(page: StatusPage) -> None:
    assert page.read() == PublisherStatus()
    mismatch = ["LEIREYE_s1_PACKETS: replicas is 3, config says 1"]
    status = PublisherStatus(
        sensor="s1", connected=True, published_records=10, lost=2, stream_mismatch=mismatch
    )
    page.write(status)
    back = StatusPage.attach(page.name)
    try:
        found = back.read()
    finally:
        back.close()
    assert found.updated_ns > 0
    assert found == msgspec.structs.replace(status, updated_ns=found.updated_ns)
    assert stat.S_IMODE(os.stat(SHM_DIR / page.name).st_mode) & 0o007 == 0


def test_a_huge_error_still_fits_the_page(page: StatusPage) -> None:
    page.write(PublisherStatus(last_error="x" * 10_000, stream_mismatch=["y" * 1000] * 20))
    found = page.read()
    assert len(found.last_error) == 500 and len(found.stream_mismatch) == 8


def test_the_websocket_status_carries_the_fleet_only_on_a_fleet_sensor() -> None:
    capture = CaptureStatus(interface="eth0")
    alone = json.loads(encode(status_message(capture)))
    assert "fleet" not in alone["data"]
    fleet = PublisherStatus(sensor="s1", connected=False, servers=["nats://h:4222"], behind=9,
                            last_error="ConnectionRefusedError: refused")  # fmt: skip
    sent = json.loads(encode(status_message(capture, fleet)))
    assert sent["data"]["fleet"] == {
        "sensor": "s1", "connected": False, "servers": ["nats://h:4222"],
        "published_records": 0, "published_batches": 0, "published_bytes": 0, "lost": 0,
        "behind": 9, "last_error": "ConnectionRefusedError: refused", "stream_mismatch": [],
    }  # fmt: skip
    back = PublisherStatus(sensor="s1", connected=True)
    assert status_key(capture, fleet) != status_key(capture, back)  # reconnecting is news
    more = PublisherStatus(sensor="s1", connected=True, published_records=5)
    assert status_key(capture, back) == status_key(capture, more)  # counters alone are not


def test_a_fleet_sensor_needs_a_name() -> None:
    assert config_errors({"fleet": {"enabled": True}}) == [
        "fleet.enabled needs fleet.sensor, this sensor's name - at `$.fleet`"
    ]
    with pytest.raises(ConfigError, match=r"fleet\.enabled needs fleet\.sensor"):
        parse_config({"fleet": {"enabled": True}})
    assert config_errors({"fleet": {"enabled": True, "sensor": "edge-1"}}) == []
    assert config_errors({"fleet": {"sensor": "bad name"}}) != []


@given(
    st.lists(st.tuples(st.integers(0, 40), st.integers(0, 30)), max_size=30),
    st.integers(1, 50),
    st.integers(0, 1000),
    st.sampled_from([None, 300, 2000, 6000]),
)
def test_batches_account_for_every_id_exactly(
    reads: list[tuple[int, int]], batch_records: int, start: int, max_bytes: int | None
) -> None:
    """Any sequence of ring reads (each: `lost` ids overwritten, then `n` ids read), cut into
    batches of any size and any byte cap: the batches hold the ids read, in order, and their
    `lost` add up to the ids skipped, so `sum(count) + sum(lost)` is the last id sent minus
    where it started; no body is above the cap."""
    acc = Accumulator("s", 1, batch_records, prev_last=start, max_bytes=max_bytes)
    next_id, read_ids, batches = start + 1, [], []
    for lost, n in reads:
        next_id += lost
        ids = list(range(next_id, next_id + n))
        next_id += n
        read_ids += ids
        if ids:
            acc.add(read(ids, lost), now=0.0)
        while acc.count >= batch_records:
            batch = acc.take(batch_records)
            assert batch is not None
            batches.append(batch)
    while (batch := acc.take(batch_records)) is not None:
        batches.append(batch)
    sent = [
        i for b in batches for i in decode_batch("s", b.headers, b.body).records["seq"].tolist()
    ]
    assert sent == read_ids
    if batches:
        assert sum(b.count + b.lost for b in batches) == batches[-1].last_id - start
        assert all(b.count <= batch_records and b.lost >= 0 for b in batches)
        assert max_bytes is None or all(len(b.body) <= max_bytes for b in batches)
        assert len({b.headers[MSG_ID] for b in batches}) == len(batches)


def test_a_batch_above_max_payload_is_cut_into_messages_that_fit() -> None:
    """Incompressible raw bytes, 1600 a record: 4096 records would be a 7.6 MB body. Each
    message fits the cap, each has its own Nats-Msg-Id from its first id, the ring's loss is
    in the first one; compressible records then fill a message by bytes, not by the worst
    case of (256 + 1600) bytes a record, from the batch after the change."""
    cap = 65536 - 4096
    acc = Accumulator("s1", run=9, batch_records=4096, prev_last=0, max_bytes=cap)
    noise = np.random.default_rng(1).integers(0, 256, (4096, 1600), dtype=np.uint8)
    ring_read = read(list(range(11, 4107)), lost=10, raw_bytes=1600)
    ring_read.raw[:] = noise  # type: ignore[index]
    acc.add(ring_read, now=0.0)
    cut = []
    while (batch := acc.take(4096)) is not None:
        cut.append(batch)
    assert len(cut) > 1 and all(len(b.body) <= cap for b in cut)
    assert [b.headers[MSG_ID] for b in cut] == [f"s1:9:{b.first_id}" for b in cut]
    assert [b.lost for b in cut] == [10] + [0] * (len(cut) - 1)
    sent = [i for b in cut for i in decode_batch("s1", b.headers, b.body).records["seq"]]
    assert sent == list(range(11, 4107))
    assert acc.cuts <= len(cut) + 1  # guessed from the last batch: rarely encoded twice
    acc.add(read(list(range(4107, 12299)), raw_bytes=1600), now=1.0)  # zeros: they compress
    guessed = acc.take(4096)  # sized by the noise before: one short batch
    full = acc.take(4096)
    assert guessed is not None and full is not None and len(full.body) <= cap
    assert full.count == 4096 and full.first_id == guessed.last_id + 1


def test_a_batch_in_flight_is_recut_for_a_server_that_takes_less() -> None:
    """A failover to a server with a smaller max_payload: the batch encoded for the old one is
    cut again, the first piece keeping its Nats-Msg-Id and its `lost`, the ids in order."""
    acc = Accumulator("s1", run=3, batch_records=600, prev_last=100)
    ring_read = read(list(range(105, 705)), lost=4, raw_bytes=1600)
    ring_read.raw[:] = np.random.default_rng(2).integers(0, 256, (600, 1600), dtype=np.uint8)  # type: ignore[index]
    acc.add(ring_read, now=0.0)
    batch = acc.take(600)
    assert batch is not None and len(batch.body) > 100_000
    assert recut("s1", 3, batch, len(batch.body)) == [batch]
    pieces = recut("s1", 3, batch, 100_000)
    assert len(pieces) > 1 and all(len(p.body) <= 100_000 for p in pieces)
    assert pieces[0].headers[MSG_ID] == batch.headers[MSG_ID] == "s1:3:105"
    assert [p.lost for p in pieces] == [4] + [0] * (len(pieces) - 1)
    ids = [i for p in pieces for i in decode_batch("s1", p.headers, p.body).records["seq"]]
    assert ids == list(range(105, 705)) and pieces[-1].last_id == batch.last_id


def test_a_zstd_body_that_does_not_inflate_to_its_size_is_refused_and_zlib_is_read() -> None:
    records = read(list(range(1, 101)), raw_bytes=64).records
    raw = np.arange(100 * 64, dtype=np.uint8).reshape(100, 64)
    body, headers = encode_batch("s1", records, raw, lost=0)
    assert headers[H_ENCODING] == "zstd" and len(body) < records.nbytes
    assert decode_batch("s1", headers, body).records["seq"].tolist() == list(range(1, 101))
    for bad in (body[:-3], b"garbage" * 10, body + body):
        with pytest.raises(FleetError, match="does not inflate"):
            decode_batch("s1", headers, bad)
    too_few = {**headers, H_COUNT: "99"}  # inflates to more than its header says
    with pytest.raises(FleetError, match="does not inflate"):
        decode_batch("s1", too_few, body)
    plain = records.tobytes() + raw.tobytes()
    old = decode_batch("s1", {**headers, H_ENCODING: "zlib"}, zlib.compress(plain, 1))
    assert old.raw is not None and old.raw.tobytes() == raw.tobytes()
