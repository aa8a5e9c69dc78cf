"""What an auditor keeps outside the vault: the audit public key, pinned, and signed heads saved.

The catalog and the audit head bind each other, so putting back an older copy of either half is
caught inside the vault. What no vault can show about itself is a *consistent* older copy of the
whole of it (catalog, log and head restored together from a backup or a snapshot). A witness is
a head saved earlier somewhere else: an auditor's file (``memo audit verify --save-head`` /
``--expect-head``), or the daemon's own, in a directory only the service user writes
(``MEMO_WITNESS``; the systemd unit gives it ``/var/lib/memo-witness``). The vault's current head
must extend the witness: the same entry still in the log with the same hash, a head no older,
a catalog generation no older.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from appliance.audit.log import AuditLog, Head, VerifyResult
from appliance.errors import IntegrityError, MemoError
from appliance.crypto.atomic import atomic_write


def witness_dir() -> Path:
    """``MEMO_WITNESS``, else ``$XDG_STATE_HOME/memo/witness`` (``~/.local/state/memo/witness``)."""
    env = os.environ.get("MEMO_WITNESS")
    if env:
        return Path(env).expanduser()
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "memo" / "witness"


def save_head(path: Path, head: Head, vault_id: str, offset: int | None = None) -> None:
    """Write ``head`` as a head file (it verifies like ``audit/head.json``) plus unsigned hints."""
    doc = json.loads(head.to_bytes())
    doc.update(vault_id=vault_id, saved_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    if offset is not None:
        doc["offset"] = offset
    atomic_write(path, json.dumps(doc, indent=1).encode() + b"\n", mode=0o600)


def load_head(path: Path, public_key: Ed25519PublicKey) -> tuple[Head, int | None]:
    """A saved head, its signature checked against ``public_key``; with its offset hint."""
    head = Head.load(path, public_key)
    try:
        offset = json.loads(path.read_bytes()).get("offset")
    except (OSError, ValueError, AttributeError):
        offset = None
    return head, offset if isinstance(offset, int) and not isinstance(offset, bool) else None


def extends(log: AuditLog, saved: Head, name: str, hint: int | None = None) -> tuple[Head | None, int | None]:
    """Check that the log's current head extends ``saved``; return it and its entry's offset.

    Cheap (the head, and one line found by its offset): for a periodic check. ``AuditLog.verify``
    with the witness walks the whole chain.
    """
    current = log.head()
    if current is None or current.seq < saved.seq:
        raise IntegrityError(f"{log.head_path} records entry {current.seq if current else 0}, older than entry {saved.seq} "
                             f"in {name}: the vault was rolled back (an older copy was put back); restore the latest one")
    if current.catalog < saved.catalog:
        raise IntegrityError(f"{log.head_path} records catalog generation {current.catalog}, older than the {saved.catalog} "
                             f"in {name}: the vault was rolled back; restore the latest one")
    if saved.seq:
        found = log.locate(saved.seq, hint)
        if found is None or found[0] != saved.hash:
            raise IntegrityError(f"{log.path}: entry {saved.seq} is missing or differs from {name}: the audit log was "
                                 "replaced or rolled back; restore the latest one")
    latest = log.locate(current.seq, hint) if current.seq else None
    return current, latest[1] if latest else None


@dataclass(frozen=True)
class Witness:
    """The daemon's witness file for one vault."""

    path: Path
    vault_id: str

    @classmethod
    def for_vault(cls, home: Path, vault_id: str, directory: Path | None = None) -> "Witness":
        root = (directory or witness_dir()).expanduser()
        if root.resolve().is_relative_to(home.resolve()):
            raise MemoError(f"the witness directory {root} is inside MEMO_HOME {home}: a witness must live where the "
                            "vault's files cannot reach; set MEMO_WITNESS to a directory outside it")
        return cls(root / f"{vault_id}.head.json", vault_id)

    def advance(self, log: AuditLog) -> Head | None:
        """Check the vault against the last head seen, then remember the current one.

        Raises :class:`IntegrityError` on a rollback; the witness is then left as it was.
        """
        saved: Head | None = None
        hint = None
        if self.path.exists():
            saved, hint = load_head(self.path, log.public_key)
        name = f"the daemon's witness {self.path}"
        if saved is None:
            current = log.head()
            located = log.locate(current.seq) if current and current.seq else None
            offset = located[1] if located else None
        else:
            current, offset = extends(log, saved, name, hint)
        if current is not None and current != saved:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            save_head(self.path, current, self.vault_id, offset)
        return current


def load_public_key(path: Path) -> Ed25519PublicKey:
    """The auditor's pinned copy of ``audit/public-key.pem`` (taken when the vault was set up)."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise MemoError(f"cannot read the pinned public key {path}: {exc.strerror}") from None
    except ValueError:
        raise MemoError(f"{path} is not a PEM public key; pin a copy of the vault's audit/public-key.pem") from None
    if not isinstance(key, Ed25519PublicKey):
        raise MemoError(f"{path} is not an Ed25519 public key; pin a copy of the vault's audit/public-key.pem")
    return key


def key_mismatch(home: Path, pinned: Ed25519PublicKey, pinned_path: Path) -> str | None:
    """Why the vault's own audit key (its ``audit/public-key.pem``, written from the keyring) differs
    from the pinned one, or None. Read from the file, so the log stays below the vault's store."""
    own_path = home / "audit" / "public-key.pem"
    try:
        own = load_public_key(own_path).public_bytes_raw()
    except MemoError as exc:
        return str(exc)
    if own != pinned.public_bytes_raw():
        return (f"{own_path} holds another audit key than the pinned {pinned_path}: the vault's key was "
                "replaced (a chain re-signed with a new key verifies only against that key)")
    return None


def verify_chain_only(home: Path, pinned_path: Path, saved: Path | None = None) -> VerifyResult:
    """The external auditor's check, without the vault key: chain and signatures against the
    *pinned* public key (never the vault's own copy), and against a saved head when given."""
    pinned = load_public_key(pinned_path)
    log = AuditLog(home / "audit", pinned)
    witnesses = [(load_head(saved, pinned)[0], f"the saved head {saved}")] if saved else []
    result = log.verify(witnesses)
    mismatch = key_mismatch(home, pinned, pinned_path)
    if mismatch and result.ok:
        return VerifyResult(False, result.entries, 0, mismatch)
    if mismatch:
        result.problem = f"{result.problem} ({mismatch})"
    return result
