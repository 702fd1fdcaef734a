"""Token verification on arbitrary input: a Principal or an AuthFailure, never an exception."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from leireye.accounts.principal import AuthFailure, Principal
from leireye.accounts.tokens import REASONS, Authenticator, issue_token
from leireye.accounts.users import UsersFile, UserStore, dump_users_file
from tests.accounts import make_user

SECRET = bytes(range(100, 164))
NOW = 1_700_000_000.0
ALICE = make_user(2, "alice", "ANALYST", "alice's password")
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_auth(tmp: Path) -> Authenticator:
    path = tmp / "users.yaml"
    path.write_text(dump_users_file(UsersFile(next_id=3, users=(ALICE,))))
    return Authenticator(SECRET, UserStore(path))


_AUTH: dict[str, Authenticator] = {}


def auth_for(tmp_path_factory: Any) -> Authenticator:
    if "a" not in _AUTH:
        _AUTH["a"] = make_auth(tmp_path_factory.mktemp("users"))
    return _AUTH["a"]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(header: Any, payload: Any) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = hmac.new(SECRET, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def is_failure(result: object) -> bool:
    return isinstance(result, AuthFailure) and result.reason in REASONS


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
claim_values = st.one_of(
    json_values,
    st.integers(min_value=int(NOW) - 10_000, max_value=int(NOW) + 10_000),
    st.sampled_from(
        ["2", "1", "alice", "ANALYST", "9999999999", str(int(NOW)), ALICE.generation, "a" * 22]
    ),
)
claim_names = st.sampled_from(
    ["sub", "username", "role", "iat", "nbf", "exp", "jti", "crit", "gen", "crd"]
)
VALID = {
    "sub": "2",
    "username": "alice",
    "role": "ADMIN",
    "iat": int(NOW) - 100,
    "nbf": int(NOW) - 100,
    "exp": int(NOW) + 100,
    "gen": ALICE.generation,
}
ABSENT = object()


@st.composite
def near_valid(draw: st.DrawFn) -> dict[str, Any]:
    """Valid claims with up to two of them replaced by anything or left out."""
    claims: dict[str, Any] = dict(VALID)
    for name in draw(st.sets(st.sampled_from(sorted(VALID)), max_size=2)):
        value = draw(st.one_of(claim_values, st.just(ABSENT)))
        if value is ABSENT:
            del claims[name]
        else:
            claims[name] = value
    return claims


@SETTINGS
@given(token=st.text(max_size=600))
def test_any_text_is_refused(tmp_path_factory: Any, token: str) -> None:
    assert is_failure(auth_for(tmp_path_factory).verify(token, NOW))


@SETTINGS
@given(parts=st.lists(st.binary(max_size=120), min_size=1, max_size=5))
def test_any_base64url_segments_are_refused(tmp_path_factory: Any, parts: list[bytes]) -> None:
    token = ".".join(b64(part) for part in parts)
    assert is_failure(auth_for(tmp_path_factory).verify(token, NOW))


@SETTINGS
@given(
    header=st.one_of(
        st.just({"alg": "HS256", "typ": "JWT"}),
        json_values,
        st.dictionaries(
            st.sampled_from(["alg", "typ", "kid", "crit", "b64", "jku", "x5u"]), json_values
        ).map(lambda h: {"alg": "HS256", **h}),
    ),
    payload=st.one_of(json_values, st.dictionaries(claim_names, claim_values), near_valid()),
    now=st.one_of(
        st.floats(min_value=NOW - 150, max_value=NOW + 150),
        st.floats(min_value=NOW - 20_000, max_value=NOW + 20_000),
    ),
)
def test_any_correctly_signed_content_never_raises(
    tmp_path_factory: Any, header: Any, payload: Any, now: float
) -> None:
    result = auth_for(tmp_path_factory).verify(signed(header, payload), now)
    if isinstance(result, Principal):
        # Only a well-formed token for alice, valid at `now`, gets through.
        assert isinstance(header, dict) and header.get("alg") == "HS256"
        assert isinstance(payload, dict) and payload["sub"] == "2"
        assert payload["username"] == "alice" and result.role == "ANALYST"
        assert type(payload["exp"]) is int and type(payload["iat"]) is int
        assert payload["iat"] <= now < payload["exp"]
        assert result.expires_at == payload["exp"]
        event("accepted")
    else:
        assert is_failure(result)


@SETTINGS
@given(data=st.data())
def test_any_change_to_a_valid_token_is_refused(tmp_path_factory: Any, data: st.DataObject) -> None:
    auth = auth_for(tmp_path_factory)
    token = issue_token(SECRET, ALICE, 3600, NOW)
    assert isinstance(auth.verify(token, NOW), Principal)
    index = data.draw(st.integers(0, len(token) - 1), label="index")
    replacement = data.draw(st.characters(codec="ascii").filter(lambda c: c != token[index]))
    mutated = token[:index] + replacement + token[index + 1 :]
    assert is_failure(auth.verify(mutated, NOW))
    assert is_failure(auth.verify(token[:index], NOW))
    assert is_failure(auth.verify(token + replacement, NOW))


def expected_valid(claims: dict[str, Any], now: float) -> bool:
    """The oracle: what `verify` must accept, written out independently."""
    times = {name: claims.get(name) for name in ("iat", "exp", "nbf")}
    if any(type(v) is not int for k, v in times.items() if k != "nbf" or "nbf" in claims):
        return False
    iat, exp = claims["iat"], claims["exp"]
    nbf = claims.get("nbf", iat)
    return (
        claims.get("sub") == "2"
        and claims.get("username") == "alice"
        and claims.get("gen") == ALICE.generation
        and iat <= now < exp
        and nbf <= now
    )


@SETTINGS
@given(claims=near_valid(), now=st.floats(min_value=NOW - 150, max_value=NOW + 150))
def test_near_valid_claims_are_accepted_exactly_when_valid(
    tmp_path_factory: Any, claims: dict[str, Any], now: float
) -> None:
    result = auth_for(tmp_path_factory).verify(signed({"alg": "HS256", "typ": "JWT"}, claims), now)
    assert isinstance(result, Principal) == expected_valid(claims, now), result
    event("accepted" if isinstance(result, Principal) else "refused")
    if isinstance(result, Principal):
        assert result == Principal(
            id=2,
            username="alice",
            role="ANALYST",
            expires_at=float(claims["exp"]),
            generation=ALICE.generation,
        )
