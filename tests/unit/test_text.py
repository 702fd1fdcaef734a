from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leireye.record import TCP_FLAG_NAMES
from leireye.text import TCP_FLAG_ORDER, tcp_flags_text, truncate


def test_short_text_is_kept() -> None:
    assert truncate("abc", 3) == "abc"
    assert truncate("", 0, marker="") == ""


def test_long_text_is_cut_to_the_limit_with_the_marker() -> None:
    assert truncate("abcdefgh", 6) == "abc..."
    assert truncate("abcdefgh", 4, marker="…") == "abc…"
    assert truncate("x" * 41, 40) == "x" * 37 + "..."


def test_a_limit_shorter_than_the_marker_is_refused() -> None:
    with pytest.raises(ValueError, match="no room"):
        truncate("abcdef", 2)


@given(st.text(), st.integers(3, 80))
def test_never_longer_than_the_limit_and_always_a_prefix(text: str, limit: int) -> None:
    cut = truncate(text, limit)
    assert len(cut) <= limit
    assert cut == text or (cut.endswith("...") and text.startswith(cut[:-3]))


def test_tcp_flags_read_in_one_form_in_any_order() -> None:
    assert tcp_flags_text(["ACK", "RST"]) == tcp_flags_text(["RST", "ACK"]) == "RST, ACK"
    assert tcp_flags_text([]) == "<none>"
    assert TCP_FLAG_ORDER == TCP_FLAG_NAMES  # the order of the header's bits, lowest first
