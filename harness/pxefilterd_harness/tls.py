"""A throw-away certificate authority for tests that need verified TLS.

:func:`make_ca` writes, into one directory, a self-signed CA certificate and
a server certificate (with its unencrypted key) that the CA signed for
``127.0.0.1`` (subject alternative names ``IP:127.0.0.1`` and
``DNS:localhost``).  A client that trusts ``ca.pem`` (``[ironic] cafile``,
``[keystone_authtoken] cafile``, :func:`client_context`) verifies the server;
a client that trusts only the system store does not.

Uses the ``cryptography`` package (a dependency of openstacksdk, so present
wherever pxefilterd is installed).  Keys are EC P-256: generated in
milliseconds.  Nothing is written outside the given directory.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TlsFiles:
    """Paths of what :func:`make_ca` wrote (all PEM)."""

    ca_cert: Path
    cert: Path
    key: Path


def make_ca(directory: str | os.PathLike[str], *,
            common_name: str = "pxefilterd test CA",
            days: int = 2) -> TlsFiles:
    """Create a CA and a server certificate for 127.0.0.1 in *directory*.

    Writes ``ca.pem`` (the CA certificate: what clients trust),
    ``server.pem`` (the server certificate alone) and ``server-key.pem``
    (its private key, mode 0600).  The CA key is not kept: nothing else can
    ever be signed with it.  Certificates are valid from one hour ago (clock
    skew) for *days* days.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    not_before = now - datetime.timedelta(hours=1)
    not_after = now + datetime.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                            common_name)])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0),
                       critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False,
            key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256()))

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                    "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                       critical=True)
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier
                       .from_issuer_subject_key_identifier(ca_ski),
                       critical=False)
        .sign(ca_key, hashes.SHA256()))

    files = TlsFiles(ca_cert=directory / "ca.pem",
                     cert=directory / "server.pem",
                     key=directory / "server-key.pem")
    pem = serialization.Encoding.PEM
    files.ca_cert.write_bytes(ca_cert.public_bytes(pem))
    files.cert.write_bytes(cert.public_bytes(pem))
    fd = os.open(files.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
    return files


def client_context(cafile: str | os.PathLike[str]) -> ssl.SSLContext:
    """Return a verifying client context that trusts only *cafile*."""
    return ssl.create_default_context(cafile=str(cafile))
