"""Zeek's connection state and history letters, as tables the flow table applies to whole arrays.

The rules (Zeek's `conn.log` documentation and its `conn_state` function in
`base/protocols/conn/main.zeek` are the reference):

Letters, upper case from the originator, lower case from the responder; each letter is recorded
once per direction, at its first occurrence, in order:

    S  a SYN without ACK            H  a SYN with ACK ("handshake")
    A  a pure ACK (ACK set, no payload, no SYN/FIN/RST)
    D  a packet with payload        F  a FIN            R  a RST
    ^  the originator was flipped: the first packet seen was a SYN-ACK, so its receiver is
       taken as the originator (Zeek does the same)

A UDP flow gets `D`/`d` at the first packet of each direction; other transports no letters.
(Zeek's C, T, W, I, Q, G letters need sequence numbers and checksums the record does not carry.)

Each endpoint has a state, moved by its own letters (and, for establishment, by the peer's):

    INACTIVE -S-> SYN_SENT, INACTIVE -H-> SYN_ACK_SENT, INACTIVE -A/D-> PARTIAL;
    SYN_SENT or SYN_ACK_SENT -A/D-> ESTABLISHED when the peer sent a SYN too (the peer, if
    still in a SYN state, becomes ESTABLISHED with it); any -F-> CLOSED (but RESET stays);
    any -R-> RESET.

Only the first occurrence of each letter is an event, so at most 12 events reach a flow in its
life: the table applies them as rounds over arrays (`TRANSITIONS[state, event]`), never per
packet. `conn_state` then follows Zeek's function word for word, the payload size of an
endpoint being zero exactly when it sent no `D`.
"""

from __future__ import annotations

import re
from typing import Final

import numpy as np

INACTIVE, SYN_SENT, SYN_ACK_SENT, PARTIAL, ESTABLISHED, CLOSED, RESET = range(7)
N_STATES: Final = 7

LETTERS: Final = "SHADFR"
S, H, A, D, F, R = range(6)
N_EVENTS: Final = 12  # letter + 6 * direction (0: originator, 1: responder)
HISTORY_CHARS: Final = np.frombuffer(b"SHADFRshadfr", dtype=np.uint8)

CONN_STATES: Final = (
    "",
    "S0",
    "S1",
    "SF",
    "REJ",
    "S2",
    "S3",
    "RSTO",
    "RSTR",
    "RSTOS0",
    "RSTRH",
    "SH",
    "SHR",
    "OTH",
)
CONN_STATE_INDEX: Final = {name: i for i, name in enumerate(CONN_STATES)}

_SYN_STATES: Final = (SYN_SENT, SYN_ACK_SENT)


def _step(orig: int, resp: int, event: int) -> tuple[int, int]:
    letter, direction = event % 6, event // 6
    me, peer = (orig, resp) if direction == 0 else (resp, orig)
    if letter == R:
        me = RESET
    elif letter == F:
        me = me if me == RESET else CLOSED
    elif letter == S:
        me = SYN_SENT if me == INACTIVE else me
    elif letter == H:
        me = SYN_ACK_SENT if me == INACTIVE else me
    elif me == INACTIVE:  # A or D
        me = PARTIAL
    elif me in _SYN_STATES and peer in (*_SYN_STATES, ESTABLISHED):
        me = ESTABLISHED
        peer = ESTABLISHED if peer in _SYN_STATES else peer
    return (me, peer) if direction == 0 else (peer, me)


def _transitions() -> np.ndarray:
    table = np.zeros((N_STATES * N_STATES, N_EVENTS), dtype=np.uint8)
    for orig in range(N_STATES):
        for resp in range(N_STATES):
            for event in range(N_EVENTS):
                o, r = _step(orig, resp, event)
                table[orig * N_STATES + resp, event] = o * N_STATES + r
    return table


TRANSITIONS: Final = _transitions()
"""`TRANSITIONS[orig_state * 7 + resp_state, event]` -> the combined state after the event."""

_RSTOS0: Final = re.compile(r"\^?S[^HAFGIQ]*R")


def tcp_conn_state(state: int, history: str, orig_data: bool, resp_data: bool) -> str:
    """Zeek's `conn_state` for TCP from the combined endpoint state."""
    os_, rs = divmod(state, N_STATES)
    o_inactive = os_ in (INACTIVE, PARTIAL)
    r_inactive = rs in (INACTIVE, PARTIAL)
    if rs == RESET:
        if os_ in _SYN_STATES or (os_ == RESET and not orig_data and not resp_data):
            return "REJ"
        return "RSTRH" if o_inactive else "RSTR"
    if os_ == RESET:
        if r_inactive:
            return "RSTOS0" if _RSTOS0.match(history) else "OTH"
        return "RSTO"
    if rs == CLOSED and os_ == CLOSED:
        return "SF"
    if os_ == CLOSED:
        return "SH" if r_inactive else "S2"
    if rs == CLOSED:
        return "SHR" if o_inactive else "S3"
    if os_ == SYN_SENT and rs == INACTIVE:
        return "S0"
    if os_ == ESTABLISHED and rs == ESTABLISHED:
        return "S1"
    return "OTH"


def udp_conn_state(orig_seen: bool, resp_seen: bool) -> str:
    if orig_seen:
        return "SF" if resp_seen else "S0"
    return "SHR" if resp_seen else "OTH"


def closed(state: int) -> bool:
    """Torn down: FIN both ways, or a RST from either side (the flow ends after a linger)."""
    os_, rs = divmod(state, N_STATES)
    return os_ == RESET or rs == RESET or (os_ == CLOSED and rs == CLOSED)


CLOSED_STATES: Final = np.array([closed(s) for s in range(N_STATES * N_STATES)])
