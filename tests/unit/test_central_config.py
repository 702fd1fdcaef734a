"""configs/central.yaml is a valid central config, and each command refuses the other's config."""

from __future__ import annotations

from pathlib import Path

import pytest

from leireye.cli import main
from leireye.config import Config, load_config
from leireye.supervisor import central_config

CENTRAL = Path(__file__).resolve().parents[2] / "configs" / "central.yaml"


def test_the_shipped_central_config() -> None:
    config = load_config(CENTRAL)
    assert config.central.enabled and not config.fleet.enabled
    assert config.central.sensors == [] and config.central.name == "central"
    assert config.web.port != Config().web.port
    assert config.state_dir != Config().state_dir
    run = central_config(config)
    assert (run.flows.enabled, run.store.enabled, run.capture.workers) == (False, False, 1)


@pytest.mark.parametrize(
    ("command", "text", "says"),
    [
        ("run", "central: {enabled: true}\n", "leireye central -c FILE"),
        ("central", "", "central.enabled is not true"),
        ("central", "central: {enabled: true}\nfleet: {enabled: true, sensor: s}\n", "publish"),
    ],
)
def test_each_command_refuses_the_other_ones_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, text: str, says: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"state_dir: {tmp_path}\n{text}")
    assert main([command, "-c", str(path)]) == 2
    assert says in capsys.readouterr().err
