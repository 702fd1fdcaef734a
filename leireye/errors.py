"""The one small tree of LeirEye's own errors.

`LeirEyeError` is the root. The CLI catches it and prints its message (no traceback); everything
else is a bug and surfaces as one. Client-facing kinds (added by the web layer) carry the close code
or HTTP status they map to.
"""

from __future__ import annotations


class LeirEyeError(Exception):
    """Base of every error LeirEye raises on purpose."""


class ConfigError(LeirEyeError):
    """A configuration file or override is missing, unreadable or invalid; the message names the
    key path (`at $.capture.snaplen`)."""


class CaptureError(LeirEyeError):
    """The capture could not start: no such interface, no permission, a bad BPF expression, an
    unreadable pcap file. The message is libpcap's own where it has one."""


class RingError(LeirEyeError):
    """A shared-memory segment is missing, or its layout is not the one this code understands."""


class RefusedError(LeirEyeError):
    """A client's request refused, carrying what the REST API answers: the HTTP `status`, an
    `error_code`, the `detail` text, and for 429 how long to wait (`retry_after`, seconds)."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        retry_after: float = 0.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.retry_after = retry_after
        self.headers = headers or {}
