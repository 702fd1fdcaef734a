"""How the client trusts a `wss://` / `https://` sensor: the system's CAs, a CA file, or a pinned
certificate fingerprint.

- neither `cafile` nor `fingerprint`: the default context (system CAs, host name checked);
- `cafile`: that PEM file's certificates as the CAs (a sensor's self-signed `tls-cert.pem` is its
  own CA), host name checked;
- `fingerprint`: the server's certificate must have that SHA-256 fingerprint (of its DER bytes,
  as `leireye tls-fingerprint` prints it), compared in constant time, right after the TLS
  handshake and before anything else is sent: the pin replaces CA and name checks. With
  `cafile` too, both must hold.

A mismatch raises `CertificateMismatch`, a `ConnectionFailed` that is never retried.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ssl
import urllib.request
from dataclasses import dataclass
from typing import Any

from leireye.client.errors import CertificateMismatch
from leireye.text import fingerprint, format_digest, parse_fingerprint


@dataclass(frozen=True)
class ClientTls:
    context: ssl.SSLContext
    pin: bytes | None = None  # SHA-256 of the server certificate's DER bytes

    @classmethod
    def create(cls, cafile: str | None = None, pinned: str | None = None) -> ClientTls:
        pin = None if pinned is None else parse_fingerprint(pinned)
        context = ssl.create_default_context(cafile=cafile)
        if pin is not None and cafile is None:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return cls(context, pin)

    def check(self, der: bytes | None, where: str) -> None:
        """Raise `CertificateMismatch` unless the peer certificate `der` matches the pin."""
        if self.pin is None:
            return
        if not der or not hmac.compare_digest(hashlib.sha256(der).digest(), self.pin):
            seen = fingerprint(der) if der else "none"
            raise CertificateMismatch(
                f"{where}: the server's certificate has SHA-256 fingerprint {seen}, not the pinned "
                f"{format_digest(self.pin)}: refusing to talk to it"
            )

    def opener(self) -> urllib.request.OpenerDirector:
        """A urllib opener whose HTTPS connections use the context and check the pin before the
        request is sent."""
        return urllib.request.build_opener(_PinnedHTTPSHandler(self))


def client_tls(url: str, cafile: str | None, pinned: str | None) -> ClientTls | None:
    """The TLS settings for `url` (None for ws:// and http://); ValueError for a pin or CA file
    given with a plain URL, or a malformed fingerprint."""
    secure = url.startswith(("wss://", "https://"))
    if not secure:
        if cafile is not None or pinned is not None:
            raise ValueError(f"cafile= and fingerprint= need a wss:// URL, not {url!r}")
        return None
    return ClientTls.create(cafile, pinned)


class _PinnedConnection(http.client.HTTPSConnection):
    def __init__(self, *args: Any, tls: ClientTls, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tls = tls

    def connect(self) -> None:
        super().connect()
        assert isinstance(self.sock, ssl.SSLSocket)
        try:
            self._tls.check(self.sock.getpeercert(binary_form=True), f"{self.host}:{self.port}")
        except CertificateMismatch:
            self.close()
            raise


class _PinnedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, tls: ClientTls) -> None:
        super().__init__(context=tls.context)
        self._tls = tls

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        def connection(host: str, **kwargs: Any) -> _PinnedConnection:
            return _PinnedConnection(host, tls=self._tls, **kwargs)

        return self.do_open(connection, req, context=self._tls.context)
