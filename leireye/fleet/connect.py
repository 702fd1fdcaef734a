"""One way to reach NATS from a `nats:` config section, for the publisher and the central alike."""

from __future__ import annotations

import logging
import os
import re
import ssl
import stat
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client, RawCredentials

from leireye.config import NatsConfig
from leireye.fleet.model import FleetError

log = logging.getLogger("leireye.fleet")

_TOKEN = re.compile(r"[A-Za-z0-9_-]+")


def inbox_prefix(name: str) -> str | None:
    """`_INBOX.<name>`: the client's replies (JetStream acks, API answers, pulled messages)
    come on subjects under it, so NATS permissions can let each client subscribe to its own
    replies alone (docs/fleet-deploy.md); None (nats-py's shared `_INBOX`) for a name that is
    not one subject token."""
    return f"_INBOX.{name}" if _TOKEN.fullmatch(name) else None


def connect_options(cfg: NatsConfig, state_dir: Path, name: str) -> dict[str, Any]:
    """The keyword arguments of `nats.connect` for `cfg`: paths resolved against `state_dir`,
    the password read from its file (never from the YAML), TLS verified against `tls_ca`,
    replies under `inbox_prefix(name)`. Reconnects forever: a sensor outlives any NATS
    outage."""

    def path(value: str) -> str:
        return str(state_dir / value)

    options: dict[str, Any] = {
        "servers": list(cfg.servers),
        "name": name,
        "connect_timeout": cfg.connect_timeout_s,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "allow_reconnect": True,
    }
    prefix = inbox_prefix(name)
    if prefix is not None:
        options["inbox_prefix"] = prefix
    if cfg.creds:
        options["user_credentials"] = warn_if_shared("creds", path(cfg.creds))
    if cfg.nkey_seed:
        options["nkeys_seed"] = warn_if_shared("nkey_seed", path(cfg.nkey_seed))
    if cfg.user:
        warn_if_shared("password_file", path(cfg.password_file or ""))
        try:
            password = Path(path(cfg.password_file or "")).read_text().strip()
        except OSError as exc:
            raise FleetError(f"nats.password_file: {exc}") from None
        options["user"], options["password"] = cfg.user, password
    if cfg.tls_ca or cfg.tls_cert or any(s.startswith("tls://") for s in cfg.servers):
        context = ssl.create_default_context(cafile=path(cfg.tls_ca) if cfg.tls_ca else None)
        if cfg.tls_cert:
            context.load_cert_chain(path(cfg.tls_cert), path(cfg.tls_key) if cfg.tls_key else None)
        options["tls"] = context
    return options


def warn_if_shared(key: str, file: str) -> str:
    """`file`; a warning in the log when group or others may read or write it (keep it 0600,
    docs/fleet-deploy.md): a seed or a password others can read is a key others hold. Not
    refused: the file may be shared on purpose (a group of operators), and reading it fails
    later, with its name, when it is missing."""
    try:
        mode = os.stat(file).st_mode
    except OSError:
        return file
    if mode & 0o077:
        text = "nats.%s %s is accessible by group or others (mode %04o): keep it 0600"
        log.warning(text, key, file, stat.S_IMODE(mode))
    return file


async def connect(cfg: NatsConfig, state_dir: Path, name: str, **callbacks: Any) -> Client:
    """A connected client; `callbacks` are nats.connect's (error_cb, disconnected_cb, …)."""
    return await nats.connect(**connect_options(cfg, state_dir, name), **callbacks)


def load_secrets(options: dict[str, Any]) -> dict[str, Any]:
    """`options` with the credential files read into memory (a .creds file, an nkey seed), for a
    process that reads them while still root and connects after dropping privileges: nats-py
    would otherwise read those files at every (re)connect. A file that cannot be read raises
    FleetError naming it (never its content)."""
    loaded = dict(options)
    for key in ("user_credentials", "nkeys_seed"):
        if key not in loaded:
            continue
        try:
            text = Path(loaded[key]).read_text()
        except OSError as exc:
            raise FleetError(f"nats credentials {loaded[key]}: {exc.strerror}") from None
        if key == "user_credentials":
            loaded[key] = RawCredentials(text)
        else:
            del loaded[key]
            loaded["nkeys_seed_str"] = text
    return loaded
