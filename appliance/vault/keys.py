"""Key hierarchy: one random data key (DEK) wrapped by key-encryption keys in slots.

A slot is unlocked by a passphrase (Argon2id) or by a key file (HKDF over its bytes). Rekeying
re-wraps the same DEK into new slots, so no data is re-encrypted. ``keyring.json`` is the only vault
file readable without a key, so it is distrusted until the DEK is recovered:

* a checksum tells accidental corruption apart from a wrong passphrase (anyone can recompute it);
* every field is checked against a strict shape and the KDF cost is bounded *before* Argon2 runs,
  so an edited file is reported as tampered, never a traceback, a 16 GiB allocation or a hang;
* every slot's parameters are bound to its wrapped key as associated data;
* a MAC under a key derived from the DEK (format 2) covers the whole body, so an added slot, a
  swapped audit public key or any other edit is found once the vault is unlocked;
* every slot names its principal (format 3): the person or service account whose passphrase or
  key file it is. The slot that unlocks says who is acting; the name is covered by the MAC, and a
  principal may hold a passphrase slot and a key-file slot. Format-1 and format-2 keyrings (no
  MAC, or no principals) are upgraded by :class:`appliance.vault.store.Vault` on open, their slots
  becoming the administrator's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
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
from appliance.crypto.atomic import atomic_write

KEYRING_FORMAT = "memo-keyring-3"
FORMATS = {"memo-keyring-1": 1, "memo-keyring-2": 2, KEYRING_FORMAT: 3}  # 1: checksum only; 2: MAC; 3: principals
LEGACY_FORMAT = "memo-keyring-1"
LEGACY_PRINCIPAL = "admin"  # whose the slots of a keyring from before principals become
PRINCIPAL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MAX_SLOTS = 64
MIN_KEYFILE_BYTES = 32
MAX_KEYFILE_BYTES = 1 << 20

# Argon2id cost a keyring may ask for: up to RFC 9106's strongest recommendation (2 GiB), and a
# bounded total (memory x passes), so an edited keyring can neither exhaust memory nor hang unlock.
MIN_MEMORY_KIB = 1024
MAX_MEMORY_KIB = 2 * 1024 * 1024
MAX_ITERATIONS = 16
MAX_LANES = 16
MAX_WORK_KIB = 4 * 1024 * 1024  # memory_kib * iterations
_SLOT_FIELDS = {
    "passphrase": {"type", "kdf", "salt", "memory_kib", "iterations", "lanes", "nonce", "wrapped"},
    "keyfile": {"type", "kdf", "salt", "fingerprint", "nonce", "wrapped"},
}
_UNWRAP_EXCLUDES = ("nonce", "wrapped", "principal")  # the name is covered by the keyring's MAC, not the wrap


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode(), validate=True)


def _canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def check_principal_name(name: str) -> str:
    """A principal's name as slots, policies, tokens and the audit log spell it, or a one-line refusal."""
    if not isinstance(name, str) or not PRINCIPAL_NAME.fullmatch(name):
        raise MemoError(f"invalid name {name!r}: use letters, digits and . _ @ - (at most 64 characters, "
                        "starting with a letter or digit)")
    return name


@dataclass(frozen=True)
class Secret:
    """What a person unlocks with: a passphrase, a key file, or both offered, and (to pick the
    slot to try) who they say they are. The name proves nothing: only the secret opens a slot."""

    passphrase: str | None = None
    key_file: Path | None = None
    principal: str | None = None

    def describe(self) -> str:
        parts = []
        if self.passphrase is not None:
            parts.append("passphrase")
        if self.key_file is not None:
            parts.append(f"key file {self.key_file}")
        return " and ".join(parts) or "nothing"


