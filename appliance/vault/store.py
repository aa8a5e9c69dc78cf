"""The vault: a directory in which every file but the keyring is authenticated-encrypted.

Layout under the appliance home::

    keyring.json          wrapped data key (checksummed, no secrets in clear)
    catalog.db.enc        SQLite metadata, every page encrypted and authenticated (SQLCipher)
    objects/ab/<oid>      content (raw files, texts, chunks), addressed by a keyed MAC
    files/<name>          named artefacts (keys, reflections, adapters, models)
    audit/log.jsonl       hash-chained, signed audit entries (payloads encrypted)
    audit/head.json       signed pointer to the last audit entry

Writers serialise on a lock file; a transaction is one SQLite transaction under that lock, which
writes only the pages it changed (SQLite's rollback journal, encrypted like the file, makes a crash
leave either the old or the new catalog). Readers take a read transaction: one committed state.
Objects are written before the catalog that references them: a crash leaves at worst
unreferenced ciphertext (see ``gc``). A catalog of an earlier release (the database sealed whole
in one envelope) is converted on the first open, audited as ``vault.catalog.migrated``.

People: every slot of the keyring names its principal, and :attr:`Vault.principal` is whose slot
opened it: the actor of everything this vault object audits. Adding or removing a person rewrites
the keyring; the catalog records the keyring's SHA-256 (written in two steps around the rename, so
a crash never looks like tampering), so an older ``keyring.json`` put back (one that still holds a
removed person's slot) is refused on open. The policy set an administrator pinned is kept in the
catalog and handed to the code above through :attr:`Vault.settings` (``pinned_policies``).

Rollback: the catalog and the audit head bind each other. Each commit records in the catalog the
signed audit head it follows (seq, hash) and then records the catalog's generation in the head,
so an older ``catalog.db.enc`` or an older audit log/head put back beside the current other half
is an integrity error naming the file — on every catalog load, not only in ``verify``. A
consistent older copy of the *whole* vault needs a witness kept outside it (a saved head).
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from appliance.audit.log import AuditLog, Head, VerifyResult
from appliance.config import PinnedPolicies, Settings
from appliance.crypto import envelope
from appliance.crypto.atomic import TMP_MARK, atomic_write, fsync_dir, remove_stale_temps
from appliance.errors import IntegrityError, MemoError
from appliance.vault import catalog as cat
from appliance.vault.keys import LEGACY_PRINCIPAL, Keyring, Secret, check_principal_name, make_slots, slot_principal

KEYRING = "keyring.json"
CATALOG = "catalog.db.enc"
OBJECTS = "objects"
FILES = "files"
AUDIT = "audit"
SIGNING_KEY_FILE = "keys/audit-signing"
KEYRING_FORMAT_META = "3"  # the catalog remembers the newest keyring format it saw: an older one put back is refused
PINNED_META = "policy_pinned"


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
    principal: str
    people: int
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


@dataclass(frozen=True)
class VaultHandoff:
    """What a worker process that this one starts (a training rank) needs to open the same vault
    as the same principal. It travels through the start pipe of that process and is never stored."""

    settings: Settings
    dek: bytes = field(repr=False)
    principal: str

    def open(self) -> "Vault":
        return Vault(self.settings, Keyring.load(self.settings.home / KEYRING), self.dek, self.principal)


class Vault:
    """An unlocked vault. Construct with :meth:`init` or :meth:`open`."""

    def __init__(self, settings: Settings, keyring: Keyring, dek: bytes, principal: str = LEGACY_PRINCIPAL) -> None:
        self.settings = settings
        self.home = settings.home
        self.keyring = keyring
        self.principal = principal  # whose slot unlocked: the actor of what this vault audits
        self._dek = dek
        self._mac_key = _subkey(dek, "object-id")
        self._catalog_key = _subkey(dek, "catalog")  # SQLCipher's raw page key
        self._seen_generation = 0  # the newest catalog this process has read: it must never go back
        self._idle = threading.local()  # per thread: one open catalog connection between blocks (file id, connection)
        keyring.authenticate(dek, self.home / KEYRING)
        signing = Ed25519PrivateKey.from_private_bytes(self.read_file(SIGNING_KEY_FILE))
        public = Ed25519PublicKey.from_public_bytes(keyring.public_key_bytes())
        if signing.public_key().public_bytes_raw() != keyring.public_key_bytes():
            raise IntegrityError(f"{self.home / KEYRING}: audit public key does not match the vault's signing key")
        self.audit = AuditLog(self.home / AUDIT, public, dek, signing)
        converted = self._convert_catalog()  # first: every catalog read below expects the current format
        self._bind_legacy_head()  # then: an entry appended to a format-1 head would carry no catalog generation
        if converted is not None:
            self._record_conversion(converted)  # first: an entry appended to a format-1 head would carry no catalog generation
        if keyring.legacy:
            self._upgrade_keyring()
        self._check_keyring()
        self.refresh_settings()

    def _bind_legacy_head(self) -> None:
        """A format-1 head (from before binding) gets the catalog's generation, once."""
        try:
            head = self.audit.head()
        except MemoError:
            return  # a forged or unreadable head: every catalog load and `verify` report it
        if head is None or head.version != 1:
            return
        with self._lock():
            with self.read() as db:
                gen = cat.generation(db)
            self.audit.bind_catalog(gen)

    def _convert_catalog(self) -> int | None:
        """Convert a catalog of an earlier release (one sealed envelope) to the page-encrypted one,
        once; every row and the generation are copied, so the rollback binding holds across it.
        Returns the rows copied, or None when there was nothing to convert."""
        path = self.home / CATALOG
        with self._lock():
            if not cat.is_legacy(path):
                with self._catalog_connection() as db:
                    cat.ensure_schema(db)
                return None
            plain = envelope.open_sealed(self._dek, path.read_bytes(), "catalog", str(path))
            return cat.migrate_legacy(path, self._catalog_key, plain, f"{TMP_MARK}{CATALOG}.migrating")

    def _record_conversion(self, rows: int) -> None:
        """Audit the conversion and commit after it, so the old file put back is an older catalog."""
        self.audit.append(self.principal, "vault.catalog.migrated", self.keyring.vault_id, format=cat.FORMAT, rows=rows)
        try:
            self._commit(lambda d: cat.set_meta(d, "catalog_migrated_from", "envelope-1"))
        except IntegrityError:
            pass  # a rolled-back catalog was converted as it was: every load and `verify` name it

    def _upgrade_keyring(self) -> None:
        """Bring an older keyring (no MAC, or slots without principals) to the current format, once:
        its slots become the administrator's. The catalog remembers it was done, so an older copy
        put back later is refused rather than upgraded again."""
        path = self.home / KEYRING
        with self.read() as db:
            seen = cat.get_meta(db, "keyring_format")
        if seen == KEYRING_FORMAT_META or (seen == "2" and self.keyring.version < 2):
            what = "without its MAC" if self.keyring.version < 2 else "from before per-person slots"
            raise IntegrityError(f"{path}: an older keyring {what} was put back (this vault's keyring was already "
                                 "upgraded); restore the latest keyring.json")
        new = self.keyring.upgraded(self.principal)
        self._replace_keyring(new, "vault.keyring.upgraded", format=new._body()["format"], principal=self.principal,
                              slots=len(new.slots))
        self._commit(lambda d: cat.set_meta(d, "keyring_format", KEYRING_FORMAT_META))

    def _check_keyring(self) -> None:
        """The keyring on disk must be the one this vault last wrote (the catalog holds its SHA-256):
        an older copy, say one that still holds a removed person's slot, is refused."""
        path = self.home / KEYRING
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        try:
            with self.read() as db:
                current, pending = cat.get_meta(db, "keyring_sha256"), cat.get_meta(db, "keyring_sha256_next")
        except IntegrityError:
            return  # a damaged or rolled-back catalog: every catalog read and `verify` name it
        if digest == current and not pending:
            return
        if current is None or digest == pending:  # a vault from before the binding, or a change a crash cut short
            self._commit(lambda d: (cat.set_meta(d, "keyring_sha256", digest), cat.set_meta(d, "keyring_sha256_next", "")))
            return
        if digest == current:  # a change that never reached the keyring: nothing took effect
            self._commit(lambda d: cat.set_meta(d, "keyring_sha256_next", ""))
            return
        raise IntegrityError(f"{path}: is not the keyring this vault last wrote (an older copy, or one from elsewhere, was "
                             "put back: it may still hold a removed person's slot); restore the latest keyring.json")

    def _replace_keyring(self, new: Keyring, action: str, **details: Any) -> None:
        """Write a new keyring: audited first (with its SHA-256), announced to the catalog, renamed
        into place, then recorded; a crash at any point leaves the old keyring or the new one."""
        data = new.to_bytes(self._dek)
        digest = hashlib.sha256(data).hexdigest()
        with self._lock():
            self.audit.append(self.principal, action, self.keyring.vault_id, keyring_sha256=digest, **details)
            self._commit_locked(lambda d: cat.set_meta(d, "keyring_sha256_next", digest))
            atomic_write(self.home / KEYRING, data)
            self._commit_locked(lambda d: (cat.set_meta(d, "keyring_sha256", digest), cat.set_meta(d, "keyring_sha256_next", "")))
        self.keyring = new

    def _commit(self, change: Callable[[cat.Connection], Any]) -> None:
        with self._lock():
            self._commit_locked(change)

    # ------------------------------------------------------------ lifecycle
    @classmethod
    def exists(cls, settings: Settings) -> bool:
        return (settings.home / KEYRING).exists()

    @classmethod
    def init(cls, settings: Settings, secret: Secret, actor: str | None = None) -> "Vault":
        """A new vault whose one slot is its first administrator's: ``actor``, else the name the
        secret gives, else ``admin``."""
        principal = check_principal_name(actor or secret.principal or LEGACY_PRINCIPAL)
        home = settings.home
        if (home / KEYRING).exists():
            raise MemoError(f"a vault already exists at {home}; use it, or choose another MEMO_HOME")
        if home.exists() and any(p for p in home.iterdir() if not p.name.startswith(".")):
            raise MemoError(f"{home} is not empty; choose an empty directory for a new vault")
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(home, 0o700)
        dek = os.urandom(32)
        signing = Ed25519PrivateKey.generate()
        keyring = Keyring.new(dek, secret, settings.kdf, signing.public_key().public_bytes_raw(), principal)
        keyring_bytes = keyring.to_bytes(dek)
        # Everything the keyring points at is written first: a crash before the keyring leaves no vault.
        atomic_write(home / FILES / SIGNING_KEY_FILE, envelope.seal(dek, signing.private_bytes_raw(), f"file:{SIGNING_KEY_FILE}"))
        cat.create(home / CATALOG, _subkey(dek, "catalog"), {"keyring_format": KEYRING_FORMAT_META,
                                                             "keyring_sha256": hashlib.sha256(keyring_bytes).hexdigest()})
        fsync_dir(home)
        (home / AUDIT).mkdir(mode=0o700, exist_ok=True)
        public_pem = signing.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        atomic_write(home / AUDIT / "public-key.pem", public_pem, mode=0o644)
        atomic_write(home / KEYRING, keyring_bytes)
        vault = cls(settings, keyring, dek, principal)
        vault.audit.append(principal, "vault.init", keyring.vault_id, unlock_methods=keyring.slot_types(), principal=principal)
        return vault

    @classmethod
    def open(cls, settings: Settings, secret: Secret, legacy_principal: str = LEGACY_PRINCIPAL) -> "Vault":
        """Unlock with ``secret``; the slot that opens says who is acting. The slots of a keyring
        from before principals become ``legacy_principal``'s (the administrator's) on this open."""
        keyring = Keyring.load(settings.home / KEYRING)
        unlocked = keyring.open(secret)
        return cls(settings, keyring, unlocked.dek, legacy_principal if keyring.legacy else unlocked.principal)

    @classmethod
    def audit_readonly(cls, settings: Settings, public_key: Ed25519PublicKey | None = None) -> AuditLog:
        """The audit log for chain/signature verification without unlocking.

        ``public_key`` is the auditor's pinned copy; without it the key comes from the vault's own
        keyring, which anyone who can write the vault can replace (with a chain re-signed to match).
        """
        if public_key is None:
            keyring = Keyring.load(settings.home / KEYRING)
            public_key = Ed25519PublicKey.from_public_bytes(keyring.public_key_bytes())
        return AuditLog(settings.home / AUDIT, public_key)

    def rekey(self, new_secret: Secret) -> None:
        """Re-wrap the data key for the acting principal's new secrets; their old ones stop working,
        everyone else's slots and all data are untouched.

        Audited before it takes effect: the entry (with the new keyring's SHA-256) is durable
        before the keyring is replaced, so a rekey can never happen unrecorded.
        """
        mine = make_slots(self.keyring.vault_id, self._dek, new_secret, self.settings.kdf, self.principal)
        others = [s for s in self.keyring.slots if slot_principal(s) != self.principal]
        new = self.keyring.with_slots(others + mine)
        self._replace_keyring(new, "vault.rekey", unlock_methods=[s["type"] for s in mine], principal=self.principal)

    def add_person(self, name: str, secret: Secret, replace: bool = False) -> list[str]:
        """Give ``name`` slots for ``secret`` (audited as ``people.add`` by the acting principal);
        ``replace`` swaps the secrets of someone who already has slots. Returns the kinds of slot."""
        check_principal_name(name)
        theirs = [s for s in self.keyring.slots if slot_principal(s) == name]
        if theirs and not replace:
            raise MemoError(f"{name} already unlocks this vault ({', '.join(s['type'] for s in theirs)}); "
                            "give --replace to change their secret, or `memo people remove` them first")
        slots = make_slots(self.keyring.vault_id, self._dek, secret, self.settings.kdf, name)
        new = self.keyring.with_slots([s for s in self.keyring.slots if slot_principal(s) != name] + slots)
        self._replace_keyring(new, "people.add", person=name, unlock_methods=[s["type"] for s in slots], replaced=bool(theirs))
        return [s["type"] for s in slots]

    def remove_person(self, name: str) -> None:
        """Remove every slot of ``name`` (audited as ``people.remove``): their secret opens nothing
        from now on, and an older keyring that still holds it is refused."""
        left = [s for s in self.keyring.slots if slot_principal(s) != name]
        if len(left) == len(self.keyring.slots):
            raise MemoError(f"no person named {name!r} unlocks this vault; `memo people list` shows who does")
        if not left:
            raise MemoError(f"{name} holds the vault's last slot: removing it would lock everyone out")
        self._replace_keyring(self.keyring.with_slots(left), "people.remove", person=name)

    # ------------------------------------------------------------ pinned policies
    def pinned_policies(self) -> PinnedPolicies | None:
        """The policy set an administrator pinned (held in the catalog), or None."""
        import json

        with self.read() as db:
            raw = cat.get_meta(db, PINNED_META)
        if not raw:
            return None
        doc = json.loads(raw)
        return PinnedPolicies(Path(doc["origin"]), tuple((name, text.encode()) for name, text in sorted(doc["files"].items())))

    def pin_policies(self, pinned: PinnedPolicies) -> None:
        """Keep ``pinned`` in the catalog as the set in force (the caller validated and audits it)."""
        import json

        doc = {"origin": str(pinned.origin), "files": {name: data.decode("utf-8") for name, data in pinned.files}}
        with self.transaction() as db:
            cat.set_meta(db, PINNED_META, json.dumps(doc, sort_keys=True))
        self.settings = self.settings.with_pinned_policies(pinned)

    def refresh_settings(self) -> Settings:
        """Read the pinned policy set again (another process may have pinned a new one). A catalog
        that cannot be read leaves no policy in force (each load names the problem), never the
        installed folder in its place."""
        try:
            pinned = self.pinned_policies()
        except IntegrityError as exc:
            pinned = PinnedPolicies(self.home / CATALOG, (), problem=str(exc))
        self.settings = self.settings.with_pinned_policies(pinned)
        return self.settings

    def handoff(self) -> VaultHandoff:
        """This vault for a worker process this one starts (see :class:`VaultHandoff`)."""
        return VaultHandoff(self.settings, self._dek, self.principal)

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

    @contextmanager
    def _catalog_connection(self) -> Iterator[cat.Connection]:
        """A connection to the encrypted catalog; a page that fails its HMAC is an error naming the file.

        Each thread keeps its last connection open between blocks (opening one costs more than a
        lookup), but only while the file is the same file: one renamed into place is opened anew.
        A block inside another gets a connection of its own."""
        path = self.home / CATALOG
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise IntegrityError(f"{path}: catalog is missing; restore it from backup") from None
        ident = (st.st_dev, st.st_ino)
        idle = getattr(self._idle, "conn", None)
        self._idle.conn = None
        if idle is not None and idle[0] != ident:
            idle[1].close()
            idle = None
        db = idle[1] if idle is not None else self._connect(path)
        ok = False
        try:
            yield db
            ok = True
        except cat.DatabaseError as exc:
            if cat.is_broken(exc):
                raise self._unreadable(path, cat.broken(path, exc)) from None
            raise
        finally:
            if db.in_transaction:
                try:
                    db.execute("ROLLBACK")
                except cat.DatabaseError:
                    ok = False
            if ok and getattr(self._idle, "conn", None) is None:
                self._idle.conn = (ident, db)
            else:
                db.close()

    def _connect(self, path: Path) -> cat.Connection:
        try:
            return cat.connect(path, self._catalog_key)
        except IntegrityError as exc:
            raise self._unreadable(path, exc) from None

    @staticmethod
    def _unreadable(path: Path, exc: IntegrityError) -> IntegrityError:
        """Why the catalog cannot be read: an earlier release's file put back, or a damaged one."""
        if cat.is_legacy(path):
            return IntegrityError(f"{path}: is in an earlier release's format, but this vault's catalog was already "
                                  "converted: an older copy was put back; restore the latest catalog.db.enc")
        return exc

    def _check_loaded(self, db: cat.Connection, write: bool) -> None:
        """Start the block's transaction and check the catalog against the signed audit head (read
        before and after the snapshot is taken, so concurrent commits never look like a rollback):
        see the module docstring."""
        before = self.audit.head()
        db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        gen = cat.generation(db)  # the snapshot starts with this read
        self._check_fresh(db, before, self.audit.head(), gen)

    def _check_fresh(self, db: cat.Connection, before: Head | None, after: Head | None, gen: int) -> None:
        path, head_path = self.home / CATALOG, self.audit.head_path
        bound = before.catalog if before else 0
        if gen < bound:
            raise IntegrityError(f"{path}: an older copy was put back (generation {gen}, but the signed audit head records "
                                 f"generation {bound}); restore the latest catalog.db.enc")
        if gen < self._seen_generation:
            raise IntegrityError(f"{path}: went back from generation {self._seen_generation} to {gen} while this process "
                                 "ran: an older copy was put back; restore the latest catalog.db.enc")
        seq, _ = cat.audit_position(db)
        if seq and after is None:
            raise IntegrityError(f"{head_path}: missing, but the catalog was committed after audit entry {seq}; "
                                 "restore the audit folder")
        if after is not None and (after.seq < seq or (after.version > 1 and after.catalog + 1 < gen)):
            raise IntegrityError(f"{head_path}: older than the catalog (the head records entry {after.seq} and catalog "
                                 f"generation {after.catalog}; the catalog, generation {gen}, was committed after entry {seq}): "
                                 "the audit log or its head was rolled back; restore the latest audit folder")
        self._seen_generation = gen

    @contextmanager
    def read(self) -> Iterator[cat.Connection]:
        """A consistent snapshot of the catalog (one read transaction); changes made to it are discarded."""
        with self._catalog_connection() as db:
            self._check_loaded(db, write=False)
            yield db

    @contextmanager
    def transaction(self) -> Iterator[cat.Connection]:
        """Exclusive read-modify-write of the catalog; committed only if the block succeeds."""
        with self._lock():
            with self._catalog_connection() as db:
                self._check_loaded(db, write=True)
                yield db
                self._write_catalog(db)

    def _write_catalog(self, db: cat.Connection) -> None:
        """Commit (vault lock held): the catalog records the audit head it follows, then the head
        records the catalog's new generation (a crash between leaves the catalog one ahead: allowed)."""
        gen = cat.bump_generation(db)
        head = self.audit.head()
        if head is not None:
            cat.set_audit_position(db, head.seq, head.hash)
        db.execute("COMMIT")
        self._seen_generation = gen
        self.audit.bind_catalog(gen)

    def _commit_locked(self, change: Callable[[cat.Connection], Any]) -> None:
        with self._catalog_connection() as db:
            self._check_loaded(db, write=True)
            change(db)
            self._write_catalog(db)

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
            principal=self.principal,
            people=len(self.keyring.principals()),
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

    def referenced_objects(self, db: cat.Connection) -> set[str]:
        refs: set[str] = set()
        for row in db.execute("SELECT raw_oid, text_oid FROM versions"):
            refs.update(o for o in row if o)
        refs.update(r[0] for r in db.execute("SELECT oid FROM chunks"))
        return refs

    def verify(self, progress: Callable[[int, int], None] | None = None) -> VaultVerifyReport:
        """Authenticate every file; report each problem by file name, and the audit chain."""
        problems: list[str] = []
        try:
            ring = Keyring.load(self.home / KEYRING)
            if ring.legacy or not ring.authenticate(self._dek, self.home / KEYRING):
                problems.append(f"{self.home / KEYRING}: is in an old format (format {ring.version}) though this vault's "
                                "keyring was upgraded: an older copy was put back; restore the latest keyring.json")
            else:
                with self.read() as db:
                    accepted = {cat.get_meta(db, "keyring_sha256"), cat.get_meta(db, "keyring_sha256_next")}
                if hashlib.sha256((self.home / KEYRING).read_bytes()).hexdigest() not in accepted:
                    problems.append(f"{self.home / KEYRING}: is not the keyring this vault last wrote (an older copy was "
                                    "put back); restore the latest keyring.json")
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
            with self._catalog_connection() as db:  # every page's HMAC, free pages too
                problems += [f"{self.home / CATALOG}: {p} (corrupted or tampered); restore it from backup"
                             for p in cat.integrity_problems(db)]
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
        audit = self.verify_audit()
        if not audit.ok:
            problems.append(f"audit log: {audit.problem}")
        return VaultVerifyReport(
            ok=not problems,
            checked_files=total + 2,
            problems=problems,
            orphans=sorted(present - refs),
            audit=audit.to_dict(),
        )

    def verify_audit(self, witnesses: Sequence[tuple[Head, str]] = ()) -> VerifyResult:
        """The audit chain and payloads, checked against the catalog it is bound to and against
        any witness (a head saved outside the vault): a rollback of either half is named."""
        try:
            with self.read() as db:
                seq, digest = cat.audit_position(db)
                gen = cat.generation(db)
            for witness, name in witnesses:
                if gen < witness.catalog:
                    return VerifyResult(False, 0, None, f"{self.home / CATALOG}: generation {gen} is older than the "
                                        f"{witness.catalog} {name} records: the vault was rolled back (an older catalog, or an older copy "
                                        "of the whole vault, was put back)", True)
            anchors = list(witnesses)
            if seq and digest:
                anchors.append((Head(seq, digest), f"{self.home / CATALOG} (generation {gen})"))
            return self.audit.verify(anchors)
        except MemoError as exc:
            return VerifyResult(False, 0, None, str(exc), True)

    def gc(self, actor: str | None = None) -> int:
        """Delete objects no catalog row references (left by an interrupted ingest or a forget), and
        the temp files of killed writers (ciphertext only). Walking the whole vault is this command's
        job, never a commit's: a commit's cost must not grow with the number of objects."""
        with self.transaction() as db:
            remove_stale_temps(self.home)
            orphans = set(self.object_ids()) - self.referenced_objects(db)
            for oid in orphans:
                self.delete_object(oid)
        self.audit.append(actor or self.principal, "vault.gc", None, removed_objects=len(orphans))
        return len(orphans)
