"""Development TLS material: a private CA and certificates it signs.

Takes a directory and host names; produces PEM files (keys 0600). Used by `keys init` for the
listener's certificate on a development machine, and by the demo and the tests for loopback
school servers with a CA of their own. Production certificates come from the operator's CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


def _write_private(path: Path, data: bytes) -> None:
    """Everything under keys/ is 0600 in a 0700 directory, certificates included (custody)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(directory: Path, name: str) -> tuple[CertPair, x509.Certificate,
                                                  ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(key, hashes.SHA256()))
    pair = CertPair(directory / "ca.pem", directory / "ca.key")
    _write_private(pair.cert, cert.public_bytes(serialization.Encoding.PEM))
    _write_private(pair.key, _key_pem(key))
    return pair, cert, key


def make_server_cert(directory: Path, stem: str, hosts: list[str], ca_cert: x509.Certificate,
                     ca_key: ec.EllipticCurvePrivateKey, client: bool = False) -> CertPair:
    """A certificate for `hosts` (names or IP addresses), signed by the CA; a TLS server's,
    or with `client` a TLS client's (a sender's MTA authenticating by certificate)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client
                                                  else ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pair = CertPair(directory / f"{stem}.pem", directory / f"{stem}.key")
    _write_private(pair.cert, cert.public_bytes(serialization.Encoding.PEM))
    _write_private(pair.key, _key_pem(key))
    return pair


def make_dev_tls(cert_path: Path, key_path: Path, hosts: list[str]) -> None:
    """`keys init`: a CA beside the listener's certificate, so clients can verify it."""
    directory = cert_path.parent
    _, ca_cert, ca_key = make_ca(directory, "hwc-gateway development CA")
    pair = make_server_cert(directory, "server-tmp", hosts, ca_cert, ca_key)
    os.replace(pair.cert, cert_path)
    os.replace(pair.key, key_path)
