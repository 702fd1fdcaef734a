"""Tokens: the secret file, issuing, and every forgery we know of being refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import stat
import time
from pathlib import Path
from typing import Any

import jwt
import msgspec
import pytest
import yaml

from leireye.accounts.principal import AuthFailure, Principal
from leireye.accounts.tokens import (
    BAD_CLAIMS,
    MALFORMED,
    OLD_GENERATION,
    REASONS,
    UNKNOWN_USER,
    Authenticator,
    issue_token,
    load_or_create_secret,
)
from leireye.accounts.useredit import add_user, edit_users_file, remove_user, update_user
from leireye.accounts.users import UserStore
from leireye.config import Config, parse_config
from leireye.errors import ConfigError
from tests.accounts import make_user

SECRET = bytes(range(64))
NOW = 1_700_000_000.0
ALICE = make_user(2, "alice", "ANALYST", "alice's password")
ADMIN_ROW = msgspec.to_builtins(make_user(1, "admin", "ADMIN", "admin's password"))
ALICE_ROW = msgspec.to_builtins(ALICE)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: Any, key: bytes = SECRET) -> str:
    """A token signed with HMAC-SHA256 by hand, whatever PyJWT would allow us to encode."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def claims(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "sub": "2",
        "username": "alice",
        "role": "ANALYST",
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 3600,
        "jti": "j",
        "gen": ALICE.generation,
    }
    base.update(changes)
    return {key: value for key, value in base.items() if value is not None}


HS256 = {"alg": "HS256", "typ": "JWT"}


@pytest.fixture
def users_path(tmp_path: Path) -> Path:
    path = tmp_path / "users.yaml"
    write_users(path, [ADMIN_ROW, ALICE_ROW])
    return path


def write_users(path: Path, users: list[dict[str, Any]]) -> None:
    path.write_text(yaml.safe_dump({"next_id": 10, "users": users}))


@pytest.fixture
def auth(users_path: Path) -> Authenticator:
    return Authenticator(SECRET, UserStore(users_path))


def refused(result: object, reason: str | None = None) -> bool:
    if not isinstance(result, AuthFailure) or result.reason not in REASONS:
        return False
    return reason is None or result.reason == reason


# -- issuing and accepting ----------------------------------------------------------------------


def test_a_valid_token_gives_the_principal(auth: Authenticator) -> None:
    token = issue_token(SECRET, ALICE, 3600, NOW)
    assert auth.verify(token, NOW) == Principal(
        id=2, username="alice", role="ANALYST", expires_at=NOW + 3600,
        generation=ALICE.generation,
    )  # fmt: skip
    assert auth.verify(token, NOW + 3599) == auth.verify(token, NOW)


def test_issued_claims(auth: Authenticator) -> None:
    token = issue_token(SECRET, ALICE, 60, NOW + 0.7)
    header = jwt.get_unverified_header(token)
    body = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert header["alg"] == "HS256"
    assert body["sub"] == "2" and body["username"] == "alice" and body["role"] == "ANALYST"
    assert body["gen"] == ALICE.generation and "crd" not in body
    assert body["iat"] == body["nbf"] == int(NOW) and body["exp"] == int(NOW) + 60
    assert isinstance(body["jti"], str) and len(body["jti"]) >= 16
    assert body["jti"] != jwt.decode(
        issue_token(SECRET, ALICE, 60, NOW), SECRET, algorithms=["HS256"],
        options={"verify_exp": False},
    )["jti"]  # fmt: skip


def test_the_clock_is_the_callers_not_pyjwts(auth: Authenticator) -> None:
    # Issued and checked in 2001: PyJWT's own clock would call this expired.
    token = issue_token(SECRET, ALICE, 60, 1_000_000_000)
    assert isinstance(auth.verify(token, 1_000_000_030), Principal)
    assert refused(auth.verify(token, 1_000_000_060), "expired")
    # Issued far in the future, checked then: valid, although PyJWT would see iat ahead of now.
    later = time.time() + 10 * 365 * 86400
    assert isinstance(auth.verify(issue_token(SECRET, ALICE, 60, later), later), Principal)


