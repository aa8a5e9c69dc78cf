"""The vault's metadata database: SQLite encrypted page by page with SQLCipher.

Every page of the file, its rollback journal and any temporary table is encrypted (AES-256-CBC
under a per-file random salt) and authenticated (HMAC-SHA512 per page, the page number bound in),
so no plaintext page or journal reaches the disk and a flipped byte fails the page it lands in.
A transaction writes only the pages it changed: ingest cost per batch no longer grows with the
catalog (the whole database used to be decrypted for every read and re-encrypted for every
commit). The key is a raw 256-bit subkey of the vault's data key, so opening runs no KDF.

The journal is SQLite's rollback journal (``journal_mode=DELETE``, ``synchronous=FULL``): after a
commit the database is the one file ``catalog.db.enc``, so a file put back from a backup is a
whole, older catalog whose generation shows it (WAL frames left beside an older file could
overlay it with newer pages). Catalogs written by earlier releases — the whole database sealed in
one envelope — are converted by :func:`migrate_legacy`.

SQLCipher (``sqlcipher3-binary``) was picked over SQLite3 Multiple Ciphers (``apsw-sqlite3mc``) on
measurement (``bench/catalog_engines.py``): both encrypt pages, journal and WAL and open in well
under a millisecond with a raw key, but SQLCipher's module is a DB-API drop-in for ``sqlite3``
(rows, transactions and errors as before) and ``PRAGMA cipher_integrity_check`` checks every
page's HMAC and names the page, which ``memo vault verify`` reports.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlcipher3

from appliance.crypto.atomic import fsync_dir
from appliance.errors import IntegrityError

SCHEMA_VERSION = 1
FORMAT = "sqlcipher-4"  # meta 'catalog_format': the on-disk format this catalog was written in
BUSY_TIMEOUT_MS = 60_000  # a reader waits this long for a commit in another process
_BROKEN = ("file is not a database", "database disk image is malformed", "malformed database schema")

Connection = sqlcipher3.Connection
Row = sqlcipher3.Row
DatabaseError = sqlcipher3.DatabaseError

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    forgotten_at TEXT
);
CREATE TABLE IF NOT EXISTS versions (
    doc_id TEXT NOT NULL REFERENCES documents(id),
    version INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('current', 'superseded', 'forgotten')),
    title TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    content_mac TEXT NOT NULL,
    raw_oid TEXT,
    text_oid TEXT,
    n_words INTEGER NOT NULL,
    n_chunks INTEGER NOT NULL,
    duplicate_of TEXT,
    duplicate_kind TEXT CHECK (duplicate_kind IN ('exact', 'near') OR duplicate_kind IS NULL),
    similarity REAL,
    minhash BLOB,
    ingested_at TEXT NOT NULL,
    superseded_at TEXT,
    PRIMARY KEY (doc_id, version)
);
CREATE INDEX IF NOT EXISTS versions_mac ON versions(content_mac);
CREATE INDEX IF NOT EXISTS versions_status ON versions(status, doc_id);
CREATE TABLE IF NOT EXISTS minhash_bands (
    band INTEGER NOT NULL,
    key INTEGER NOT NULL,
    doc_id TEXT NOT NULL,
    PRIMARY KEY (band, key, doc_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chunks (
    doc_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    oid TEXT NOT NULL,
    n_words INTEGER NOT NULL,
    PRIMARY KEY (doc_id, version, seq)
);
CREATE INDEX IF NOT EXISTS chunks_oid ON chunks(oid);
CREATE TABLE IF NOT EXISTS memory_versions (
    id TEXT PRIMARY KEY,
    parent TEXT,
    base_model TEXT NOT NULL,
    method TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    lineage TEXT NOT NULL,
    metrics TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS approvals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    version_id TEXT NOT NULL,
    principal TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('approve', 'reject')),
    message TEXT NOT NULL,
    signature TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (version_id, principal)
);
CREATE TABLE IF NOT EXISTS api_tokens (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    expires_at TEXT,
    revoked_at TEXT,
    revoked_by TEXT
);
"""


def broken(path: Path, exc: BaseException) -> IntegrityError:
    """The one-line error for a page that fails its HMAC (or a file that is no catalog at all)."""
    return IntegrityError(f"{path}: authentication failed ({exc}: corrupted, tampered, or not this vault's catalog); "
                          "restore it from backup (`memo vault verify` names the page)")


def is_broken(exc: BaseException) -> bool:
    return isinstance(exc, sqlcipher3.DatabaseError) and any(m in str(exc) for m in _BROKEN)


def connect(path: Path, key: bytes) -> Connection:
    """Open (or create, mode 0600) the encrypted catalog at ``path`` with the raw 256-bit ``key``.

    Autocommit mode: callers open transactions explicitly (``BEGIN`` / ``BEGIN IMMEDIATE``), so
    nothing commits behind the vault's back. The first page is read here, so a wrong key or a
    damaged header is reported at once, naming the file.
    """
    if len(key) != 32:
        raise ValueError("the catalog key is 32 bytes")
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # SQLite keeps an existing file's mode
    db = sqlcipher3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        db.execute("PRAGMA cipher_log_level = NONE")  # errors are ours to report, one line each
        db.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
        db.execute("PRAGMA temp_store = MEMORY")  # temporary tables and sort spills never reach the disk
        db.execute("PRAGMA foreign_keys = ON")
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA synchronous = FULL")
        mode = db.execute("PRAGMA journal_mode = DELETE").fetchone()[0]
        if mode != "delete":
            raise IntegrityError(f"{path}: could not use a rollback journal (journal mode {mode})")
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlcipher3.DatabaseError as exc:
        db.close()
        if is_broken(exc):
            raise broken(path, exc) from None
        raise
    db.row_factory = sqlcipher3.Row
    return db


