"""The lab's own certificate authority and the certificate for the LPSE's public name (issue 10
point 4). Made on the workstation in the lab's directory (keys 0600), installed on both sites by
the spse_app role (tls_*_source), trusted by the outsider and the probe. A production site names
its own certificate files instead."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DAYS = 3650


def paths(lab_dir: Path) -> dict[str, Path]:
    d = lab_dir / "tls"
    return {"ca": d / "ca.crt", "ca_key": d / "ca.key", "cert": d / "public.crt", "key": d / "public.key"}


def _write_key(path: Path, key) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    os.chmod(path, 0o600)


def _load_key(path: Path):
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def _names(cert: x509.Certificate) -> list[str]:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        return []


def ensure(lab_dir: Path, public_name: str, lab_name: str) -> dict[str, Path]:
    """The CA (made once) and a certificate for `public_name` signed by it (made again only when
    missing, for another name, or not from this CA). Idempotent."""
    p = paths(lab_dir)
    p["ca"].parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    if not (p["ca"].exists() and p["ca_key"].exists()):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "siaga lab"),
                          x509.NameAttribute(NameOID.COMMON_NAME, f"siaga lab {lab_name} CA")])
        ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(ca_key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
              .not_valid_after(now + datetime.timedelta(days=DAYS))
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                           data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                           encipher_only=False, decipher_only=False), critical=True)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA256()))
        _write_key(p["ca_key"], ca_key)
        p["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        p["cert"].unlink(missing_ok=True)
    ca = x509.load_pem_x509_certificate(p["ca"].read_bytes())
    if p["cert"].exists() and p["key"].exists():
        cert = x509.load_pem_x509_certificate(p["cert"].read_bytes())
        if _names(cert) == [public_name] and cert.issuer == ca.subject and cert.not_valid_after_utc > now + datetime.timedelta(days=30):
            return p
    ca_key = _load_key(p["ca_key"])
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, public_name)]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(public_name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write_key(p["key"], key)
    p["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return p