def test_a_clock_that_is_not_a_number_refuses_everything(auth: Authenticator) -> None:
    token = issue_token(SECRET, ALICE, 3600, NOW)
    for now in (float("nan"), float("inf"), float("-inf")):
        assert refused(auth.verify(token, now))


def test_short_secrets_are_refused_everywhere(users_path: Path) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        issue_token(b"k" * 31, ALICE, 60, NOW)
    with pytest.raises(ValueError, match="32 bytes"):
        Authenticator(b"k" * 31, UserStore(users_path))
    with pytest.raises(ValueError, match="ttl"):
        issue_token(SECRET, ALICE, 0, NOW)


# -- forgeries ----------------------------------------------------------------------------------


def test_alg_none_is_refused(auth: Authenticator) -> None:
    body = b64(json.dumps(claims()).encode())
    head = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    assert refused(auth.verify(f"{head}.{body}.", NOW))
    assert refused(auth.verify(f"{head}.{body}.{b64(bytes(32))}", NOW))
    assert refused(auth.verify(forge({"alg": "none"}, claims()), NOW))
    assert refused(auth.verify(forge({"alg": "NONE"}, claims()), NOW))


def test_a_wrong_key_is_refused(auth: Authenticator) -> None:
    assert refused(auth.verify(issue_token(b"x" * 64, ALICE, 3600, NOW), NOW), "bad signature")
    assert refused(auth.verify(forge(HS256, claims(), SECRET[:-1] + b"!"), NOW), "bad signature")


def test_other_hmac_algorithms_are_refused(auth: Authenticator) -> None:
    assert refused(auth.verify(jwt.encode(claims(), SECRET, algorithm="HS512"), NOW))
    assert refused(auth.verify(forge({"alg": "HS384"}, claims()), NOW))


def test_rs256_and_the_public_key_as_hmac_secret_are_refused(users_path: Path) -> None:
    rsa = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.rsa")
    serialization = pytest.importorskip("cryptography.hazmat.primitives.serialization")
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    auth = Authenticator(SECRET, UserStore(users_path))
    assert refused(auth.verify(jwt.encode(claims(), private, algorithm="RS256"), NOW))
    # The classic confusion: HS256 keyed with the RSA public key, which the server might use
    # as its "secret" if it took the algorithm from the token.
    assert refused(auth.verify(forge(HS256, claims(), public_pem), NOW))
    # Even a server whose secret *is* that PEM refuses to use it as an HMAC key.
    confused = Authenticator(public_pem, UserStore(users_path))
    assert refused(confused.verify(forge(HS256, claims(), public_pem), NOW))


@pytest.mark.parametrize(
    ("changes", "now", "reason"),
    [
        ({}, NOW + 3600, "expired"),  # exp is exclusive
        ({}, NOW + 10_000, "expired"),
        ({"nbf": int(NOW) + 10}, NOW, "not yet valid"),
        ({"iat": int(NOW) + 10, "nbf": None}, NOW, "not yet valid"),
    ],
    ids=["exp-now", "expired", "nbf-future", "iat-future"],
)
def test_times(auth: Authenticator, changes: dict[str, Any], now: float, reason: str) -> None:
    assert refused(auth.verify(forge(HS256, claims(**changes)), now), reason)


def test_leeway_applies_to_every_time(users_path: Path) -> None:
    auth = Authenticator(SECRET, UserStore(users_path), leeway_s=5)
    assert isinstance(auth.verify(forge(HS256, claims()), NOW + 3604), Principal)
    assert refused(auth.verify(forge(HS256, claims()), NOW + 3605))
    assert isinstance(auth.verify(forge(HS256, claims(nbf=int(NOW) + 5)), NOW), Principal)
    assert refused(auth.verify(forge(HS256, claims(iat=int(NOW) + 6)), NOW))
    # Only reachable with a leeway: a token that expires when it is issued.
    assert refused(auth.verify(forge(HS256, claims(exp=int(NOW))), NOW), "bad claims")


