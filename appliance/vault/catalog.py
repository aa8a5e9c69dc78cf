"""The vault's metadata database: SQLite held in memory, persisted as one encrypted file.

Keeping the whole database inside an authenticated envelope means no SQLite page, journal or WAL
with plaintext ever reaches the disk, and any flipped byte is detected. The catalog stays small
(ids, versions, hashes, offsets); content lives in encrypted objects.
"""

from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 1

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


def new_catalog() -> sqlite3.Connection:
    db = connect_memory()
    db.executescript(SCHEMA)
    db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    db.execute("INSERT OR REPLACE INTO meta VALUES ('generation', '0')")
    db.commit()
    return db


def connect_memory() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:", check_same_thread=False)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA foreign_keys = ON")
    return db


def from_bytes(data: bytes) -> sqlite3.Connection:
    db = connect_memory()
    db.deserialize(data)
    db.executescript(SCHEMA)  # tables added by newer releases appear on open
    return db


def to_bytes(db: sqlite3.Connection) -> bytes:
    db.commit()
    return db.serialize()


def bump_generation(db: sqlite3.Connection) -> int:
    gen = int(db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0]) + 1
    db.execute("UPDATE meta SET value=? WHERE key='generation'", (str(gen),))
    return gen
