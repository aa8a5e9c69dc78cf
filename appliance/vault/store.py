"""The vault: a directory in which every file but the keyring is authenticated-encrypted.

Layout under the appliance home::

    keyring.json          wrapped data key (checksummed, no secrets in clear)
    catalog.db.enc        SQLite metadata, encrypted as a whole
    objects/ab/<oid>      content (raw files, texts, chunks), addressed by a keyed MAC
    files/<name>          named artefacts (keys, reflections, adapters, models)
    audit/log.jsonl       hash-chained, signed audit entries (payloads encrypted)
    audit/head.json       signed pointer to the last audit entry

Writers serialise on a lock file; a transaction reloads the catalog under the lock and writes it
back atomically, so a crash leaves either the old or the new catalog. Objects are written before
the catalog that references them: a crash leaves at worst unreferenced ciphertext (see ``gc``).
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from appliance.audit.log import AuditLog, VerifyResult
from appliance.config import Settings, current_actor
from appliance.errors import IntegrityError, MemoError
from appliance.vault import catalog as cat
from appliance.vault import envelope
from appliance.vault.atomic import TMP_MARK, atomic_write, remove_stale_temps
from appliance.vault.keys import Keyring, Secret, make_slots

KEYRING = "keyring.json"
CATALOG = "catalog.db.enc"
OBJECTS = "objects"
FILES = "files"
AUDIT = "audit"
SIGNING_KEY_FILE = "keys/audit-signing"


def _subkey(dek: bytes, purpose: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"memo-{purpose}-v1".encode()).derive(dek)


def _check_name(name: str) -> str:
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") or p.startswith(TMP_MARK) for p in parts):
        raise MemoError(f"invalid vault file name {name!r}")
    return name


@dataclass
class VaultStatus:
    home: str
    vault_id: str
    created: str
    unlock_methods: list[str]
    documents: int
    current_versions: int
    superseded_versions: int
    forgotten_documents: int
    chunks: int
    objects: int
    files: int
    bytes_on_disk: int
    audit_entries: int

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class VaultVerifyReport:
    ok: bool
    checked_files: int
    problems: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    audit: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


class Vault:
    """An unlocked vault. Construct with :meth:`init` or :meth:`open`."""

    def __init__(self, settings: Settings, keyring: Keyring, dek: bytes) -> None:
        self.settings = settings
        self.home = settings.home
        self.keyring = keyring
        self._dek = dek
        self._mac_key = _subkey(dek, "object-id")
        signing = Ed25519PrivateKey.from_private_bytes(self.read_file(SIGNING_KEY_FILE))
        public = Ed25519PublicKey.from_public_bytes(keyring.public_key_bytes())
        if signing.public_key().public_bytes_raw() != keyring.public_key_bytes():
            raise IntegrityError(f"{self.home / KEYRING}: audit public key does not match the vault's signing key")
        self.audit = AuditLog(self.home / AUDIT, public, dek, signing)

    # ------------------------------------------------------------ lifecycle
    @classmethod
    def exists(cls, settings: Settings) -> bool:
        return (settings.home / KEYRING).exists()

    @classmethod
    def init(cls, settings: Settings, secret: Secret, actor: str | None = None) -> "Vault":
        home = settings.home
        if (home / KEYRING).exists():
            raise MemoError(f"a vault already exists at {home}; use it, or choose another MEMO_HOME")
        if home.exists() and any(p for p in home.iterdir() if not p.name.startswith(".")):
            raise MemoError(f"{home} is not empty; choose an empty directory for a new vault")
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(home, 0o700)
        dek = os.urandom(32)
        signing = Ed25519PrivateKey.generate()
        keyring = Keyring.new(dek, secret, settings.kdf, signing.public_key().public_bytes_raw())
        # Everything the keyring points at is written first: a crash before the keyring leaves no vault.
        atomic_write(home / FILES / SIGNING_KEY_FILE, envelope.seal(dek, signing.private_bytes_raw(), f"file:{SIGNING_KEY_FILE}"))
        atomic_write(home / CATALOG, envelope.seal(dek, cat.to_bytes(cat.new_catalog()), "catalog"))
        (home / AUDIT).mkdir(mode=0o700, exist_ok=True)
        public_pem = signing.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        atomic_write(home / AUDIT / "public-key.pem", public_pem, mode=0o644)
        keyring.save(home / KEYRING)
        vault = cls(settings, keyring, dek)
        vault.audit.append(actor or current_actor(), "vault.init", keyring.vault_id, unlock_methods=keyring.slot_types())
        return vault

    @classmethod
    def open(cls, settings: Settings, secret: Secret) -> "Vault":
        keyring = Keyring.load(settings.home / KEYRING)
        dek = keyring.unlock(secret)
        return cls(settings, keyring, dek)

    @classmethod
    def audit_readonly(cls, settings: Settings) -> AuditLog:
        """The audit log for chain/signature verification without unlocking."""
        keyring = Keyring.load(settings.home / KEYRING)
        return AuditLog(settings.home / AUDIT, Ed25519PublicKey.from_public_bytes(keyring.public_key_bytes()))

    def rekey(self, new_secret: Secret, actor: str | None = None) -> None:
        """Re-wrap the data key for new secrets; old secrets stop working, data is untouched."""
        slots = make_slots(self.keyring.vault_id, self._dek, new_secret, self.settings.kdf)
        with self._lock():
            new = Keyring(self.keyring.vault_id, self.keyring.created, slots, self.keyring.audit_public_key)
            new.save(self.home / KEYRING)
            self.keyring = new
        self.audit.append(actor or current_actor(), "vault.rekey", self.keyring.vault_id, unlock_methods=new.slot_types())

    def subkey(self, purpose: str) -> bytes:
        """A key for one purpose (e.g. keyed hashes), derived so the data key is never reused raw."""
        return _subkey(self._dek, purpose)

    def mac(self, data: bytes, purpose: str = "content") -> str:
        """Keyed hash: equal inputs match, but nobody without the key can test a guess."""
        return hmac.new(self._mac_key, purpose.encode() + b"\0" + data, hashlib.sha256).hexdigest()

    # ------------------------------------------------------------ locking + catalog
    @contextmanager
    def _lock(self) -> Iterator[None]:
        fd = os.open(self.home / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _load_catalog(self) -> sqlite3.Connection:
        path = self.home / CATALOG
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            raise IntegrityError(f"{path}: catalog is missing; restore it from backup") from None
        return cat.from_bytes(envelope.open_sealed(self._dek, blob, "catalog", str(path)))

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot of the catalog; changes made to it are discarded."""
        db = self._load_catalog()
        try:
            yield db
        finally:
            db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Exclusive read-modify-write of the catalog; written back only if the block succeeds."""
        with self._lock():
            remove_stale_temps(self.home)
            db = self._load_catalog()
            try:
                yield db
                cat.bump_generation(db)
                atomic_write(self.home / CATALOG, envelope.seal(self._dek, cat.to_bytes(db), "catalog"))
            finally:
                db.close()

    # ------------------------------------------------------------ objects
    def object_id(self, data: bytes, kind: str) -> str:
        return self.mac(data, f"object:{kind}")

    def _object_path(self, oid: str) -> Path:
        if len(oid) != 64 or any(c not in "0123456789abcdef" for c in oid):
            raise MemoError(f"invalid object id {oid!r}")
        return self.home / OBJECTS / oid[:2] / oid

    def put_object(self, data: bytes, kind: str, durable: bool = True) -> str:
        """Store content once per (kind, content). ``durable=False`` defers the flush to :meth:`flush`."""
        oid = self.object_id(data, kind)
        path = self._object_path(oid)
        if not path.exists():
            atomic_write(path, envelope.seal(self._dek, kind.encode() + b"\0" + data, f"object:{oid}"), durable=durable)
        return oid

    @staticmethod
    def flush() -> None:
        """Make every deferred write durable (one sync instead of one fsync per object)."""
        os.sync()

    def get_object(self, oid: str) -> bytes:
        return self._read_object(oid)[1]

    def _read_object(self, oid: str) -> tuple[str, bytes]:
        path = self._object_path(oid)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            raise IntegrityError(f"{path}: object is missing; restore it from backup or re-ingest") from None
        plain = envelope.open_sealed(self._dek, blob, f"object:{oid}", str(path))
        kind, _, data = plain.partition(b"\0")
        if not hmac.compare_digest(self.object_id(data, kind.decode()), oid):
            raise IntegrityError(f"{path}: content does not match its id (swapped or tampered)")
        return kind.decode(), data

    def delete_object(self, oid: str) -> None:
        self._object_path(oid).unlink(missing_ok=True)

    def object_ids(self) -> Iterator[str]:
        root = self.home / OBJECTS
        if root.exists():
            for p in sorted(root.glob("*/*")):
                if not p.name.startswith(TMP_MARK):
                    yield p.name

    # ------------------------------------------------------------ named files
    def _file_path(self, name: str) -> Path:
        return self.home / FILES / _check_name(name)

    def write_file(self, name: str, data: bytes) -> None:
        atomic_write(self._file_path(name), envelope.seal(self._dek, data, f"file:{name}"))

    def write_file_stream(self, name: str, pieces: Iterator[bytes]) -> None:
        """Encrypt a large artefact (e.g. model weights) segment by segment; plaintext stays in RAM."""
        path = self._file_path(name)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.parent / f"{TMP_MARK}{path.name}.{os.getpid()}"
        with open(tmp, "wb") as fh:
            for part in envelope.seal_stream(self._dek, pieces, f"file:{name}"):
                fh.write(part)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)

    def read_file(self, name: str) -> bytes:
        path = self._file_path(name)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            raise MemoError(f"{path}: no such vault file") from None
        return envelope.open_sealed(self._dek, blob, f"file:{name}", str(path))

    def file_exists(self, name: str) -> bool:
        return self._file_path(name).exists()

    def delete_file(self, name: str) -> None:
        self._file_path(name).unlink(missing_ok=True)

    def file_names(self) -> Iterator[str]:
        root = self.home / FILES
        if root.exists():
            for p in sorted(root.rglob("*")):
                if p.is_file() and not p.name.startswith(TMP_MARK):
                    yield p.relative_to(root).as_posix()

    # ------------------------------------------------------------ status + verify
    def status(self) -> VaultStatus:
        with self.read() as db:
            one = lambda sql: db.execute(sql).fetchone()[0]  # noqa: E731
            documents = one("SELECT COUNT(*) FROM documents WHERE forgotten_at IS NULL")
            current = one("SELECT COUNT(*) FROM versions WHERE status='current'")
            superseded = one("SELECT COUNT(*) FROM versions WHERE status='superseded'")
            forgotten = one("SELECT COUNT(*) FROM documents WHERE forgotten_at IS NOT NULL")
            chunks = one("SELECT COUNT(*) FROM chunks")
        size = sum(p.stat().st_size for p in self.home.rglob("*") if p.is_file())
        return VaultStatus(
            home=str(self.home),
            vault_id=self.keyring.vault_id,
            created=self.keyring.created,
            unlock_methods=self.keyring.slot_types(),
            documents=documents,
            current_versions=current,
            superseded_versions=superseded,
            forgotten_documents=forgotten,
            chunks=chunks,
            objects=sum(1 for _ in self.object_ids()),
            files=sum(1 for _ in self.file_names()),
            bytes_on_disk=size,
            audit_entries=self.audit.count(),
        )

    def referenced_objects(self, db: sqlite3.Connection) -> set[str]:
        refs: set[str] = set()
        for row in db.execute("SELECT raw_oid, text_oid FROM versions"):
            refs.update(o for o in row if o)
        refs.update(r[0] for r in db.execute("SELECT oid FROM chunks"))
        return refs

    def verify(self, progress: Callable[[int, int], None] | None = None) -> VaultVerifyReport:
        """Authenticate every file; report each problem by file name, and the audit chain."""
        problems: list[str] = []
        try:
            Keyring.load(self.home / KEYRING)
        except MemoError as exc:
            problems.append(str(exc))
        pem = self.home / AUDIT / "public-key.pem"
        # Byte-for-byte: a PEM parser tolerates junk around the armour, a verifier must not.
        expected = Ed25519PublicKey.from_public_bytes(self.keyring.public_key_bytes()).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        try:
            if pem.read_bytes() != expected:
                raise ValueError
        except (OSError, ValueError):
            problems.append(f"{pem}: does not hold the vault's audit public key (corrupt or replaced)")
        refs: set[str] = set()
        try:
            with self.read() as db:
                refs = self.referenced_objects(db)
        except MemoError as exc:
            problems.append(str(exc))
        oids = list(self.object_ids())
        names = list(self.file_names())
        total = len(oids) + len(names)
        done = 0
        for oid in oids:
            try:
                self._read_object(oid)
            except MemoError as exc:
                problems.append(str(exc))
            done += 1
            if progress:
                progress(done, total)
        for name in names:
            try:
                self.read_file(name)
            except MemoError as exc:
                problems.append(str(exc))
            done += 1
            if progress:
                progress(done, total)
        present = set(oids)
        for missing in sorted(refs - present):
            problems.append(f"{self._object_path(missing)}: referenced by the catalog but missing")
        audit: VerifyResult
        try:
            audit = self.audit.verify()
        except MemoError as exc:
            audit = VerifyResult(False, 0, None, str(exc), True)
        if not audit.ok:
            problems.append(f"audit log: {audit.problem}")
        return VaultVerifyReport(
            ok=not problems,
            checked_files=total + 2,
            problems=problems,
            orphans=sorted(present - refs),
            audit=audit.to_dict(),
        )

    def gc(self, actor: str | None = None) -> int:
        """Delete objects no catalog row references (left by an interrupted ingest or a forget)."""
        with self.transaction() as db:
            orphans = set(self.object_ids()) - self.referenced_objects(db)
            for oid in orphans:
                self.delete_object(oid)
        self.audit.append(actor or current_actor(), "vault.gc", None, removed_objects=len(orphans))
        return len(orphans)
