"""Signed WebSocket tickets: a worker refuses forged, altered, expired and replayed ones alone,
and those of a user whose generation changed (a new password) or who is gone, and passes each
genuine one on once."""

from __future__ import annotations

import pytest

from leireye.accounts.tickets import TicketCheck, make_ticket, ticket_key, ticket_valid
from leireye.accounts.users import new_generation

SECRET = bytes(range(64))
NOW = 1_700_000_000.0
USER_ID = 7
GENERATION = new_generation()
GENERATIONS = {USER_ID: GENERATION, 1: new_generation()}


def generation_of(user_id: int) -> str | None:
    return GENERATIONS.get(user_id)


def ticket(key: bytes, expires_at: float = NOW + 30, user_id: int = USER_ID) -> str:
    return make_ticket(key, expires_at, user_id, GENERATIONS[user_id])


def test_a_genuine_ticket_is_valid_until_it_expires() -> None:
    key = ticket_key(SECRET)
    genuine = ticket(key)
    assert len(genuine) <= 100 and genuine.count(".") == 3
    assert genuine.split(".")[2] == str(USER_ID) and GENERATION not in genuine
    assert ticket_valid(key, genuine, NOW, generation_of) == NOW + 30
    assert ticket_valid(key, genuine, NOW + 29.999, generation_of) == NOW + 30
    assert ticket_valid(key, genuine, NOW + 30, generation_of) is None
    assert ticket(key) != genuine  # a fresh nonce each time


def test_a_ticket_is_void_once_its_users_generation_changes_or_the_user_is_gone() -> None:
    key = ticket_key(SECRET)
    genuine = ticket(key)
    assert ticket_valid(key, genuine, NOW, lambda _: new_generation()) is None  # new password
    assert ticket_valid(key, genuine, NOW, lambda _: None) is None  # removed
    # Another user's generation does not sign it either.
    assert ticket_valid(key, genuine, NOW, lambda _: GENERATIONS[1]) is None


def tampered(ticket: str) -> list[str]:
    nonce, expires, user_id, mac = ticket.split(".")
    flip = "A" if nonce[0] != "A" else "B"
    return [
        f"{flip}{nonce[1:]}.{expires}.{user_id}.{mac}",  # another nonce
        f"{nonce}.{int(expires) + 1000}.{user_id}.{mac}",  # a later expiry
        f"{nonce}.{expires}.1.{mac}",  # another user
        f"{nonce}.{expires}.{user_id}.{mac[:-1]}{'A' if mac[-1] != 'A' else 'B'}",
        f"{nonce}.{expires}.{mac}",  # no user
        f"{nonce}.{expires}.{user_id}",
        f"{nonce}.{expires}.{user_id}.{mac}.",
        f" {ticket}",
        ticket + "=",
        "",
        "A" * 43,  # the old kind: random bytes only
        "x" * 10_000,
        f"{nonce}.0{expires}.{user_id}.{mac}",
        f"{nonce}.-{expires}.{user_id}.{mac}",
        f"{nonce}.{expires}.0{user_id}.{mac}",
        f"{nonce}.{expires}.99999999999.{mac}",
    ]


def test_altered_or_foreign_tickets_are_invalid() -> None:
    key = ticket_key(SECRET)
    genuine = ticket(key)
    for bad in tampered(genuine):
        assert ticket_valid(key, bad, NOW, generation_of) is None, bad
    other = ticket_key(bytes(range(1, 65)))
    assert ticket_valid(other, genuine, NOW, generation_of) is None
    assert ticket_key(SECRET) != SECRET[:32]  # a key of its own, not the JWT secret


def test_a_worker_passes_each_genuine_ticket_on_once() -> None:
    check = TicketCheck(SECRET, generation_of)
    genuine = ticket(ticket_key(SECRET))
    assert check.admit(genuine, NOW) is True
    assert check.admit(genuine, NOW + 1) is False  # a replay to this worker: refused here
    assert check.admit(ticket(ticket_key(SECRET)), NOW) is True
    for bad in tampered(genuine):
        assert check.admit(bad, NOW) is False
    assert check.refused == 1 + len(tampered(genuine))


def test_a_worker_refuses_a_ticket_bought_before_a_new_password() -> None:
    generations = dict(GENERATIONS)
    check = TicketCheck(SECRET, generations.get)
    bought = ticket(ticket_key(SECRET))
    generations[USER_ID] = new_generation()  # the users file now says: new password
    assert check.admit(bought, NOW) is False
    assert check.refused == 1


@pytest.mark.parametrize("remembered", [1, 3])
def test_a_worker_remembers_a_bounded_number_of_tickets(remembered: int) -> None:
    check = TicketCheck(SECRET, generation_of, max_remembered=remembered)
    key = ticket_key(SECRET)
    tickets = [ticket(key) for _ in range(10)]
    assert all(check.admit(t, NOW) for t in tickets)
    assert len(check._passed) <= remembered
    assert check.admit(tickets[-1], NOW) is False


def test_expired_tickets_are_forgotten() -> None:
    check = TicketCheck(SECRET, generation_of)
    key = ticket_key(SECRET)
    assert check.admit(ticket(key, NOW + 1), NOW)
    assert check.admit(ticket(key, NOW + 100), NOW + 50)
    assert len(check._passed) == 1
