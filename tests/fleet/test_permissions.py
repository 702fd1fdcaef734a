"""The permissions docs/fleet-deploy.md gives hold on a real nats-server: a sensor writes its
own streams only and hears its own replies only; the central reads every stream and changes
none."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import StreamConfig
from nats.js.errors import APIError

from leireye.config import NatsConfig
from leireye.fleet.connect import connect_options
from leireye.fleet.model import FleetError, stream_name, subject
from leireye.fleet.natsserver import NatsServer
from tests.fleet.nats import nats_server_binary
from tests.fleet.natsauth import accounts_block, central_permissions, sensor_permissions
from tests.waiting import scaled

PASSWORDS = {"s1": "pw-s1-0123456789", "s2": "pw-s2-0123456789", "central": "pw-c-0123456789"}


@pytest.fixture
def secured(tmp_path: Path) -> NatsServer:
    try:
        nats_server_binary()
    except FleetError as exc:
        pytest.skip(str(exc))
    users = [
        {"user": s, "password": PASSWORDS[s], "permissions": sensor_permissions(s)}
        for s in ("s1", "s2")
    ]
    users.append(
        {"user": "central", "password": PASSWORDS["central"], "permissions": central_permissions()}
    )
    server = NatsServer("auth", tmp_path / "nats", extra_config=accounts_block(users))
    return server


async def _client(server: NatsServer, tmp: Path, user: str, name: str) -> tuple[Client, list[str]]:
    (tmp / f"{user}.pw").write_text(PASSWORDS[user])
    cfg = NatsConfig(servers=[server.url], user=user, password_file=f"{user}.pw")
    violations: list[str] = []

    async def on_error(exc: Exception) -> None:
        violations.append(str(exc))

    options = connect_options(cfg, tmp, name)
    assert options["inbox_prefix"] == f"_INBOX.{name}"
    return await nats.connect(**options, error_cb=on_error), violations


def test_sensor_and_central_permissions(secured: NatsServer, tmp_path: Path) -> None:
    async def body() -> None:
        s1, s1_errors = await _client(secured, tmp_path, "s1", "leireye-s1")
        central, central_errors = await _client(
            secured, tmp_path, "central", "leireye-central-main"
        )
        j1, jc = s1.jetstream(timeout=scaled(2.0)), central.jetstream(timeout=scaled(2.0))
        own = stream_name("s1", "packets")
        await j1.add_stream(StreamConfig(name=own, subjects=[subject("s1", "packets")]))
        for index in range(5):
            ack = await j1.publish(subject("s1", "packets"), b"p%d" % index)
            assert ack.stream == own
        assert (await j1.get_msg(own, 5)).data == b"p4"  # a publisher's resync reads back

        # not another sensor's stream nor subject
        with pytest.raises(nats.errors.TimeoutError):
            await j1.add_stream(
                StreamConfig(name=stream_name("s2", "packets"), subjects=["leireye.s2.packets"])
            )
        with pytest.raises(nats.errors.TimeoutError):
            await j1.delete_stream(own)
        await s1.publish(subject("s2", "packets"), b"forged")
        # not anyone else's replies
        await s1.subscribe("_INBOX.>")
        await s1.flush()

        # the central reads (a durable pull consumer, as its ingest) and changes nothing
        info = await jc.stream_info(own)
        assert info.state.messages == 5
        sub = await jc.pull_subscribe(subject("s1", "packets"), "leireye-central-main", stream=own)
        messages = await sub.fetch(5, timeout=scaled(5.0))
        assert [m.data for m in messages] == [b"p%d" % i for i in range(5)]
        for message in messages:
            await message.ack()
        with pytest.raises((nats.errors.TimeoutError, APIError)):
            await jc.delete_stream(own)
        with pytest.raises((nats.errors.TimeoutError, APIError)):
            await jc.purge_stream(own)
        await central.publish(subject("s1", "packets"), b"forged")
        await central.flush()
        assert (await jc.stream_info(own)).state.messages == 5

        denied = "\n".join(s1_errors).lower()
        assert 'publish to "$js.api.stream.create.leireye_s2_packets"' in denied
        assert 'publish to "$js.api.stream.delete.leireye_s1_packets"' in denied
        assert 'publish to "leireye.s2.packets"' in denied
        assert 'subscription to "_inbox.>"' in denied
        for _ in range(100):  # the server's -ERR comes after the flush's PONG at the latest
            if any("leireye.s1.packets" in e for e in central_errors):
                break
            await asyncio.sleep(0.01)
        denied = "\n".join(central_errors).lower()
        assert 'publish to "leireye.s1.packets"' in denied
        assert 'publish to "$js.api.stream.delete.leireye_s1_packets"' in denied
        await s1.close()
        await central.close()

    secured.start()
    try:
        asyncio.run(body())
    finally:
        secured.kill()
    assert "pw-" not in (secured.log_path.read_text())  # the server logs no password
