"""Fixtures of the fleet's tests: real nats-server processes, killed at teardown whatever the
test did (tests/fleet/nats.py)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from leireye.fleet.lab import Lab
from leireye.fleet.model import FleetError
from tests.fleet.nats import NatsCluster, NatsServer, nats_server_binary, running, single
from tests.netns import require_root


def _require_nats_server() -> None:
    try:
        nats_server_binary()
    except FleetError as exc:
        pytest.skip(f"{exc} (scripts/setup.sh installs it)")


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """One node with JetStream on, ready; `stop()`/`start()` it for an outage."""
    _require_nats_server()
    server = single(tmp_path / "nats")
    with running(server):
        yield server


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three routed nodes with JetStream, ready (meta leader elected); `kill(i)`/`restart(i)`."""
    _require_nats_server()
    cluster = NatsCluster.create(tmp_path / "nats")
    with running(cluster):
        yield cluster


@pytest.fixture
def fleet_lab() -> Iterator[Lab]:
    """A `leireye.fleet.lab.Lab` (root only): `add_site()` for a namespace with its veth pair
    and servers, `start_traffic(site)`, `start_nats()`, `start_sensor(name, site)`,
    `start_central(names)`. Everything it started is stopped and every namespace deleted at
    teardown. Its directory is under /tmp, 0755: the sensors' web workers read their state."""
    require_root()
    directory = Path(tempfile.mkdtemp(prefix="leireye-lab-", dir="/tmp"))
    directory.chmod(0o755)
    try:
        with Lab(directory) as lab:
            yield lab
    finally:
        shutil.rmtree(directory)
