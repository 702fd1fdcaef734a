"""One web worker process: uvicorn serving the Starlette app on the supervisor's socket.

The supervisor binds the listening socket once and hands the same socket to every worker, so
the kernel spreads connections over them. A worker maps the ring, the capture status, the stats
series (read-only) and the connection registry (its own row) and reads the JWT secret while it is
still root, then drops to `web.user` before it serves a single request.

uvicorn settings that matter here (see FIELD-NOTES):
- `http=`, `ws=`: uvicorn's h11 and wsproto protocols with the request deadlines, the
  connection cap and the close frames for protocol violations that uvicorn lacks
  (`protocols.py`). wsproto closes oversized frames with 1009 and does not log a traceback per
  bad frame; permessage-deflate is off (it cost 2-4x in throughput, compressing per connection);
- `proxy_headers=False`: uvicorn would believe X-Forwarded-For from 127.0.0.1; `guard.py`
  believes it from `web.trusted_proxies` only;
- `ws_max_size = limits.max_message_bytes`; uvicorn's own ping is off: the protocol has `ping`;
- our log filter is installed on uvicorn's loggers, so no `?token=` ever reaches a log line;
- with `web.tls` the `SSLContext` is built here while root (the key is root's, 0600) and handed
  to uvicorn through `ssl_context_factory`.
"""

from __future__ import annotations

import logging
import resource
import socket
import ssl
from typing import Any, Final

import uvicorn

from leireye.config import Config
from leireye.errors import LeirEyeError
from leireye.exitcodes import ExitCode
from leireye.flows.view import FlowView
from leireye.logs import setup_logging
from leireye.privileges import drop_privileges, lookup_user
from leireye.tls import server_context, tls_paths
from leireye.web.api.context import ApiContext
from leireye.web.app import build_app
from leireye.web.hub import Hub
from leireye.web.logfilter import install_log_redaction
from leireye.web.protocols import ClosingWSProtocol, HttpLimits, http_protocol

log = logging.getLogger("leireye.web")

# What serving imports on first use, to be imported before the privilege drop: the idna codec
# (wsproto decodes the Host header with it), asyncio's thread pool (to_thread), and from anyio
# what Starlette's request handling needs (the asyncio backend for `FileResponse`'s threads,
# streams for `StreamingResponse`, lowlevel for cancellation).
WEB_PRELOAD: Final = (
    "encodings.idna",
    "concurrent.futures.thread",
    "anyio._backends._asyncio",  # the event loop backend, loaded on the first to_thread call
    "anyio.lowlevel",
    "anyio.abc",
    "anyio.streams.memory",
    "anyio.streams.stapled",
    "anyio.streams.tls",
    "anyio.to_thread",
    "anyio.from_thread",
)

SPARE_FDS = 64  # an idle worker holds ~16 descriptors (segments, sockets, the event loop)


class WebError(LeirEyeError):
    """A web worker cannot start."""


def run_web_worker(
    config: Config,
    segments: dict[str, str],
    worker_index: int,
    sock: socket.socket,
) -> int:
    setup_logging(config.logging.level, loggers=("leireye", "uvicorn", "asyncio"))
    install_log_redaction()
    try:
        hub = Hub.attach(config, segments, worker_index)
    except LeirEyeError as exc:
        log.error("web worker %d cannot start: %s", worker_index, exc)
        return ExitCode.FATAL
    paths = tls_paths(config)
    try:
        tls = None if paths is None else server_context(paths)
    except LeirEyeError as exc:
        log.error("web worker %d cannot start: %s", worker_index, exc)
        return ExitCode.FATAL
    live_flows = None
    if config.flows.enabled and segments.get("flows"):
        try:
            live_flows = FlowView.attach(segments["flows"])
        except LeirEyeError as exc:
            log.error("web worker %d cannot start: %s", worker_index, exc)
            return ExitCode.FATAL
    app = build_app(ApiContext.for_worker(config, hub, live_flows))
    _room_for_connections(config.web.max_connections)
    server_config = uvicorn_config(config, app, tls)
    # Import everything serving needs while still root: the Python installation may not be
    # readable by the web user (a pyenv under /root), and a lazy import after the switch would
    # fail on the first request. `load()` imports uvicorn's protocol and lifespan classes,
    # `get_loop_factory()` its event loop module; `drop_privileges` imports WEB_PRELOAD.
    server_config.load()
    server_config.get_loop_factory()
    try:
        account = lookup_user(config.web.user, key="web.user", error=WebError)
        drop_privileges(account, key="web.user", error=WebError, preload=WEB_PRELOAD)
    except LeirEyeError as exc:
        log.error("web worker %d cannot start: %s", worker_index, exc)
        return ExitCode.FATAL
    server = uvicorn.Server(server_config)
    install_log_redaction()  # uvicorn.Config configures its loggers: filter them again
    log.info("web worker %d serving on fd %d", worker_index, sock.fileno())
    server.run(sockets=[sock])
    return ExitCode.OK


def uvicorn_config(config: Config, app: Any, tls: ssl.SSLContext | None = None) -> uvicorn.Config:
    """uvicorn's settings for `app` (configuring uvicorn's loggers, as uvicorn.Config does),
    serving TLS with `tls` when given."""
    return uvicorn.Config(
        app,
        http=http_protocol(HttpLimits.of(config.web)),
        ws=ClosingWSProtocol,
        proxy_headers=False,
        loop="asyncio",  # "auto" tries `import uvloop` on every start
        ws_max_size=config.limits.max_message_bytes,
        ws_per_message_deflate=False,
        ws_ping_interval=None,
        ws_ping_timeout=None,
        log_config=None,
        # Off: one INFO line per REST call drowns the log. False detaches uvicorn.access.
        access_log=config.web.access_log,
        lifespan="on",
        timeout_graceful_shutdown=1,
        server_header=False,
        ssl_context_factory=None if tls is None else (lambda _config, _default: tls),
    )


def _room_for_connections(max_connections: int) -> None:
    """Raise the soft descriptor limit to fit `web.max_connections` (up to the hard limit), so
    that the cap refuses connections before EMFILE does (on EMFILE asyncio stops accepting for
    a second, for everyone)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + SPARE_FDS
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
    if raised < wanted:
        log.warning(
            "web.max_connections %d does not fit the descriptor limit %d: lower it, or raise "
            "the limit (ulimit -n, systemd LimitNOFILE)", max_connections, hard,
        )  # fmt: skip