@pytest.mark.parametrize("missing", ["exp", "iat", "sub", "username", "gen"])
def test_missing_claims_are_refused(auth: Authenticator, missing: str) -> None:
    assert refused(auth.verify(forge(HS256, claims(**{missing: None})), NOW))


@pytest.mark.parametrize(
    "changes",
    [
        {"exp": "9999999999"},
        {"iat": str(int(NOW))},
        {"nbf": str(int(NOW))},
        {"exp": float(NOW + 3600)},
        {"exp": True},
        {"exp": [int(NOW) + 3600]},
        {"sub": 2},
        {"sub": "02"},
        {"sub": "2 "},
        {"sub": "0"},
        {"sub": "99999999999"},
        {"username": ["alice"]},
        {"gen": 7},
        {"gen": [ALICE.generation]},
    ],
    ids=repr,
)
def test_claims_of_the_wrong_type_are_refused(auth: Authenticator, changes: dict[str, Any]) -> None:
    assert refused(auth.verify(forge(HS256, claims(**changes)), NOW))


def test_exp_as_a_string_is_refused_by_our_own_check(auth: Authenticator) -> None:
    token = forge(HS256, claims(exp="9999999999"))
    assert refused(auth.verify(token, NOW), "bad claims")


def test_pyjwt_alone_would_accept_exp_as_a_string() -> None:
    # Why we check the types ourselves (FIELD-NOTES): keep this pinned while PyJWT behaves so.
    token = forge(HS256, claims(exp="9999999999"))
    body = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_iat": False})
    assert body["exp"] == "9999999999"


def test_a_tampered_payload_is_refused(auth: Authenticator) -> None:
    token = issue_token(SECRET, ALICE, 3600, NOW)
    head, _, sig = token.split(".")
    body = b64(json.dumps(claims(sub="1", username="admin", role="ADMIN")).encode())
    assert refused(auth.verify(f"{head}.{body}.{sig}", NOW))


