"""The first thing every request and WebSocket handshake meets: who the client is (`proxies`),
and whether it asked for this sensor at all (`hosts`). An ASGI middleware, outside the app's
routes, so the console, `/health`, the API and the WebSocket are all behind it."""

from __future__ import annotations

import socket

from starlette.types import ASGIApp, Receive, Scope, Send

from leireye.web.api.errors import error_response
from leireye.web.hosts import HostPolicy
from leireye.web.proxies import (
    FORWARDING,
    Network,
    forwarded_client,
    forwarded_scheme,
    is_trusted,
    parse_address,
)


def machine_names(bind_host: str) -> list[str]:
    """The names this machine answers to: the bound host, the hostname and the FQDN (the FQDN
    may ask the resolver: call it once, at start)."""
    return [bind_host, socket.gethostname(), socket.getfqdn()]


class RequestGuard:
    def __init__(self, app: ASGIApp, hosts: HostPolicy, proxies: tuple[Network, ...]) -> None:
        self.app = app
        self.hosts = hosts
        self.proxies = proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        self._resolve_client(scope)
        hosts = [value for name, value in scope["headers"] if name == b"host"]
        host = hosts[0].decode("latin-1") if len(hosts) == 1 else None
        if len(hosts) > 1 or not self.hosts.allows(host):
            shown = (host or ", ".join(h.decode("latin-1") for h in hosts))[:100]
            detail = f"This sensor does not answer to the host {shown!r} (web.allowed_hosts)"
            # A WebSocket handshake gets the same answer (uvicorn's denial response extension).
            await error_response(400, "INVALID_HOST", detail)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _resolve_client(self, scope: Scope) -> None:
        """Believe the forwarding headers of a trusted proxy; strip them from anyone else's
        request, so that nothing later reads them by mistake."""
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        if not any(name in FORWARDING for name, _ in headers):
            return
        client = scope.get("client")
        peer = client[0] if client else ""
        if not is_trusted(parse_address(peer), self.proxies):
            scope["headers"] = [(k, v) for k, v in headers if k not in FORWARDING]
            return
        forwarded_for = [v.decode("latin-1") for k, v in headers if k == b"x-forwarded-for"]
        if (address := forwarded_client(peer, forwarded_for, self.proxies)) is not None:
            scope["client"] = (address, 0)
        proto = [v.decode("latin-1") for k, v in headers if k == b"x-forwarded-proto"]
        websocket = scope["type"] == "websocket"
        if (scheme := forwarded_scheme(peer, proto, self.proxies, websocket)) is not None:
            scope["scheme"] = scheme
