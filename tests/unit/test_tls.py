"""web.tls: the config rule, the self-signed certificate `auto` makes, fingerprints and pins."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from leireye.client.errors import CertificateMismatch
from leireye.client.tls import ClientTls, client_tls
from leireye.config import Config, TlsFiles, is_loopback, parse_config
from leireye.errors import ConfigError
from leireye.text import fingerprint, parse_fingerprint
from leireye.tls import (
    AUTO_CERT,
    AUTO_KEY,
    cert_fingerprint,
    certificate_names,
    ensure_certificate,
    server_context,
    tls_paths,
)

NOW = datetime.datetime(2026, 12, 3, 9, 0, tzinfo=datetime.UTC)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "sensor.example", ""])
def test_a_network_host_without_tls_is_refused_naming_web_tls(host: str) -> None:
    with pytest.raises(ConfigError, match=r"web\.tls is not set.*off"):
        parse_config({"web": {"host": host}})


@pytest.mark.parametrize("tls", ["off", "auto", {"cert": "c.pem", "key": "k.pem"}])
def test_a_network_host_with_tls_said_explicitly_is_allowed(tls: object) -> None:
    config = parse_config({"web": {"host": "0.0.0.0", "tls": tls}})
    assert config.web.tls == (TlsFiles("c.pem", "k.pem") if isinstance(tls, dict) else tls)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost", "LOCALHOST"])
def test_a_loopback_host_needs_no_tls(host: str) -> None:
    assert is_loopback(host)
    assert parse_config({"web": {"host": host}}).web.tls is None


def test_tls_values_outside_the_three_forms_fail_with_the_path() -> None:
    with pytest.raises(ConfigError, match=r"web\.tls"):
        parse_config({"web": {"tls": "on"}})
    with pytest.raises(ConfigError, match=r"web\.tls"):
        parse_config({"web": {"tls": {"cert": "c.pem"}}})


def test_tls_paths_resolve_against_the_state_dir(tmp_path: Path) -> None:
    files = parse_config({"state_dir": str(tmp_path), "web": {"tls": {"cert": "c", "key": "/k"}}})
    paths = tls_paths(files)
    assert paths is not None and (paths.cert, paths.key) == (tmp_path / "c", Path("/k"))
    assert tls_paths(Config()) is None
    assert tls_paths(parse_config({"web": {"tls": "off"}})) is None


def test_certificate_names_skip_wildcards_and_repeats() -> None:
    assert certificate_names("0.0.0.0", "box") == (["localhost", "box"], ["127.0.0.1", "::1"])
    assert certificate_names("10.0.0.5", "Box") == (
        ["localhost", "box"],
        ["10.0.0.5", "127.0.0.1", "::1"],
    )
    assert certificate_names("::", "localhost") == (["localhost"], ["127.0.0.1", "::1"])


def _auto(tmp_path: Path, host: str = "10.0.0.5") -> Config:
    return parse_config({"state_dir": str(tmp_path), "web": {"host": host, "tls": "auto"}})


def test_auto_makes_a_p256_certificate_for_a_year_naming_every_address(tmp_path: Path) -> None:
    made = ensure_certificate(_auto(tmp_path), NOW)
    cert = x509.load_pem_x509_certificate((tmp_path / AUTO_CERT).read_bytes())
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    assert cert.not_valid_after_utc - NOW == datetime.timedelta(days=365)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert set(sans.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address(a) for a in ("10.0.0.5", "127.0.0.1", "::1")
    }
    assert made == cert_fingerprint(tmp_path / AUTO_CERT)


def test_auto_key_is_0600_and_the_certificate_world_readable(tmp_path: Path) -> None:
    ensure_certificate(_auto(tmp_path), NOW)
    assert stat.S_IMODE((tmp_path / AUTO_KEY).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / AUTO_CERT).stat().st_mode) == 0o644


def test_auto_keeps_its_certificate_and_replaces_an_expired_one(tmp_path: Path) -> None:
    first = ensure_certificate(_auto(tmp_path), NOW)
    assert first is not None
    assert ensure_certificate(_auto(tmp_path), NOW + datetime.timedelta(days=364)) is None
    assert cert_fingerprint(tmp_path / AUTO_CERT) == first
    later = ensure_certificate(_auto(tmp_path), NOW + datetime.timedelta(days=366))
    assert later is not None and later != first


def test_the_fingerprint_is_the_sha256_of_the_der_in_colon_hex(tmp_path: Path) -> None:
    made = ensure_certificate(_auto(tmp_path), NOW)
    der = ssl.PEM_cert_to_DER_cert((tmp_path / AUTO_CERT).read_text())
    assert made == fingerprint(der)
    assert made is not None and len(made) == 95 and made.count(":") == 31
    assert made == made.upper()


def test_the_self_signed_certificate_verifies_as_its_own_ca(tmp_path: Path) -> None:
    """What `--cafile tls-cert.pem` relies on: a client context with the certificate as its only
    CA accepts the server's handshake for 127.0.0.1, and refuses a name it does not hold."""
    config = _auto(tmp_path, "127.0.0.1")
    ensure_certificate(config, datetime.datetime.now(datetime.UTC))
    paths = tls_paths(config)
    assert paths is not None
    server = server_context(paths)
    client = ssl.create_default_context(cafile=str(paths.cert))
    for name, ok in (("127.0.0.1", True), ("localhost", True), ("other.example", False)):
        assert _handshake(server, client, name) is ok, name


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, name: str) -> bool:
    """A TLS handshake between two contexts over memory BIOs (no socket)."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    s = server.wrap_bio(s_in, s_out, server_side=True)
    c = client.wrap_bio(c_in, c_out, server_hostname=name)
    for _ in range(10):
        for end in (c, s):
            try:
                end.do_handshake()
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLCertVerificationError:
                return False
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if c.version() and s.version():
            try:
                c.do_handshake()
                return True
            except ssl.SSLWantReadError:
                continue
    return False


def test_files_that_do_not_load_fail_naming_web_tls(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("not a certificate\n")
    (tmp_path / "k.pem").write_text("not a key\n")
    files = {"cert": "c.pem", "key": "k.pem"}
    config = parse_config({"state_dir": str(tmp_path), "web": {"tls": files}})
    with pytest.raises(ConfigError, match=r"web\.tls: cannot load"):
        ensure_certificate(config, NOW)
    with pytest.raises(ConfigError, match=r"web\.tls: .* no PEM certificate"):
        cert_fingerprint(tmp_path / "c.pem")


@pytest.mark.parametrize(
    "text",
    ["{colons}", "{bare}", "{lower}", "sha256:{colons}", "SHA256={bare}", "  {colons}\n"],
)
def test_a_pin_is_read_in_the_usual_spellings(text: str) -> None:
    digest = bytes(range(32))
    colons = ":".join(f"{b:02X}" for b in digest)
    spelled = text.format(colons=colons, bare=colons.replace(":", ""), lower=colons.lower())
    assert parse_fingerprint(spelled) == digest


@pytest.mark.parametrize("text", ["", "AB:CD", "zz" * 32, "00" * 33, "sha1:" + "00" * 32])
def test_a_malformed_pin_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="SHA-256 fingerprint"):
        parse_fingerprint(text)


def test_a_pin_accepts_its_certificate_and_refuses_any_other(tmp_path: Path) -> None:
    made = ensure_certificate(_auto(tmp_path), NOW)
    assert made is not None
    der = ssl.PEM_cert_to_DER_cert((tmp_path / AUTO_CERT).read_text())
    pinned = ClientTls.create(pinned=made)
    pinned.check(der, "here")
    with pytest.raises(CertificateMismatch, match="not the pinned"):
        pinned.check(der[:-1] + bytes([der[-1] ^ 1]), "here")
    with pytest.raises(CertificateMismatch):
        pinned.check(None, "here")
    assert pinned.context.verify_mode == ssl.CERT_NONE  # the pin is the trust
    ClientTls.create().check(b"anything", "here")  # no pin: the CAs decide


def test_tls_options_need_a_secure_url() -> None:
    assert client_tls("ws://127.0.0.1:8000/ws/capture", None, None) is None
    with pytest.raises(ValueError, match="wss://"):
        client_tls("ws://127.0.0.1:8000/ws/capture", None, "00" * 32)
    assert client_tls("wss://127.0.0.1:8000/ws/capture", None, None) is not None


def test_tls_fingerprint_and_check_config_show_the_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from leireye.cli import main

    path = tmp_path / "c.yaml"
    path.write_text(f"state_dir: {tmp_path}\nweb: {{host: 0.0.0.0, tls: auto}}\n")
    assert main(["tls-fingerprint", "-c", str(path)]) == 2
    assert "no certificate yet" in capsys.readouterr().err
    made = ensure_certificate(_auto(tmp_path), NOW)
    assert main(["tls-fingerprint", "-c", str(path)]) == 0
    assert capsys.readouterr().out == f"{made}\n"
    assert main(["check-config", "-c", str(path)]) == 0
    assert f"SHA-256 {made}" in capsys.readouterr().out
    path.write_text(f"state_dir: {tmp_path}\n")
    assert main(["tls-fingerprint", "-c", str(path)]) == 2
    assert "web.tls is off" in capsys.readouterr().err