def test_a_truncated_token_is_refused(auth: Authenticator) -> None:
    token = issue_token(SECRET, ALICE, 3600, NOW)
    for cut in (1, 2, 10, 43, 44, len(token) // 2, len(token) - 1):
        assert refused(auth.verify(token[:cut], NOW))
        assert refused(auth.verify(token[cut:], NOW))


def test_a_non_canonical_encoding_of_the_same_token_is_refused(auth: Authenticator) -> None:
    token = issue_token(SECRET, ALICE, 3600, NOW)
    # 43 base64url characters carry 258 bits for a 256-bit signature: the last character's two
    # spare bits are ignored by the decoder, so another last character decodes the same.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(token[-1])
    twin = token[:-1] + alphabet[last ^ 1]
    assert base64.urlsafe_b64decode(twin.split(".")[2] + "=") == base64.urlsafe_b64decode(
        token.split(".")[2] + "="
    )
    assert refused(auth.verify(twin, NOW))


@pytest.mark.parametrize(
    ("codec", "part"),
    [("utf-16-le", 0), ("utf-16", 1), ("utf-32-be", 1), ("utf-8-sig", 0), ("latin-1", 1)],
)
def test_a_header_or_claims_not_in_utf8_are_refused_even_when_signed(
    auth: Authenticator, codec: str, part: int
) -> None:
    """`json.loads` would read UTF-16/32 or a BOM (importing that codec on first use, which an
    unprivileged worker may be unable to); RFC 7519 says UTF-8."""
    parts = [json.dumps(HS256), json.dumps(claims(username="alicé"), ensure_ascii=False)]
    raw = [p.encode(codec if i == part else "utf-8") for i, p in enumerate(parts)]
    signing = f"{b64(raw[0])}.{b64(raw[1])}"
    token = f"{signing}.{b64(hmac.new(SECRET, signing.encode(), hashlib.sha256).digest())}"
    assert refused(auth.verify(token, NOW), MALFORMED)


def test_an_oversized_token_is_refused_quickly(auth: Authenticator) -> None:
    valid = issue_token(SECRET, ALICE, 3600, NOW)
    huge = forge(HS256, {**claims(), "pad": "x" * 1_000_000})
    for token in (huge, valid + "A" * 1_000_000, "a" * 1_000_000, "." * 1_000_000):
        start = time.perf_counter()
        assert refused(auth.verify(token, NOW))
        assert time.perf_counter() - start < 0.05


def test_an_unknown_crit_header_is_refused(auth: Authenticator) -> None:
    assert refused(auth.verify(forge({**HS256, "crit": ["exp"], "exp": 1}, claims()), NOW))
    assert refused(auth.verify(forge({**HS256, "crit": ["x-leireye"]}, claims()), NOW))
    assert refused(auth.verify(forge({**HS256, "crit": "b64"}, claims()), NOW))


def test_detached_payload_tokens_are_refused(auth: Authenticator) -> None:
    token = forge({**HS256, "b64": False, "crit": ["b64"]}, claims())
    assert refused(auth.verify(token, NOW))


@pytest.mark.parametrize(
    "garbage",
    ["", ".", "..", "a.b.c", "Bearer x", "eyJ.eyJ.eyJ", "ünïcode.ü.ü", "\x00" * 10, "🙂" * 50],
)
def test_garbage_is_refused(auth: Authenticator, garbage: str) -> None:
    assert refused(auth.verify(garbage, NOW))


def test_deeply_nested_json_is_refused(auth: Authenticator) -> None:
    deep = b64(b"[" * 3000)
    assert refused(auth.verify(f"{deep}.{b64(b'{}')}.{b64(bytes(32))}", NOW))
    assert refused(auth.verify(forge(HS256, claims()).replace(".", f".{deep}", 1), NOW))


def test_non_json_segments_are_refused(auth: Authenticator) -> None:
    sig = b64(bytes(32))
    for head, body in [("e30", "bm90IGpzb24"), ("WzFd", "e30"), ("bnVsbA", "e30")]:
        assert refused(auth.verify(f"{head}.{body}.{sig}", NOW))
    assert refused(auth.verify(forge(HS256, [1, 2]), NOW))
    assert refused(auth.verify(forge(HS256, "claims"), NOW))


# -- the users file decides ---------------------------------------------------------------------


def test_a_removed_user_is_refused(auth: Authenticator, users_path: Path) -> None:
    token = issue_token(SECRET, ALICE, 3600, NOW)
    assert isinstance(auth.verify(token, NOW), Principal)
    write_users(users_path, [ADMIN_ROW])
    assert refused(auth.verify(token, NOW), "unknown user")


def test_the_role_comes_from_the_users_file(auth: Authenticator, users_path: Path) -> None:
    token = issue_token(SECRET, ALICE, 3600, NOW)
    write_users(users_path, [{**ALICE_ROW, "role": "VIEWER"}])
    principal = auth.verify(token, NOW)
    assert isinstance(principal, Principal) and principal.role == "VIEWER"
    # A token claiming a higher role than the file's gets the file's.
    forged_role = forge(HS256, claims(role="ADMIN"))
    principal = auth.verify(forged_role, NOW)
    assert isinstance(principal, Principal) and principal.role == "VIEWER"


def test_a_reused_id_does_not_inherit_old_tokens(auth: Authenticator, users_path: Path) -> None:
    token = issue_token(SECRET, ALICE, 3600, NOW)
    write_users(users_path, [{**ALICE_ROW, "username": "mallory"}])
    assert refused(auth.verify(token, NOW), "unknown user")


def test_a_token_without_a_generation_is_refused(auth: Authenticator) -> None:
    """No claim for "a version before it": a token must carry `gen` (the old `crd` is not it)."""
    assert isinstance(auth.verify(forge(HS256, claims()), NOW), Principal)
    assert refused(auth.verify(forge(HS256, claims(gen=None)), NOW), BAD_CLAIMS)
    crd = claims(gen=None, crd="0123456789abcdef")
    assert refused(auth.verify(forge(HS256, crd), NOW), BAD_CLAIMS)


def test_a_token_of_another_generation_is_refused(auth: Authenticator) -> None:
    other = make_user(2, "alice", "ANALYST", "alice's password")
    assert other.generation != ALICE.generation
    assert refused(auth.verify(issue_token(SECRET, other, 3600, NOW), NOW), OLD_GENERATION)
    assert refused(auth.verify(forge(HS256, claims(gen="")), NOW), OLD_GENERATION)


def test_a_user_removed_and_created_again_as_admin_does_not_inherit_old_tokens(
    tmp_path: Path,
) -> None:
    """The finding: create a user, take a token, remove the user, create the same name again
    as ADMIN. The new user must not get the old id, and the old token must not open anything,
    let alone as ADMIN."""
    path = tmp_path / "users.yaml"
    edit_users_file(path, lambda f: add_user(f, "root", "ADMIN", "root's password"))
    old = edit_users_file(path, lambda f: add_user(f, "mallory", "VIEWER", "mallory pass 1"))
    auth = Authenticator(SECRET, UserStore(path))
    token = issue_token(SECRET, old, 3600, NOW)
    assert isinstance(auth.verify(token, NOW), Principal)
    edit_users_file(path, lambda f: remove_user(f, "mallory"))
    new = edit_users_file(path, lambda f: add_user(f, "mallory", "ADMIN", "mallory pass 1"))
    assert new.id != old.id
    assert refused(auth.verify(token, NOW), UNKNOWN_USER)
    # Even a file edited by hand to give the new user the old id: another generation.
    hand_edited = msgspec.to_builtins(msgspec.structs.replace(new, id=old.id))
    write_users(path, [hand_edited])
    assert refused(auth.verify(token, NOW), OLD_GENERATION)


def test_a_new_password_ends_every_earlier_token_a_role_change_none(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    user = edit_users_file(path, lambda f: add_user(f, "bob", "ANALYST", "bob's password"))
    auth = Authenticator(SECRET, UserStore(path))
    token = issue_token(SECRET, user, 3600, NOW)
    edit_users_file(path, lambda f: update_user(f, "bob", role="VIEWER"))
    principal = auth.verify(token, NOW)
    assert isinstance(principal, Principal) and principal.role == "VIEWER"
    edit_users_file(path, lambda f: update_user(f, "bob", password="bob's password"))  # same one
    assert refused(auth.verify(token, NOW), OLD_GENERATION)


def test_a_broken_users_file_refuses_everyone(auth: Authenticator, users_path: Path) -> None:
    token = issue_token(SECRET, ALICE, 3600, NOW)
    users_path.write_text("users: [{id: 2, username: alice, role: ANALYST, extra: 1}]\n")
    assert refused(auth.verify(token, NOW))


def test_the_reason_is_logged_at_debug_without_the_token(
    auth: Authenticator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="leireye.accounts.tokens")
    token = issue_token(SECRET, ALICE, 3600, NOW)
    assert refused(auth.verify(token, NOW + 7200))
    tampered = token[:-5] + "AAAAA"
    assert refused(auth.verify(tampered, NOW))
    messages = [r.getMessage() for r in caplog.records if r.name == "leireye.accounts.tokens"]
    assert any("expired" in m for m in messages)
    assert any("InvalidSignatureError" in m for m in messages)
    assert all(
        r.levelno == logging.DEBUG for r in caplog.records if r.name == "leireye.accounts.tokens"
    )
    for part in token.split(".") + tampered.split("."):
        assert part not in caplog.text


# -- the secret ---------------------------------------------------------------------------------


def config_in(tmp_path: Path, **auth: Any) -> Config:
    return parse_config({"state_dir": str(tmp_path / "state"), "auth": auth})


def test_the_secret_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    config = config_in(tmp_path)
    old = os.umask(0)
    try:
        secret = load_or_create_secret(config)
    finally:
        os.umask(old)
    path = config.state_path("secret.key")
    assert len(secret) == 64 and path.read_bytes() == secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(config) == secret


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_the_secret_file_is_roots_alone(tmp_path: Path) -> None:
    config = config_in(tmp_path)
    secret = load_or_create_secret(config)
    st = config.state_path("secret.key").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o600)
    assert load_or_create_secret(config) == secret


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_a_secret_file_of_another_user_is_refused(tmp_path: Path) -> None:
    """Earlier versions gave the secret to the web user (`nobody`): it may have leaked."""
    config = config_in(tmp_path)
    load_or_create_secret(config)
    os.chown(config.state_path("secret.key"), 65534, 65534)
    with pytest.raises(ConfigError, match="owned by another user"):
        load_or_create_secret(config)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_a_secret_file_open_to_others_is_refused_not_fixed(tmp_path: Path, mode: int) -> None:
    config = config_in(tmp_path)
    load_or_create_secret(config)
    path = config.state_path("secret.key")
    path.chmod(mode)
    with pytest.raises(ConfigError, match="group or others"):
        load_or_create_secret(config)
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_a_short_secret_file_is_refused(tmp_path: Path) -> None:
    config = config_in(tmp_path)
    path = config.state_path("secret.key")
    path.parent.mkdir()
    path.write_bytes(b"k" * 31)
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="at least 32"):
        load_or_create_secret(config)
    path.write_bytes(b"k" * 32)
    assert load_or_create_secret(config) == b"k" * 32


