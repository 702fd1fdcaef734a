"""Signed WebSocket tickets: a worker refuses forged, altered, expired and replayed ones alone,
and passes each genuine one on once."""

from __future__ import annotations

import pytest

from leireye.accounts.tickets import TicketCheck, make_ticket, ticket_key, ticket_valid

SECRET = bytes(range(64))
NOW = 1_700_000_000.0


def test_a_genuine_ticket_is_valid_until_it_expires() -> None:
    key = ticket_key(SECRET)
    ticket = make_ticket(key, NOW + 30)
    assert len(ticket) <= 100 and ticket.count(".") == 2
    assert ticket_valid(key, ticket, NOW) == NOW + 30
    assert ticket_valid(key, ticket, NOW + 29.999) == NOW + 30
    assert ticket_valid(key, ticket, NOW + 30) is None
    assert make_ticket(key, NOW + 30) != ticket  # a fresh nonce each time


def tampered(ticket: str) -> list[str]:
    nonce, expires, mac = ticket.split(".")
    flip = "A" if nonce[0] != "A" else "B"
    return [
        f"{flip}{nonce[1:]}.{expires}.{mac}",  # another nonce
        f"{nonce}.{int(expires) + 1000}.{mac}",  # a later expiry
        f"{nonce}.{expires}.{mac[:-1]}{'A' if mac[-1] != 'A' else 'B'}",
        f"{nonce}.{expires}",
        f"{nonce}.{expires}.{mac}.",
        f" {ticket}",
        ticket + "=",
        "",
        "A" * 43,  # the old kind: random bytes only
        "x" * 10_000,
        f"{nonce}.0{expires}.{mac}",
        f"{nonce}.-{expires}.{mac}",
    ]


def test_altered_or_foreign_tickets_are_invalid() -> None:
    key = ticket_key(SECRET)
    ticket = make_ticket(key, NOW + 30)
    for bad in tampered(ticket):
        assert ticket_valid(key, bad, NOW) is None, bad
    other = ticket_key(bytes(range(1, 65)))
    assert ticket_valid(other, ticket, NOW) is None
    assert ticket_key(SECRET) != SECRET[:32]  # a key of its own, not the JWT secret


def test_a_worker_passes_each_genuine_ticket_on_once() -> None:
    check = TicketCheck(SECRET)
    ticket = make_ticket(ticket_key(SECRET), NOW + 30)
    assert check.admit(ticket, NOW) is True
    assert check.admit(ticket, NOW + 1) is False  # a replay to this worker: refused here
    assert check.admit(make_ticket(ticket_key(SECRET), NOW + 30), NOW) is True
    for bad in tampered(ticket):
        assert check.admit(bad, NOW) is False
    assert check.refused == 1 + len(tampered(ticket))


@pytest.mark.parametrize("remembered", [1, 3])
def test_a_worker_remembers_a_bounded_number_of_tickets(remembered: int) -> None:
    check = TicketCheck(SECRET, max_remembered=remembered)
    key = ticket_key(SECRET)
    tickets = [make_ticket(key, NOW + 30) for _ in range(10)]
    assert all(check.admit(t, NOW) for t in tickets)
    assert len(check._passed) <= remembered
    assert check.admit(tickets[-1], NOW) is False


def test_expired_tickets_are_forgotten() -> None:
    check = TicketCheck(SECRET)
    key = ticket_key(SECRET)
    assert check.admit(make_ticket(key, NOW + 1), NOW)
    assert check.admit(make_ticket(key, NOW + 100), NOW + 50)
    assert len(check._passed) == 1
