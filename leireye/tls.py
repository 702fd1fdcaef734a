"""The sensor's TLS certificate: made on first run (`web.tls: auto`), checked, fingerprinted, and
loaded into the server's `SSLContext`.

`auto` keeps two files in the state dir: `tls-cert.pem` (mode 0644) and `tls-key.pem` (0600,
owned by the supervisor's account, root). The certificate is self-signed, ECDSA P-256, valid for
a year, and names every address a client may use: the bound host when it is a specific one,
`localhost`, `127.0.0.1`, `::1` and the machine's hostname. Clients trust it by pinning its
SHA-256 fingerprint (`leireye tls-fingerprint`) or by using the certificate file as their CA.
An expired certificate is replaced at start (a new fingerprint, shown again); one that does not
name the configured host is kept, with a warning (replacing it would break every pin).

The web workers build their `SSLContext` while still root, so the key never has to be readable
by `web.user`. Only the certificate generation needs `cryptography`, imported when it runs.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from leireye.config import Config, TlsFiles
from leireye.errors import ConfigError
from leireye.text import fingerprint

log = logging.getLogger("leireye.tls")

AUTO_CERT: Final = "tls-cert.pem"
AUTO_KEY: Final = "tls-key.pem"
VALID_DAYS: Final = 365
_ALWAYS: Final = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class TlsPaths:
    cert: Path
    key: Path


def tls_paths(config: Config) -> TlsPaths | None:
    """The certificate and key files `web.tls` names; None when the sensor serves plain HTTP."""
    tls = config.web.tls
    if isinstance(tls, TlsFiles):
        return TlsPaths(config.state_path(tls.cert), config.state_path(tls.key))
    if tls == "auto":
        return TlsPaths(config.state_path(AUTO_CERT), config.state_path(AUTO_KEY))
    return None


def certificate_names(host: str, hostname: str) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) for the subject alternative names: the bound host unless it is
    a wildcard address, localhost and the loopback addresses, and `hostname`."""
    names: list[str] = []
    addresses: list[str] = []
    for name in (host, *_ALWAYS, hostname):
        if not name:
            continue
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            if name.lower() not in names:
                names.append(name.lower())
            continue
        if not address.is_unspecified and str(address) not in addresses:
            addresses.append(str(address))
    return names, addresses


def make_self_signed(
    names: list[str], addresses: list[str], now: datetime.datetime, days: int = VALID_DAYS
) -> tuple[bytes, bytes]:
    """(certificate PEM, unencrypted PKCS#8 key PEM): ECDSA P-256, self-signed, valid from a
    minute before `now` for `days`, with `names` and `addresses` as subject alternative names."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "LeirEye sensor"),
            x509.NameAttribute(NameOID.COMMON_NAME, (names or addresses)[0]),
        ]
    )
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt_names += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def cert_fingerprint(cert: Path) -> str:
    """The SHA-256 fingerprint of the (first) certificate in a PEM file."""
    try:
        pem = cert.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"web.tls: cannot read the certificate {cert}: {exc}") from None
    end = pem.find(ssl.PEM_FOOTER)
    if pem.find(ssl.PEM_HEADER) < 0 or end < 0:
        raise ConfigError(f"web.tls: {cert} holds no PEM certificate")
    try:
        return fingerprint(ssl.PEM_cert_to_DER_cert(pem[: end + len(ssl.PEM_FOOTER)]))
    except ValueError as exc:
        raise ConfigError(f"web.tls: {cert}: {exc}") from None


def ensure_certificate(config: Config, now: datetime.datetime | None = None) -> str | None:
    """Make `auto`'s certificate and key when missing or expired, and check that the files
    `web.tls` names load. The new fingerprint when a certificate was just made (for the CLI to
    show once), else None."""
    paths = tls_paths(config)
    if paths is None:
        return None
    now = now or datetime.datetime.now(datetime.UTC)
    made = None
    if config.web.tls == "auto" and _needs_new(paths, config.web.host, now):
        names, addresses = certificate_names(config.web.host, socket.gethostname())
        cert_pem, key_pem = make_self_signed(names, addresses, now)
        write_pair(paths, cert_pem, key_pem)
        made = cert_fingerprint(paths.cert)
        log.info("web.tls: made a self-signed certificate %s (its fingerprint: `leireye"
                 " tls-fingerprint`)", paths.cert)  # fmt: skip
    server_context(paths)  # fail here, with the reason, rather than in every worker
    return made


def _needs_new(paths: TlsPaths, host: str, now: datetime.datetime) -> bool:
    if not paths.cert.exists() or not paths.key.exists():
        return True
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
    if cert.not_valid_after_utc <= now:
        log.warning("web.tls: %s expired on %s: making a new one", paths.cert,
                    cert.not_valid_after_utc.date())  # fmt: skip
        return True
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        named = {str(v).lower() for v in sans.get_values_for_type(x509.DNSName)}
        named |= {str(v) for v in sans.get_values_for_type(x509.IPAddress)}
    except x509.ExtensionNotFound:
        named = set()
    names, addresses = certificate_names(host, "")
    if host and not (set(names) | set(addresses)) <= named:
        log.warning("web.tls: %s does not name web.host %s: clients that check names will"
                    " refuse it (delete it to make a new one)", paths.cert, host)  # fmt: skip
    return False


def write_pair(paths: TlsPaths, cert_pem: bytes, key_pem: bytes) -> None:
    """Write the key (0600, created afresh, never through a link) and then the certificate."""
    for path in (paths.key, paths.cert):
        path.unlink(missing_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    fd = os.open(paths.key, flags, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key_pem)
    fd = os.open(paths.cert, flags, 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(cert_pem)


def server_context(paths: TlsPaths) -> ssl.SSLContext:
    """The server's context (TLS 1.2 and later) with the certificate chain and key loaded: call it
    while root when the key is readable by root only."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(paths.cert, paths.key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"web.tls: cannot load the certificate {paths.cert} and key {paths.key}: {exc}"
        ) from None
    return context