def read_key_file(path: Path) -> bytes:
    """The key file's bytes; a FIFO or device is refused (opened non-blocking: it cannot hang)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise MemoError(f"cannot read key file {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise MemoError(f"key file {path} is not a regular file; create one with `memo vault keygen FILE`")
        if st.st_size < MIN_KEYFILE_BYTES or st.st_size > MAX_KEYFILE_BYTES:
            raise MemoError(
                f"key file {path} has {st.st_size} bytes; it must hold {MIN_KEYFILE_BYTES} B to 1 MiB of "
                "random data (create one with `memo vault keygen FILE`)"
            )
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read(MAX_KEYFILE_BYTES + 1)[:MAX_KEYFILE_BYTES]
    except OSError as exc:
        raise MemoError(f"cannot read key file {path}: {exc.strerror}") from None
    finally:
        os.close(fd)


def generate_key_file(path: Path) -> None:
    if path.exists():
        raise MemoError(f"{path} already exists; refusing to overwrite a key file")
    atomic_write(path, secrets.token_bytes(64), mode=0o400)


def passphrase_bytes(passphrase: str) -> bytes:
    """The passphrase as the operator typed it, byte for byte.

    A passphrase from the environment that is not valid UTF-8 reaches Python with its odd bytes
    as surrogate escapes; ``surrogateescape`` turns them back into those bytes (valid UTF-8 is
    unchanged, so existing vaults open as before).
    """
    try:
        return passphrase.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise MemoError("the passphrase holds characters that cannot be encoded; type it again or use --key-file") from None


def kdf_problem(memory_kib: object, iterations: object, lanes: object) -> str | None:
    """Why these Argon2id parameters are outside what a keyring may ask for, or None."""
    def whole(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not (whole(lanes) and 1 <= lanes <= MAX_LANES):  # type: ignore[operator]
        return f"lanes {lanes!r} is outside 1..{MAX_LANES}"
    if not (whole(iterations) and 1 <= iterations <= MAX_ITERATIONS):  # type: ignore[operator]
        return f"iterations {iterations!r} is outside 1..{MAX_ITERATIONS}"
    low = max(MIN_MEMORY_KIB, 8 * lanes)  # type: ignore[operator]
    if not (whole(memory_kib) and low <= memory_kib <= MAX_MEMORY_KIB):  # type: ignore[operator]
        return f"memory_kib {memory_kib!r} is outside {low}..{MAX_MEMORY_KIB}"
    if memory_kib * iterations > MAX_WORK_KIB:  # type: ignore[operator]
        return f"memory_kib x iterations = {memory_kib * iterations} exceeds {MAX_WORK_KIB}"  # type: ignore[operator]
    return None


def _passphrase_kek(passphrase: str, slot: dict) -> bytes:
    kdf = Argon2id(
        salt=_unb64(slot["salt"]),
        length=32,
        iterations=slot["iterations"],
        lanes=slot["lanes"],
        memory_cost=slot["memory_kib"],
    )
    return kdf.derive(passphrase_bytes(passphrase))


def _keyfile_kek(material: bytes, slot: dict) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=_unb64(slot["salt"]), info=b"memo-keyfile-v1"
    ).derive(material)


def _slot_aad(vault_id: str, slot: dict) -> bytes:
    params = {k: v for k, v in slot.items() if k not in _UNWRAP_EXCLUDES}
    return _canonical({"vault_id": vault_id, "slot": params})


def slot_principal(slot: dict) -> str:
    """Whose slot this is (a slot of a keyring from before principals: the administrator's)."""
    return slot.get("principal", LEGACY_PRINCIPAL)


def _wrap(vault_id: str, slot: dict, kek: bytes, dek: bytes) -> dict:
    nonce = os.urandom(12)
    wrapped = AESGCM(kek).encrypt(nonce, dek, _slot_aad(vault_id, slot))
    return {**slot, "nonce": _b64(nonce), "wrapped": _b64(wrapped)}


def make_slots(vault_id: str, dek: bytes, secret: Secret, kdf: KdfParams, principal: str | None = None) -> list[dict]:
    """Wrap ``dek`` once for each secret offered, in slots of ``principal`` (default: the secret's
    name, else the administrator)."""
    if secret.passphrase is None and secret.key_file is None:
        raise MemoError("no secret given: set MEMO_PASSPHRASE, answer the prompt, or pass --key-file FILE")
    owner = check_principal_name(principal or secret.principal or LEGACY_PRINCIPAL)
    slots = []
    if secret.passphrase is not None:
        if len(secret.passphrase) < 8:
            raise MemoError("passphrase too short: use at least 8 characters")
        passphrase_bytes(secret.passphrase)
        problem = kdf_problem(kdf.memory_kib, kdf.iterations, kdf.lanes)
        if problem:
            raise MemoError(f"KDF settings out of bounds: {problem}")
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
    return [{**slot, "principal": owner} for slot in slots]


def _mac_key(dek: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"memo-keyring-mac-v1").derive(dek)


def _b64_len(value: object, lengths: range, what: str) -> str | None:
    if not isinstance(value, str):
        return f"{what} is not text"
    try:
        n = len(_unb64(value))
    except ValueError:
        return f"{what} is not base64"
    return None if n in lengths else f"{what} has {n} bytes"


def slot_problem(slot: object, version: int = 3) -> str | None:
    """Why a slot is not one this code wrote (shape, encodings, bounded KDF cost), or None."""
    if not isinstance(slot, dict):
        return "is not an object"
    kind = slot.get("type")
    if kind not in _SLOT_FIELDS:
        return f"has unknown type {kind!r}"
    fields = _SLOT_FIELDS[kind] | ({"principal"} if version >= 3 else set())
    if set(slot) != fields:
        return f"has fields {sorted(slot)}, expected {sorted(fields)}"
    if version >= 3 and not (isinstance(slot["principal"], str) and PRINCIPAL_NAME.fullmatch(slot["principal"])):
        return "names no valid principal"
    checks = [_b64_len(slot["nonce"], range(12, 13), "nonce"), _b64_len(slot["wrapped"], range(48, 49), "wrapped key")]
    if kind == "passphrase":
        checks += [None if slot["kdf"] == "argon2id" else f"kdf {slot['kdf']!r} is not argon2id",
                   _b64_len(slot["salt"], range(16, 65), "salt"),
                   kdf_problem(slot["memory_kib"], slot["iterations"], slot["lanes"])]
    else:
        fp = slot["fingerprint"]
        checks += [None if slot["kdf"] == "hkdf-sha256" else f"kdf {slot['kdf']!r} is not hkdf-sha256",
                   _b64_len(slot["salt"], range(16, 65), "salt"),
                   None if isinstance(fp, str) and len(fp) == 16 and all(c in "0123456789abcdef" for c in fp)
                   else "fingerprint is not 16 hex digits"]
    return next((c for c in checks if c), None)


@dataclass(frozen=True)
class Unlocked:
    """What opening the keyring gives: the data key, and whose slot opened it."""

    dek: bytes
    principal: str


@dataclass
class Keyring:
    vault_id: str
    created: str
    slots: list[dict]
    audit_public_key: str
    mac: str | None = None  # None: a format-1 keyring, written before keyrings carried a MAC
    version: int = 3  # 1: checksum only, 2: MAC, 3: every slot names its principal

    @property
    def path_name(self) -> str:
        return "keyring.json"

    @property
    def legacy(self) -> bool:
        """Written before the current format (no MAC, or slots without principals): upgraded on open."""
        return self.version < 3

    def _body(self) -> dict:
        return {
            "format": next(name for name, v in FORMATS.items() if v == self.version),
            "vault_id": self.vault_id,
            "created": self.created,
            "slots": self.slots,
            "audit_public_key": self.audit_public_key,
        }

    def to_bytes(self, dek: bytes) -> bytes:
        """The file in the current format, MACed under ``dek`` (which the slots wrap)."""
        if self.version < 3:
            raise MemoError("an old-format keyring is written only once upgraded (Keyring.upgraded)")
        body = self._body()
        self.mac = hmac.new(_mac_key(dek), _canonical(body), hashlib.sha256).hexdigest()
        doc = {"body": body, "sha256": hashlib.sha256(_canonical(body)).hexdigest(), "mac": self.mac}
        return _canonical(doc) + b"\n"

    def save(self, path: Path, dek: bytes) -> None:
        atomic_write(path, self.to_bytes(dek))

    def authenticate(self, dek: bytes, path: Path) -> bool:
        """Check the MAC with the unlocked DEK: True when it holds, False for a format-1 keyring."""
        if self.mac is None:
            return False
        expected = hmac.new(_mac_key(dek), _canonical(self._body()), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, self.mac):
            raise IntegrityError(f"{path}: keyring was tampered with (its MAC does not verify: a slot, key or field "
                                 "was changed); restore it from backup")
        return True

    @classmethod
    def new(cls, dek: bytes, secret: Secret, kdf: KdfParams, audit_public_key: bytes, principal: str | None = None) -> "Keyring":
        vault_id = str(uuid.uuid4())
        return cls(
            vault_id=vault_id,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            slots=make_slots(vault_id, dek, secret, kdf, principal),
            audit_public_key=_b64(audit_public_key),
        )

    def upgraded(self, principal: str = LEGACY_PRINCIPAL) -> "Keyring":
        """This keyring in the current format: every slot of an older one becomes ``principal``'s."""
        check_principal_name(principal)
        slots = [{**slot, "principal": slot.get("principal", principal)} for slot in self.slots]
        return Keyring(self.vault_id, self.created, slots, self.audit_public_key)

    def with_slots(self, slots: list[dict]) -> "Keyring":
        if not 1 <= len(slots) <= MAX_SLOTS:
            raise MemoError(f"a keyring holds 1 to {MAX_SLOTS} slots; remove someone before adding more")
        return Keyring(self.vault_id, self.created, slots, self.audit_public_key)

    @classmethod
    def load(cls, path: Path) -> "Keyring":
        """Parse and shape-check the keyring; nothing in it is trusted until :meth:`authenticate`."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise MemoError(
                f"no vault at {path.parent}: run `memo init` first, or set MEMO_HOME to the vault's directory"
            ) from None
        except OSError as exc:
            raise MemoError(f"cannot read {path}: {exc.strerror}") from None
        bad = IntegrityError(f"{path}: keyring is corrupt or was modified (checksum mismatch); restore it from backup")
        if len(raw) > MAX_KEYFILE_BYTES:
            raise bad
        try:
            doc = json.loads(raw)
            body = doc["body"]
            if _canonical(doc) + b"\n" != raw or hashlib.sha256(_canonical(body)).hexdigest() != doc["sha256"]:
                raise bad
            fmt = body["format"]
            if fmt not in FORMATS:
                raise IntegrityError(f"{path}: unknown keyring format {fmt!r}")
            version = FORMATS[fmt]
            expected_keys = {"body", "sha256", "mac"} if version >= 2 else {"body", "sha256"}
            if set(doc) != expected_keys or set(body) != {"format", "vault_id", "created", "slots", "audit_public_key"}:
                raise IntegrityError(f"{path}: keyring was tampered with (unexpected fields); restore it from backup")
            mac = doc.get("mac")
            if version >= 2 and not (isinstance(mac, str) and len(mac) == 64):
                raise bad
            slots = body["slots"]
            if not isinstance(slots, list) or not 1 <= len(slots) <= MAX_SLOTS:
                raise IntegrityError(f"{path}: keyring was tampered with (it must hold 1 to {MAX_SLOTS} slots); "
                                     "restore it from backup")
            for i, slot in enumerate(slots):
                problem = slot_problem(slot, version)
                if problem:
                    raise IntegrityError(f"{path}: keyring was tampered with (slot {i} {problem}); restore it from backup")
            if not all(isinstance(body[k], str) for k in ("vault_id", "created", "audit_public_key")) or \
                    _b64_len(body["audit_public_key"], range(32, 33), "audit public key"):
                raise IntegrityError(f"{path}: keyring was tampered with (vault id or audit key malformed); restore it from backup")
            return cls(body["vault_id"], body["created"], slots, body["audit_public_key"], mac if version >= 2 else None,
                       version)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise bad from None

    def public_key_bytes(self) -> bytes:
        return _unb64(self.audit_public_key)

    def unlock(self, secret: Secret) -> bytes:
        """Return the DEK, trying every slot the secret can open."""
        return self.open(secret).dek

    def _candidates(self, secret: Secret) -> list[dict]:
        """The slots worth trying, cheapest first: key-file slots whose fingerprint matches the file
        offered, then the passphrase slots of the person named (of everyone when no name is given:
        one Argon2id run each, which is why people name themselves)."""
        mine = [s for s in self.slots if secret.principal is None or slot_principal(s) == secret.principal]
        if secret.principal is not None and not mine:
            raise UnlockError(f"no slot of {secret.principal!r} in this vault: `memo people list` shows who can unlock it "
                              "(an administrator adds people with `memo people add`)")
        out = []
        if secret.key_file is not None:
            fingerprint = hashlib.sha256(read_key_file(secret.key_file)).hexdigest()[:16]
            out += [s for s in mine if s["type"] == "keyfile" and hmac.compare_digest(s["fingerprint"], fingerprint)]
        if secret.passphrase is not None:
            out += [s for s in mine if s["type"] == "passphrase"]
        return out

    def open(self, secret: Secret) -> Unlocked:
        """The DEK and the principal of the slot that opened it; a one-line refusal otherwise."""
        offered = {"passphrase"} if secret.passphrase is not None else set()
        offered |= {"keyfile"} if secret.key_file is not None else set()
        if not offered & {s["type"] for s in self.slots}:
            have = ", ".join(sorted({s["type"] for s in self.slots}))
            raise UnlockError(
                f"this vault opens with: {have}; none was given "
                "(set MEMO_PASSPHRASE, answer the prompt, or pass --key-file FILE)"
            )
        for slot in self._candidates(secret):
            if slot["type"] == "passphrase":
                kek = _passphrase_kek(secret.passphrase, slot)  # type: ignore[arg-type]
            else:
                kek = _keyfile_kek(read_key_file(secret.key_file), slot)  # type: ignore[arg-type]
            try:
                dek = AESGCM(kek).decrypt(_unb64(slot["nonce"]), _unb64(slot["wrapped"]), _slot_aad(self.vault_id, slot))
            except InvalidTag:
                continue
            return Unlocked(dek, slot_principal(slot))
        who = f" for {secret.principal}" if secret.principal else ""
        if secret.key_file is not None and secret.passphrase is None:
            raise UnlockError(f"key file {secret.key_file} does not unlock this vault{who}")
        raise UnlockError(f"wrong {secret.describe()}{who}: the vault stays locked")

    def slot_types(self) -> list[str]:
        return [s["type"] for s in self.slots]

    def principals(self) -> dict[str, list[str]]:
        """Each principal who can unlock, with the kinds of secret they hold (passphrase, keyfile)."""
        out: dict[str, list[str]] = {}
        for slot in self.slots:
            out.setdefault(slot_principal(slot), []).append(slot["type"])
        return out
