"""Fixtures shared by the test packages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sensor import Sensor, SensorFactory


@pytest.fixture
def sensor_factory(tmp_path: Path) -> Iterator[SensorFactory]:
    started: list[Sensor] = []

    def start(*args: str, config: str = "", users: str = "") -> Sensor:
        sensor = Sensor(tmp_path, *args, config=config, users=users)
        started.append(sensor)
        return sensor

    yield start
    for sensor in started:
        sensor.kill()
