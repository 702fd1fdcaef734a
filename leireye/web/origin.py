"""Which browser pages may open the WebSocket: a check of the `Origin` header.

Neither uvicorn nor Starlette checks `Origin`, and a browser attaches a user's credentials to a
cross-site WebSocket handshake, so the app must. The rules, in order:

- no `Origin` header: not a browser (a script, a CLI) - allowed; it must still authenticate;
- `Origin: null` (sandboxed frames, `file://` pages) - refused, even when "*" is configured;
- an origin that is not exactly `scheme://host[:port]` with scheme http or https - refused;
- the sensor's own origin, i.e. the `Host` header with the request's scheme (ws means http,
  wss means https) - allowed;
- an origin in `web.allowed_origins` - allowed; "*" there allows any origin (loading the config
  refuses an entry that is neither, see `leireye.origins`);
- anything else - refused.

Origins compare as (scheme, host, port): scheme and host are case-insensitive, a missing port is
the scheme's default (80, 443), IPv6 addresses compare in their compressed form. `localhost` and
`127.0.0.1` are different origins, as they are to a browser. Behind a TLS-terminating proxy the
request scheme is `http` while pages are `https`: list the public origin in `allowed_origins`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Final
from urllib.parse import urlsplit

from leireye.origins import DEFAULT_PORTS, Origin, normal_host, parse_origin

_SCHEMES: Final = {"http": "http", "ws": "http", "https": "https", "wss": "https"}
_HOST_TEXT: Final = re.compile(r"[!-~]+")


def _host_from_header(host_header: str, scheme: str) -> Origin | None:
    if not _HOST_TEXT.fullmatch(host_header) or any(c in host_header for c in "/?#@"):
        return None
    try:
        parts = urlsplit(f"//{host_header}")
        port = parts.port
    except ValueError:
        return None
    if parts.netloc.endswith(":"):
        return None
    host = normal_host(parts.hostname, parts.netloc)
    if host is None:
        return None
    return scheme, host, DEFAULT_PORTS[scheme] if port is None else port


@functools.lru_cache(maxsize=32)
def _allowed(allowed: tuple[str, ...]) -> tuple[bool, frozenset[Origin]]:
    parsed = {parse_origin(entry) for entry in allowed if entry != "*"}
    return "*" in allowed, frozenset(o for o in parsed if o is not None)


def origin_allowed(
    origin: str | None,
    host_header: str | None,
    allowed: Sequence[str],
    scheme: str,
) -> bool:
    """May a handshake carrying this `Origin` proceed? `scheme` is the request's: ws, wss, http
    or https; `host_header` its `Host`. See the module docstring for the rules."""
    if origin is None:
        return True
    if origin.lower() == "null":
        return False
    parsed = parse_origin(origin)
    if parsed is None:
        return False
    own_scheme = _SCHEMES.get(scheme.lower())
    if host_header is not None and own_scheme is not None:
        own = _host_from_header(host_header, own_scheme)
        if own is not None and own == parsed:
            return True
    any_origin, listed = _allowed(tuple(allowed))
    return any_origin or parsed in listed