def test_a_secret_path_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    config = config_in(tmp_path)
    config.state_path("secret.key").mkdir(parents=True, mode=0o700)
    with pytest.raises(ConfigError, match="regular file"):
        load_or_create_secret(config)


def test_the_secret_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = config_in(tmp_path, secret_env="LEIREYE_TEST_SECRET")
    monkeypatch.setenv("LEIREYE_TEST_SECRET", "s" * 32)
    assert load_or_create_secret(config) == b"s" * 32
    assert not config.state_path("secret.key").exists()
    monkeypatch.setenv("LEIREYE_TEST_SECRET", "s" * 31)
    with pytest.raises(ConfigError, match=r"auth.secret_env.*31 bytes.*at least 32"):
        load_or_create_secret(config)
    monkeypatch.delenv("LEIREYE_TEST_SECRET")
    with pytest.raises(ConfigError, match="LEIREYE_TEST_SECRET is not set"):
        load_or_create_secret(config)


# -- `leireye token` ----------------------------------------------------------------------------


def run_token_cli(tmp_path: Path, *argv: str) -> int:
    import argparse

    from leireye.cli.token import add_token_parser

    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state")}))
    parser = argparse.ArgumentParser(prog="leireye")
    add_token_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["token", "-c", str(config_file), *argv])
    code: int = args.func(args)
    return code


def test_token_cli_prints_only_a_valid_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from leireye.accounts.users import ensure_users_file

    users = tmp_path / "state" / "users.yaml"
    ensure_users_file(users)
    assert run_token_cli(tmp_path, "--user", "admin", "--ttl", "120") == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    config = parse_config({"state_dir": str(tmp_path / "state")})
    auth = Authenticator(load_or_create_secret(config), UserStore(users))
    principal = auth.verify(out.strip(), time.time())
    assert isinstance(principal, Principal) and principal.username == "admin"
    assert principal.expires_at is not None and principal.expires_at - time.time() <= 120


def test_token_cli_errors(tmp_path: Path) -> None:
    from leireye.accounts.users import ensure_users_file
    from leireye.errors import LeirEyeError

    with pytest.raises(LeirEyeError, match="no users file"):
        run_token_cli(tmp_path, "--user", "admin")
    ensure_users_file(tmp_path / "state" / "users.yaml")
    with pytest.raises(LeirEyeError, match="no user named 'bob'"):
        run_token_cli(tmp_path, "--user", "bob")
    with pytest.raises(LeirEyeError, match="--ttl"):
        run_token_cli(tmp_path, "--user", "admin", "--ttl", "0")
