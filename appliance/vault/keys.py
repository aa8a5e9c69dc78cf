"""Key hierarchy: one random data key (DEK) wrapped by key-encryption keys in slots.

A slot is unlocked by a passphrase (Argon2id) or by a key file (HKDF over its bytes). Rekeying
re-wraps the same DEK into new slots, so no data is re-encrypted. ``keyring.json`` is the only vault
file readable without a key; it carries a checksum so that corruption is told apart from a wrong
passphrase, and every slot's parameters are bound to its wrapped key as associated data.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from appliance.config import KdfParams
from appliance.errors import IntegrityError, MemoError, UnlockError
from appliance.vault.atomic import atomic_write

KEYRING_FORMAT = "memo-keyring-1"
MIN_KEYFILE_BYTES = 32
MAX_KEYFILE_BYTES = 1 << 20


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode(), validate=True)


def _canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Secret:
    """What the operator unlocks with: a passphrase, a key file, or both offered."""

    passphrase: str | None = None
    key_file: Path | None = None

    def describe(self) -> str:
        parts = []
        if self.passphrase is not None:
            parts.append("passphrase")
        if self.key_file is not None:
            parts.append(f"key file {self.key_file}")
        return " and ".join(parts) or "nothing"


def read_key_file(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size < MIN_KEYFILE_BYTES or size > MAX_KEYFILE_BYTES:
            raise MemoError(
                f"key file {path} has {size} bytes; it must hold {MIN_KEYFILE_BYTES} B to 1 MiB of "
                "random data (create one with `memo vault keygen FILE`)"
            )
        return path.read_bytes()
    except OSError as exc:
        raise MemoError(f"cannot read key file {path}: {exc.strerror}") from None


def generate_key_file(path: Path) -> None:
    if path.exists():
        raise MemoError(f"{path} already exists; refusing to overwrite a key file")
    atomic_write(path, secrets.token_bytes(64), mode=0o400)


def _passphrase_kek(passphrase: str, slot: dict) -> bytes:
    kdf = Argon2id(
        salt=_unb64(slot["salt"]),
        length=32,
        iterations=slot["iterations"],
        lanes=slot["lanes"],
        memory_cost=slot["memory_kib"],
    )
    return kdf.derive(passphrase.encode("utf-8"))


def _keyfile_kek(material: bytes, slot: dict) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=_unb64(slot["salt"]), info=b"memo-keyfile-v1"
    ).derive(material)


def _slot_aad(vault_id: str, slot: dict) -> bytes:
    params = {k: v for k, v in slot.items() if k not in ("nonce", "wrapped")}
    return _canonical({"vault_id": vault_id, "slot": params})


def _wrap(vault_id: str, slot: dict, kek: bytes, dek: bytes) -> dict:
    nonce = os.urandom(12)
    wrapped = AESGCM(kek).encrypt(nonce, dek, _slot_aad(vault_id, slot))
    return {**slot, "nonce": _b64(nonce), "wrapped": _b64(wrapped)}


def make_slots(vault_id: str, dek: bytes, secret: Secret, kdf: KdfParams) -> list[dict]:
    """Wrap ``dek`` once for each secret offered."""
    if secret.passphrase is None and secret.key_file is None:
        raise MemoError("no secret given: set MEMO_PASSPHRASE, answer the prompt, or pass --key-file FILE")
    slots = []
    if secret.passphrase is not None:
        if len(secret.passphrase) < 8:
            raise MemoError("passphrase too short: use at least 8 characters")
        slot = {
            "type": "passphrase",
            "kdf": "argon2id",
            "salt": _b64(os.urandom(16)),
            "memory_kib": kdf.memory_kib,
            "iterations": kdf.iterations,
            "lanes": kdf.lanes,
        }
        slots.append(_wrap(vault_id, slot, _passphrase_kek(secret.passphrase, slot), dek))
    if secret.key_file is not None:
        material = read_key_file(secret.key_file)
        slot = {
            "type": "keyfile",
            "kdf": "hkdf-sha256",
            "salt": _b64(os.urandom(32)),
            "fingerprint": hashlib.sha256(material).hexdigest()[:16],
        }
        slots.append(_wrap(vault_id, slot, _keyfile_kek(material, slot), dek))
    return slots


@dataclass
class Keyring:
    vault_id: str
    created: str
    slots: list[dict]
    audit_public_key: str

    @property
    def path_name(self) -> str:
        return "keyring.json"

    def to_bytes(self) -> bytes:
        body = {
            "format": KEYRING_FORMAT,
            "vault_id": self.vault_id,
            "created": self.created,
            "slots": self.slots,
            "audit_public_key": self.audit_public_key,
        }
        return _canonical({"body": body, "sha256": hashlib.sha256(_canonical(body)).hexdigest()}) + b"\n"

    def save(self, path: Path) -> None:
        atomic_write(path, self.to_bytes())

    @classmethod
    def new(cls, dek: bytes, secret: Secret, kdf: KdfParams, audit_public_key: bytes) -> "Keyring":
        vault_id = str(uuid.uuid4())
        return cls(
            vault_id=vault_id,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            slots=make_slots(vault_id, dek, secret, kdf),
            audit_public_key=_b64(audit_public_key),
        )

    @classmethod
    def load(cls, path: Path) -> "Keyring":
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise MemoError(
                f"no vault at {path.parent}: run `memo init` first, or set MEMO_HOME to the vault's directory"
            ) from None
        bad = IntegrityError(f"{path}: keyring is corrupt or was modified (checksum mismatch); restore it from backup")
        try:
            doc = json.loads(raw)
            body = doc["body"]
            if _canonical(doc) + b"\n" != raw or hashlib.sha256(_canonical(body)).hexdigest() != doc["sha256"]:
                raise bad
            if body["format"] != KEYRING_FORMAT:
                raise IntegrityError(f"{path}: unknown keyring format {body['format']!r}")
            return cls(body["vault_id"], body["created"], body["slots"], body["audit_public_key"])
        except (ValueError, KeyError, TypeError):
            raise bad from None

    def public_key_bytes(self) -> bytes:
        return _unb64(self.audit_public_key)

    def unlock(self, secret: Secret) -> bytes:
        """Return the DEK, trying every slot the secret can open."""
        tried = []
        for slot in self.slots:
            if slot["type"] == "passphrase" and secret.passphrase is not None:
                kek = _passphrase_kek(secret.passphrase, slot)
            elif slot["type"] == "keyfile" and secret.key_file is not None:
                kek = _keyfile_kek(read_key_file(secret.key_file), slot)
            else:
                continue
            tried.append(slot["type"])
            try:
                return AESGCM(kek).decrypt(_unb64(slot["nonce"]), _unb64(slot["wrapped"]), _slot_aad(self.vault_id, slot))
            except InvalidTag:
                continue
        if not tried:
            have = ", ".join(sorted({s["type"] for s in self.slots}))
            raise UnlockError(
                f"this vault opens with: {have}; none was given "
                "(set MEMO_PASSPHRASE, answer the prompt, or pass --key-file FILE)"
            )
        if secret.key_file is not None and secret.passphrase is None:
            raise UnlockError(f"key file {secret.key_file} does not unlock this vault")
        raise UnlockError(f"wrong {secret.describe()}: the vault stays locked")

    def slot_types(self) -> list[str]:
        return [s["type"] for s in self.slots]
