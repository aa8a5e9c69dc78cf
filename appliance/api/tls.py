"""TLS for the HTTP API, served by the appliance itself (no proxy in front to trust or forget).

The certificate and key come from files or from the vault (``memo api tls import``: stored
encrypted like any artefact, decrypted into a sealed memfd only to load them, never onto a disk).
Client certificates are optional: with a CA file, a client without a certificate that CA signed
cannot even complete the handshake, and the bearer token is still required on top.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from appliance.config import current_actor
from appliance.errors import MemoError
from appliance.vault import memfd
from appliance.vault.store import Vault

CERT_FILE = "api/tls/cert.pem"
KEY_FILE = "api/tls/key.pem"
MAX_PEM = 1 << 20


@dataclass(frozen=True)
class TlsMaterial:
    """A PEM certificate chain and its private key, in memory."""

    cert_pem: bytes
    key_pem: bytes

    def describe(self) -> str:
        cert = x509.load_pem_x509_certificate(self.cert_pem)
        return f"{cert.subject.rfc4514_string()}, valid until {cert.not_valid_after_utc:%Y-%m-%d}"


def _read_pem(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MemoError(f"cannot read the TLS {what} {path}: {exc.strerror}") from None
    if len(data) > MAX_PEM or b"-----BEGIN" not in data:
        raise MemoError(f"{path} is not a PEM {what}; give a PEM file (-----BEGIN ...)")
    return data


def check(material: TlsMaterial) -> TlsMaterial:
    """Refuse a certificate that does not parse, has expired or does not match its key."""
    try:
        cert = x509.load_pem_x509_certificate(material.cert_pem)
        key = serialization.load_pem_private_key(material.key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise MemoError(f"TLS certificate or key unreadable ({exc}); give an unencrypted PEM key and its PEM certificate") from None
    if cert.not_valid_after_utc < datetime.now(timezone.utc):
        raise MemoError(f"the TLS certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}; issue a new one")
    if cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) != \
            key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise MemoError("the TLS key does not belong to the certificate; give the matching pair")
    return material


def from_files(cert: Path, key: Path) -> TlsMaterial:
    return check(TlsMaterial(_read_pem(cert, "certificate"), _read_pem(key, "key")))


def import_into_vault(vault: Vault, cert: Path, key: Path, actor: str | None = None) -> TlsMaterial:
    """Store the pair in the vault (encrypted), audited; the key file can then be destroyed."""
    material = from_files(cert, key)
    vault.audit.append(actor or current_actor(), "api.tls.import", None, certificate=material.describe())
    vault.write_file(CERT_FILE, material.cert_pem)
    vault.write_file(KEY_FILE, material.key_pem)
    return material


def from_vault(vault: Vault) -> TlsMaterial:
    if not (vault.file_exists(CERT_FILE) and vault.file_exists(KEY_FILE)):
        raise MemoError("no TLS certificate in the vault; store one with `memo api tls import --cert FILE --key FILE`")
    return check(TlsMaterial(vault.read_file(CERT_FILE), vault.read_file(KEY_FILE)))


def server_context(material: TlsMaterial, client_ca: Path | None = None) -> ssl.SSLContext:
    """A TLS 1.2+ server context; the key goes through a sealed memfd, never a file on disk."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    fds = []
    try:
        paths = []
        for name, data in (("tls-cert", material.cert_pem), ("tls-key", material.key_pem)):
            fd = memfd.create(name)
            fds.append(fd)
            memfd.write_all(fd, data)
            memfd.seal(fd)
            paths.append(f"/proc/self/fd/{fd}")
        ctx.load_cert_chain(paths[0], paths[1])
    except ssl.SSLError as exc:
        raise MemoError(f"TLS certificate and key refused by OpenSSL ({exc.reason or exc}); check the pair") from None
    finally:
        for fd in fds:
            os.close(fd)
    if client_ca is not None:
        try:
            ctx.load_verify_locations(cafile=str(client_ca))
        except (OSError, ssl.SSLError) as exc:
            raise MemoError(f"cannot load the client CA file {client_ca}: {exc}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
