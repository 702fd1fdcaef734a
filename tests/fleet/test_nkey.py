"""A sensor that authenticates to NATS with an nkey seed (`fleet.nats.nkey_seed`), against a
real nats-server that knows the user by its public key only (docs/fleet-deploy.md): the key
pair is made here with the `nkeys` package, the real sensor's publisher connects with the seed
file and publishes; a seed the server does not know is refused, and the sensor says so in its
log and its publisher's status; a seed file others may read is warned about."""

from __future__ import annotations

import os
import pwd
import tempfile
from collections.abc import Iterator
from pathlib import Path

import nkeys
import pytest

from leireye.errors import RingError
from leireye.fleet.model import FleetError
from leireye.fleet.natsserver import NatsServer
from leireye.fleet.status import PublisherStatus, StatusPage
from tests.fleet.nats import nats_server_binary
from tests.fleet.natsauth import accounts_block, sensor_permissions
from tests.sensor import Sensor, free_udp_port, send_udp
from tests.waiting import wait_for

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="a sensor captures as root"),
]

SENSOR = "nk-1"
CAPTURE_USER = "leireye"  # capture.user: the publisher runs as it and reads the seed


def user_seed() -> bytes:
    """A new user key pair's seed (`SU...`), as `nk -gen user` makes it."""
    return bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))


def public_key(seed: bytes) -> str:
    return str(nkeys.from_seed(bytearray(seed)).public_key.decode())


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[NatsServer, bytes]]:
    """A nats-server whose one user is sensor SENSOR's nkey; and that user's seed."""
    try:
        nats_server_binary()
    except FleetError as exc:
        pytest.skip(str(exc))
    seed = user_seed()
    users = [{"nkey": public_key(seed), "permissions": sensor_permissions(SENSOR)}]
    nats = NatsServer("nkey", tmp_path / "nats", extra_config=accounts_block(users))
    nats.start()
    try:
        yield nats, seed
    finally:
        nats.kill()


def sensor_with_seed(tmp_path: Path, url: str, seed: bytes, mode: int, port: int) -> Sensor:
    """A real sensor on `lo` whose publisher reads its seed from `<state_dir>/nats/seed.nk`
    (owned by the capture user, `mode`)."""
    state_dir = Path(tempfile.mkdtemp(prefix="leireye-test-", dir="/tmp"))
    state_dir.chmod(0o755)
    (state_dir / "nats").mkdir(mode=0o755)
    seed_file = state_dir / "nats" / "seed.nk"
    seed_file.write_bytes(seed + b"\n")
    seed_file.chmod(mode)
    user = pwd.getpwnam(CAPTURE_USER)
    os.chown(seed_file, user.pw_uid, user.pw_gid)
    return Sensor(
        tmp_path, "--interface", "lo", "--bpf", f"udp and dst port {port}",
        config=(
            "flows: {enabled: false}\nstore: {enabled: false}\n"
            f"fleet: {{enabled: true, sensor: {SENSOR}, batch_ms: 50, streams: {{max_gb: 0.1}},"
            f" nats: {{servers: ['{url}'], nkey_seed: nats/seed.nk}}}}\n"
        ),
        state_dir=state_dir,
    )  # fmt: skip


def publisher(sensor: Sensor) -> StatusPage:
    def attach() -> StatusPage | None:
        if sensor.proc.poll() is not None:
            raise AssertionError(f"sensor exited early:\n{sensor.log}")
        try:
            return StatusPage.attach(f"{sensor.name}-fleet")
        except RingError:
            return None

    return wait_for(attach, 20, "the publisher's status page")


def test_a_sensor_publishes_with_its_nkey_seed(
    tmp_path: Path, server: tuple[NatsServer, bytes]
) -> None:
    nats, seed = server
    port = free_udp_port()
    sensor = sensor_with_seed(tmp_path, nats.url, seed, 0o600, port)
    try:
        with sensor.explained():
            sensor.wait_capturing(sensor.status())
            page = publisher(sensor)
            wait_for(lambda: page.read().connected, 20, "the publisher connected with its seed")
            send_udp(port, 5)

            def published() -> PublisherStatus | None:
                status = page.read()
                return status if status.published_records >= 5 else None

            status = wait_for(published, 30, "the packets published")
            assert status.last_error == "" and status.stream_mismatch == []
            assert "accessible by group or others" not in sensor.log
            assert seed.decode() not in sensor.log
    finally:
        sensor.kill()
    assert seed.decode() not in nats.log_path.read_text()


def test_a_seed_the_server_does_not_know_is_refused_clearly(
    tmp_path: Path, server: tuple[NatsServer, bytes]
) -> None:
    nats, _ = server
    wrong = user_seed()
    sensor = sensor_with_seed(tmp_path, nats.url, wrong, 0o640, free_udp_port())
    try:
        with sensor.explained():
            sensor.wait_capturing(sensor.status())
            page = publisher(sensor)

            def refused() -> PublisherStatus | None:
                status = page.read()
                return status if "authorization violation" in status.last_error.lower() else None

            status = wait_for(refused, 30, "the publisher's status to say it was refused")
            assert not status.connected and status.published_records == 0
            wait_for(lambda: "fleet: NATS:" in sensor.log, 10, "the refusal in the log")
            said = [line.partition("fleet: NATS:")[2] for line in sensor.log.splitlines()
                    if "fleet: NATS:" in line]  # fmt: skip
            assert "authorization violation" in said[0].lower()
            assert len(said) == len(set(said))  # each error once, not at every reconnect
            # the seed file is group-readable here: the sensor warns, naming the file
            assert "nats.nkey_seed" in sensor.log and "mode 0640" in sensor.log
            assert wrong.decode() not in sensor.log
            assert sensor.proc.poll() is None  # the capture goes on: NATS may let it in later
    finally:
        sensor.kill()
