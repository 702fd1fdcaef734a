"""A sensor's streams on a real nats-server: created with the configured retention, checked when
they exist, and a stream someone changed used as it is with each difference said."""

from __future__ import annotations

import asyncio
import logging

import nats
import pytest
from nats.js.api import StorageType, StreamConfig

from leireye.config import FleetStreams
from leireye.fleet.model import KINDS, stream_name, subject
from leireye.fleet.streams import DUPLICATE_WINDOW_S, ensure_streams
from tests.fleet.natsutil_pub import NatsServer, nats_server

__all__ = ["nats_server"]

RETENTION = FleetStreams(max_age_h=2.0, max_gb=0.5, replicas=1)


def test_streams_are_created_with_the_configured_retention(nats_server: NatsServer) -> None:
    async def run() -> None:
        nc = await nats.connect(nats_server.url)
        try:
            js = nc.jetstream()
            assert await ensure_streams(js, "branch-1", RETENTION) == []
            for kind in KINDS:
                info = await js.stream_info(stream_name("branch-1", kind))
                config = info.config
                assert config.subjects == [subject("branch-1", kind)]
                assert config.max_age == pytest.approx(7200.0)
                assert config.max_bytes == 500_000_000
                assert config.num_replicas == 1
                assert config.storage == StorageType.FILE
                assert config.duplicate_window == pytest.approx(DUPLICATE_WINDOW_S)
            # Asked again (a restart): the same streams, nothing to report.
            assert await ensure_streams(js, "branch-1", RETENTION) == []
        finally:
            await nc.close()

    asyncio.run(run())


def test_a_stream_with_other_settings_is_used_as_it_is_and_reported(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    name = stream_name("branch-2", "packets")

    async def run() -> list[str]:
        nc = await nats.connect(nats_server.url)
        try:
            js = nc.jetstream()
            await js.add_stream(
                StreamConfig(
                    name=name,
                    subjects=[subject("branch-2", "packets")],
                    max_age=3600.0,
                    max_bytes=123_000_000,
                    storage=StorageType.MEMORY,
                    duplicate_window=30.0,
                )
            )
            found = await ensure_streams(js, "branch-2", RETENTION)
            info = await js.stream_info(name)
            assert info.config.max_bytes == 123_000_000  # not changed by the sensor
            assert info.config.storage == StorageType.MEMORY
            return found
        finally:
            await nc.close()

    with caplog.at_level(logging.WARNING, logger="leireye.fleet"):
        found = asyncio.run(run())
    assert found == [
        f"{name}: max_age_s is 3600.0, config says 7200.0",
        f"{name}: max_bytes is 123000000, config says 500000000",
        f"{name}: storage is memory, config says file",
        f"{name}: duplicate_window_s is 30.0, config says 120.0",
    ]
    assert all(line in caplog.text for line in found)
