"""What a web origin is: `scheme://host[:port]`, parsed and normalised.

Pure syntax, shared by the config check (`web.allowed_origins` entries must be origins, or they
would never match) and the WebSocket handshake check (`leireye.web.origin`). An origin is
(scheme, host, port): scheme and host lower-case, a missing port is the scheme's default (80,
443), an IPv6 address in its compressed form.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final
from urllib.parse import urlsplit

Origin = tuple[str, str, int]

DEFAULT_PORTS: Final = {"http": 80, "https": 443}
# Printable ASCII without spaces: urlsplit silently drops tabs and newlines, we refuse them.
_ORIGIN_TEXT: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[!-~]+")
_REG_NAME: Final = re.compile(r"[a-z0-9_.-]+")


def parse_origin(text: str) -> Origin | None:
    """`scheme://host[:port]` as (scheme, host, port), or None when it is not a valid origin."""
    if not _ORIGIN_TEXT.fullmatch(text):
        return None
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or parts.path or parts.query or parts.fragment:
        return None
    if "@" in parts.netloc or text.endswith(("?", "#")) or parts.netloc.endswith(":"):
        return None
    host = normal_host(parts.hostname, parts.netloc)
    if host is None:
        return None
    return scheme, host, DEFAULT_PORTS[scheme] if port is None else port


def normal_host(hostname: str | None, netloc: str) -> str | None:
    """`urlsplit`'s lower-cased `hostname` as an origin compares it, or None when it is not a
    host name or an address (an IPv6 address is given in brackets in `netloc`)."""
    if not hostname:
        return None
    if netloc.startswith("["):
        try:
            return str(ipaddress.IPv6Address(hostname))
        except ValueError:
            return None
    if not _REG_NAME.fullmatch(hostname):
        return None
    return hostname
