"""docs/fleet-deploy.md shows the permissions tests/fleet/natsauth.py builds (and
test_permissions.py proves on a real server)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.fleet.natsauth import central_permissions, sensor_permissions

DOC = Path(__file__).resolve().parents[2] / "docs" / "fleet-deploy.md"
BLOCK = re.compile(r"<!-- permissions: (sensor|central) (\S+) -->\n```json\n(.*?)\n```", re.S)


def test_the_doc_shows_the_permissions_the_tests_use() -> None:
    found = {(kind, name): json.loads(body) for kind, name, body in BLOCK.findall(DOC.read_text())}
    assert found == {
        ("sensor", "s1"): sensor_permissions("s1"),
        ("central", "main"): central_permissions("main"),
    }
