"""Text shown to people: a client's value quoted in a reply, cut so the reply stays small; a
certificate's fingerprint, as the sensor shows it and a client pins it; TCP flags in the one
form every view uses."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Final

TCP_FLAG_ORDER: Final = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "NS")
"""The TCP flag names, least significant bit first (`record.TcpFlag`'s order)."""


def tcp_flags_text(names: Iterable[str]) -> str:
    """The one text form of TCP flags (Wireshark's), given their names in any order:
    `["ACK", "PSH"]` -> `"PSH, ACK"`, least significant bit first; `"<none>"` for none. The
    decoder's `info`, `leireye watch` and the console (`static/app/format.js`) all show flags
    this way."""
    given = set(names)
    return ", ".join(name for name in TCP_FLAG_ORDER if name in given) or "<none>"


def truncate(text: str, limit: int, marker: str = "...") -> str:
    """`text` if it has at most `limit` characters; otherwise its start and `marker`, `limit`
    characters in all (so a cut text always shows it was cut)."""
    if limit < len(marker):
        raise ValueError(f"limit {limit} leaves no room for the marker {marker!r}")
    return text if len(text) <= limit else text[: limit - len(marker)] + marker


def fingerprint(der: bytes) -> str:
    """A certificate's SHA-256 fingerprint as browsers and `openssl x509 -fingerprint -sha256`
    show it: 32 upper-case hex pairs joined by colons (`AB:01:…`), of the DER bytes."""
    return format_digest(hashlib.sha256(der).digest())


def format_digest(digest: bytes) -> str:
    return ":".join(f"{b:02X}" for b in digest)


def parse_fingerprint(text: str) -> bytes:
    """The 32 bytes of a SHA-256 fingerprint written as `fingerprint` does, or without colons,
    in any case, with an optional `sha256:` / `SHA256=` prefix; ValueError otherwise."""
    value = text.strip()
    if value[:7].lower() in ("sha256:", "sha256="):
        value = value[7:]
    digits = value.replace(":", "")
    if len(digits) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digits):
        raise ValueError(f"not a SHA-256 fingerprint (64 hex digits): {truncate(text, 80)!r}")
    return bytes.fromhex(digits)
