"""Text shown to people: a client's value quoted in a reply, cut so the reply stays small."""

from __future__ import annotations


def truncate(text: str, limit: int, marker: str = "...") -> str:
    """`text` if it has at most `limit` characters; otherwise its start and `marker`, `limit`
    characters in all (so a cut text always shows it was cut)."""
    if limit < len(marker):
        raise ValueError(f"limit {limit} leaves no room for the marker {marker!r}")
    return text if len(text) <= limit else text[: limit - len(marker)] + marker
