"""NATS permissions of a fleet: what docs/fleet-deploy.md shows, as the tests build it.

One account holds the fleet's streams. A sensor's user may publish on its own subjects, create,
update, look at and read back its own four streams, and hear its own replies; the central's
user may use the JetStream API (consumers, stream info, message get) but change no stream, and
publish on no sensor subject. Each client's replies come under `_INBOX.<its client name>`
(leireye.fleet.connect.inbox_prefix), so no client can listen to another's.
"""

from __future__ import annotations

import json
from typing import Any

from leireye.fleet.model import KINDS, stream_name

OWN_STREAM_OPS = ("CREATE", "UPDATE", "INFO", "MSG.GET")  # MSG.GET: a resync reads its last
OWN_STREAM_OPS = ("CREATE", "UPDATE", "INFO", "MSG.GET")  # MSG.GET: a resync reads its last
STREAM_MUTATIONS = ("CREATE", "UPDATE", "DELETE", "PURGE", "MSG.DELETE", "RESTORE", "SNAPSHOT")


def sensor_permissions(sensor: str) -> dict[str, Any]:
    """The permissions of sensor `sensor`'s user (its client name is `leireye-<sensor>`)."""
    streams = [stream_name(sensor, kind) for kind in KINDS]
    return {
        "publish": {
            "allow": [
                f"leireye.{sensor}.>",
                "$JS.API.INFO",
                *(f"$JS.API.STREAM.{op}.{name}" for op in OWN_STREAM_OPS for name in streams),
            ]
        },
        "subscribe": {"allow": [f"_INBOX.leireye-{sensor}.>"]},
    }


def central_permissions(central: str = "main") -> dict[str, Any]:
    """The permissions of the central's user (client name `leireye-central-<central>`)."""
    return {
        "publish": {
            "allow": ["$JS.API.>", "$JS.ACK.>"],
            "deny": [f"$JS.API.STREAM.{op}.>" for op in STREAM_MUTATIONS],
        },
        "subscribe": {"allow": [f"_INBOX.leireye-central-{central}.>"]},
    }


def accounts_block(users: list[dict[str, Any]], account: str = "LEIREYE") -> str:
    """The `accounts { ... }` block of a nats-server config with `users` in one account with
    JetStream (nats-server's config format accepts JSON values)."""
    listed = json.dumps(users, indent=2)
    return f"accounts {{\n  {account}: {{\n    jetstream: enabled\n    users: {listed}\n  }}\n}}\n"
