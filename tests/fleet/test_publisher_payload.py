"""The publisher against a nats-server whose max_payload is small (64 KiB) and a ring whose
records carry 1600 raw bytes: batches are cut to fit by their encoded size, so every captured
packet arrives and the server refuses no message (it would close the connection for one)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet.nats import NatsServer, running, single
from tests.fleet.test_publisher import (
    PORT,
    SENSOR,
    ids_of,
    page_of,
    settled,
    stored,
)
from tests.netns import VethPair, inject_frames, skip_unless_root, udp_frame, veth_pair
from tests.sensor import Sensor

pytestmark = [pytest.mark.root, skip_unless_root]
MAX_PAYLOAD = 65536
RAW_BYTES = 1600
HEADROOM = 4096  # publisher.HEADROOM: room kept for the headers


@pytest.fixture
def small_nats(tmp_path: Path) -> Iterator[NatsServer]:
    server = single(tmp_path / "nats")
    server.extra_config = f"max_payload: {MAX_PAYLOAD}\n"
    with running(server):
        yield server


@pytest.fixture
def pair() -> Iterator[VethPair]:
    with veth_pair(ipv6=False) as pair:
        yield pair


def test_batches_fit_a_small_max_payload_and_every_packet_arrives(
    tmp_path: Path, pair: VethPair, small_nats: NatsServer
) -> None:
    sensor = Sensor(
        tmp_path, "--interface", pair.host_if, "--bpf", f"udp and dst port {PORT}",
        config=(
            f"ring: {{capacity: 16384, raw_bytes: {RAW_BYTES}}}\n"
            "flows: {enabled: false}\n"
            f"fleet: {{enabled: true, sensor: {SENSOR}, batch_records: 4096, batch_ms: 300,"
            f" streams: {{max_gb: 0.1}}, nats: {{servers: ['{small_nats.url}']}}}}\n"
        ),
    )  # fmt: skip
    try:
        status = sensor.status()
        sensor.wait_capturing(status)
        page = page_of(sensor)
        # incompressible payloads (~1.5 KB a record compressed: a few dozen to a message),
        # then small ones that compress well (hundreds to a message)
        noise = [os.urandom(1400) for _ in range(1500)]
        sent = [udp_frame(pair, 20000, PORT, p) for p in noise]
        sent += [udp_frame(pair, 20001, PORT, i.to_bytes(4, "big")) for i in range(3000)]
        inject_frames(pair.ns_if, sent, ns=pair.ns)
        with sensor.explained():
            final = settled(page, len(sent), "every packet published")
        assert status.read().packets_captured == len(sent)
        assert (final.published_records, final.lost, final.retries) == (len(sent), 0, 0)
        assert final.connected and final.last_error == ""
        batches = stored(small_nats)
        assert ids_of(batches) == list(range(1, len(sent) + 1))
        raw = [bytes(row) for b in batches if b.raw is not None for row in b.raw]
        assert raw == [frame[:RAW_BYTES].ljust(RAW_BYTES, b"\0") for frame in sent]
        # cut by encoded bytes, not by the worst case of 256 + 1600 bytes a record
        worst_case = (MAX_PAYLOAD - HEADROOM) // (256 + RAW_BYTES)
        assert max(b.header.count for b in batches) > 2 * worst_case
        assert final.published_bytes <= final.published_batches * (MAX_PAYLOAD - HEADROOM)
        log = small_nats.log_path.read_text(errors="replace")
        assert "Maximum Payload" not in log and "payload" not in log.lower()
        sensor.stop()
    finally:
        sensor.kill()