def create(path: Path, key: bytes, meta: dict[str, str] | None = None) -> None:
    """A new catalog at ``path`` (the file must not exist) holding ``meta``, durable when this returns."""
    if path.exists():
        raise FileExistsError(path)
    db = connect(path, key)
    try:
        db.execute("BEGIN IMMEDIATE")
        _schema(db)
        first = {"schema_version": str(SCHEMA_VERSION), "catalog_format": FORMAT, "generation": "0",
                 "minhash_bands": "1"}  # an empty catalog's band index is complete (corpus.dedup.BandIndex)
        for k, v in {**first, **(meta or {})}.items():
            set_meta(db, k, v)
        db.execute("COMMIT")
    finally:
        db.close()


def _schema(db: Connection) -> None:
    """Tables and indexes added by newer releases appear (inside the caller's transaction)."""
    for statement in SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)


def ensure_schema(db: Connection) -> bool:
    """Bring an open catalog's schema up to this release's; True when something was added."""
    have = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    want = {s.split("EXISTS", 1)[1].split()[0] for s in SCHEMA.split(";") if "EXISTS" in s}
    if want <= have:
        return False
    db.execute("BEGIN IMMEDIATE")
    try:
        _schema(db)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return True


@contextmanager
def snapshot(db: Connection) -> Iterator[Connection]:
    """A read transaction: every query in the block sees one committed state; nothing is kept."""
    db.execute("BEGIN")
    try:
        yield db
    finally:
        if db.in_transaction:
            db.execute("ROLLBACK")


def is_legacy(path: Path) -> bool:
    """A catalog of an earlier release: the whole database sealed in one envelope."""
    from appliance.crypto.envelope import MAGIC

    try:
        with open(path, "rb") as fh:
            return fh.read(len(MAGIC)) == MAGIC
    except FileNotFoundError:
        return False


def migrate_legacy(path: Path, key: bytes, plaintext: bytes, tmp_name: str) -> int:
    """Write the legacy catalog ``plaintext`` (a serialised SQLite database, decrypted in RAM) as
    an encrypted catalog beside ``path`` and rename it over ``path``: a crash leaves the old
    file or the new one. Every row is copied, the generation included. Returns the row count."""
    import sqlite3

    old = sqlite3.connect(":memory:")
    old.deserialize(plaintext)
    tmp = path.parent / tmp_name
    for stale in (tmp, Path(f"{tmp}-journal")):
        stale.unlink(missing_ok=True)
    new = connect(tmp, key)
    rows = 0
    try:
        new.execute("BEGIN IMMEDIATE")
        _schema(new)
        tables = [r[0] for r in old.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
        for table in tables:
            cols = [r[1] for r in old.execute(f'PRAGMA table_info("{table}")')]
            if not new.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)).fetchone():
                new.execute(old.execute("SELECT sql FROM sqlite_master WHERE name=?", (table,)).fetchone()[0])
            names = ", ".join(f'"{c}"' for c in cols)
            marks = ", ".join("?" for _ in cols)
            data = old.execute(f'SELECT {names} FROM "{table}"').fetchall()
            new.executemany(f'INSERT OR REPLACE INTO "{table}" ({names}) VALUES ({marks})', data)
            rows += len(data)
        set_meta(new, "catalog_format", FORMAT)
        new.execute("COMMIT")
    finally:
        new.close()
        old.close()
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return rows


def integrity_problems(db: Connection) -> list[str]:
    """Every page's HMAC (``cipher_integrity_check``) and the b-tree structure (``integrity_check``)."""
    problems = [str(r[0]) for r in db.execute("PRAGMA cipher_integrity_check")]
    if not problems:
        problems = [str(r[0]) for r in db.execute("PRAGMA integrity_check") if r[0] != "ok"]
    return problems


def get_meta(db: Any, key: str) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    return row[0] if row else None


def set_meta(db: Any, key: str, value: str) -> None:
    db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))


def generation(db: Any) -> int:
    """How many times this catalog was committed: it only grows, so an older copy shows."""
    return int(get_meta(db, "generation") or 0)


def bump_generation(db: Any) -> int:
    gen = generation(db) + 1
    set_meta(db, "generation", str(gen))
    return gen


def audit_position(db: Any) -> tuple[int, str | None]:
    """The signed audit head (seq, hash) this catalog was committed after; (0, None) before binding."""
    return int(get_meta(db, "audit_seq") or 0), get_meta(db, "audit_hash")


def set_audit_position(db: Any, seq: int, digest: str) -> None:
    set_meta(db, "audit_seq", str(seq))
    set_meta(db, "audit_hash", digest)
