"""Approver keys: Ed25519. The private key stays with the person (a 0600 PEM file, optionally
passphrase-encrypted); its public half goes into ``policies/approvers.yaml``."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from appliance.errors import MemoError

PREFIX = "ed25519:"


def public_key_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PREFIX + base64.b64encode(raw).decode()


def parse_public_key(text: str) -> Ed25519PublicKey:
    if not text or not text.startswith(PREFIX):
        raise MemoError(f"not an approver public key: {text!r} (expected 'ed25519:…' from `memo approvals keygen`)")
    try:
        raw = base64.b64decode(text[len(PREFIX):], validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise MemoError(f"not a valid Ed25519 public key: {text!r}") from None


def generate(path: Path, passphrase: str | None = None) -> str:
    """Write a new private key to ``path`` (0600, never overwritten); return the public key text."""
    key = Ed25519PrivateKey.generate()
    enc = (serialization.BestAvailableEncryption(passphrase.encode()) if passphrase
           else serialization.NoEncryption())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    path = path.expanduser()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise MemoError(f"{path} already exists: choose another file (a key is never overwritten)") from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    return public_key_text(key)


def load_private(path: Path, passphrase: str | None = None) -> Ed25519PrivateKey:
    path = path.expanduser()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MemoError(f"cannot read approver key {path}: {exc.strerror}") from None
    if os.stat(path).st_mode & 0o077:
        raise MemoError(f"approver key {path} is readable by others: chmod 600 {path}")
    try:
        key = serialization.load_pem_private_key(data, passphrase.encode() if passphrase else None)
    except TypeError:
        raise MemoError(f"approver key {path} is passphrase-protected: set MEMO_APPROVER_PASSPHRASE or answer the prompt") from None
    except ValueError:
        raise MemoError(f"approver key {path} could not be opened (wrong passphrase or not a PEM private key)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise MemoError(f"approver key {path} is not an Ed25519 key")
    return key


def verify(public_key: str, signature: bytes, message: bytes) -> bool:
    try:
        parse_public_key(public_key).verify(signature, message)
        return True
    except (InvalidSignature, MemoError):
        return False
