"""Ingestion: files → text → chunks → encrypted objects + catalog rows, with versions and duplicates.

A document is identified by its source path; re-ingesting a changed file adds a version and
supersedes the previous one, an unchanged file is skipped. Identical text under another path is an
exact duplicate (recorded, not chunked again); very similar text is a near duplicate (kept and
marked). Work is committed in batches, each audited before it is committed, so an interrupted run
loses at most one batch and re-running it finishes the job.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from appliance.config import current_actor
from appliance.corpus.chunking import chunk_text
from appliance.corpus.dedup import NearDuplicateIndex, from_blob, minhash, to_blob
from appliance.corpus.readers import MEDIA_TYPES, UnreadableInput, extract
from appliance.errors import MemoError
from appliance.vault.store import Vault


class IngestCancelled(MemoError):
    """The run was cancelled; committed batches are kept and a re-run continues."""


@dataclass
class IngestOutcome:
    path: str
    status: str  # added | new_version | unchanged | duplicate | skipped
    doc_id: str | None = None
    version: int | None = None
    chunks: int = 0
    bytes: int = 0
    reason: str | None = None
    duplicate_of: str | None = None
    similarity: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class IngestReport:
    outcomes: list[IngestOutcome] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def chunks(self) -> int:
        return sum(o.chunks for o in self.outcomes)

    @property
    def bytes(self) -> int:
        return sum(o.bytes for o in self.outcomes if o.status != "skipped")

    def summary(self) -> dict[str, Any]:
        return {
            "files": len(self.outcomes),
            **{s: self.count(s) for s in ("added", "new_version", "unchanged", "duplicate", "skipped")},
            "near_duplicates": sum(1 for o in self.outcomes if o.similarity is not None and o.status != "duplicate"),
            "chunks": self.chunks,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
        }

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary(), "outcomes": [o.to_dict() for o in self.outcomes]}


@dataclass
class _Prepared:
    outcome: IngestOutcome
    source: str
    title: str
    media_type: str
    content_mac: str
    raw_oid: str | None
    text_oid: str | None
    n_words: int
    chunk_rows: list[tuple[int, str, int]]
    minhash: bytes | None
    reingest_forgotten: bool = False


def discover(paths: Iterable[Path], exclude: Path | None = None) -> list[Path]:
    """Expand directories (sorted, hidden entries skipped); every named path must exist.

    ``exclude`` is the vault's own directory: ingesting the vault into itself is never wanted.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise MemoError(f"{path}: no such file or directory")
        if path.is_dir():
            for p in sorted(path.rglob("*")):
                rel = p.relative_to(path).parts
                if p.is_file() and not any(part.startswith(".") for part in rel):
                    found.append(p)
        else:
            found.append(path)
    seen: set[Path] = set()
    unique = []
    skip = exclude.resolve() if exclude else None
    for p in found:
        r = p.resolve()
        if skip is not None and r.is_relative_to(skip):
            continue
        if r not in seen:
            seen.add(r)
            unique.append(p)
    return unique


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Ingestor:
    """One ingest run over a vault; holds the run's view of sources, contents and near-duplicates."""

    def __init__(self, vault: Vault, actor: str | None = None, allow_forgotten: bool = False) -> None:
        self.vault = vault
        self.settings = vault.settings
        self.actor = actor or current_actor()
        self.allow_forgotten = allow_forgotten
        self.index = NearDuplicateIndex(self.settings.ingest)
        self.by_source: dict[str, tuple[str, str, bool]] = {}  # source -> (doc_id, content_mac, forgotten)
        self.by_content: dict[str, str] = {}  # content mac of a current version -> doc_id
        with vault.read() as db:
            for row in db.execute(
                "SELECT d.id, d.source, d.forgotten_at, v.content_mac, v.minhash FROM documents d "
                "LEFT JOIN versions v ON v.doc_id = d.id AND v.status = 'current'"
            ):
                self.by_source[row["source"]] = (row["id"], row["content_mac"] or "", row["forgotten_at"] is not None)
                if row["content_mac"]:
                    self.by_content.setdefault(row["content_mac"], row["id"])
                if row["minhash"]:
                    self.index.add(row["id"], from_blob(row["minhash"], self.settings.ingest))

    def doc_id_for(self, source: str) -> str:
        return "doc-" + self.vault.mac(source.encode(), "doc-id")[:12]

    def forgotten_key(self, source: str) -> str:
        return "forgotten:" + self.vault.mac(source.encode(), "forgotten-source")

    def prepare(self, path: Path) -> _Prepared | IngestOutcome:
        """Read, extract and store the objects of one file; return what the catalog must record."""
        source = str(path.resolve())
        limit = self.settings.ingest.max_file_bytes
        try:
            size = path.stat().st_size
            if size > limit:
                raise UnreadableInput(
                    f"{path}: {_human(size)} exceeds the {_human(limit)} limit; split the document or raise the limit"
                )
            if path.suffix.lower() not in MEDIA_TYPES:
                raise UnreadableInput(
                    f"{path}: unsupported file type {path.suffix or '(none)'}; supported: {', '.join(sorted(MEDIA_TYPES))}"
                )
            data = path.read_bytes()
            extracted = extract(data, path)
        except UnreadableInput as exc:
            return IngestOutcome(str(path), "skipped", reason=str(exc))
        except OSError as exc:
            return IngestOutcome(str(path), "skipped", reason=f"{path}: cannot read ({exc.strerror})")
        doc_id = self.doc_id_for(source)
        content_mac = self.vault.mac(extracted.text.encode(), "text")
        forgotten_key = self.forgotten_key(source)
        reingest_forgotten = False
        if forgotten_key in self.by_source:
            if not self.allow_forgotten:
                return IngestOutcome(
                    str(path), "skipped", doc_id=doc_id,
                    reason=f"{path}: this document was forgotten; pass --allow-forgotten to ingest it again",
                )
            reingest_forgotten = True
        known = self.by_source.get(source)
        if known and known[1] == content_mac:
            return IngestOutcome(str(path), "unchanged", doc_id=doc_id, bytes=size)
        outcome = IngestOutcome(str(path), "new_version" if known else "added", doc_id=doc_id, bytes=size)
        exact = self.by_content.get(content_mac)
        raw_oid = self.vault.put_object(data, "raw", durable=False)
        text_oid = self.vault.put_object(extracted.text.encode(), "text", durable=False)
        if exact and exact != doc_id:
            outcome.status, outcome.duplicate_of, outcome.similarity = "duplicate", exact, 1.0
            return _Prepared(outcome, source, extracted.title, extracted.media_type, content_mac, raw_oid, text_oid,
                             len(extracted.text.split()), [], None, reingest_forgotten)
        mh = minhash(extracted.text, self.settings.ingest)
        match = self.index.best_match(mh, exclude=doc_id)
        if match:
            outcome.duplicate_of, outcome.similarity = match[0], round(match[1], 3)
        chunk_rows = []
        for chunk in chunk_text(extracted.text, self.settings.chunking):
            chunk_rows.append((chunk.seq, self.vault.put_object(chunk.text.encode(), "chunk", durable=False), chunk.n_words))
        outcome.chunks = len(chunk_rows)
        return _Prepared(outcome, source, extracted.title, extracted.media_type, content_mac, raw_oid, text_oid,
                         len(extracted.text.split()), chunk_rows, to_blob(mh), reingest_forgotten)

    def note(self, item: _Prepared) -> None:
        """Update the run's view so later files in the same run see this one."""
        doc_id = item.outcome.doc_id
        assert doc_id is not None
        self.by_source[item.source] = (doc_id, item.content_mac, False)
        self.by_content.setdefault(item.content_mac, doc_id)
        if item.minhash:
            self.index.add(doc_id, from_blob(item.minhash, self.settings.ingest))
        else:
            self.index.remove(doc_id)

    def commit(self, batch: list[_Prepared]) -> None:
        if not batch:
            return
        self.vault.flush()  # the batch's objects are durable before anything refers to them
        self.vault.audit.append_many([
            (self.actor, "ingest.document", item.outcome.doc_id, {
                "status": item.outcome.status, "source": item.source, "media_type": item.media_type,
                "bytes": item.outcome.bytes, "chunks": item.outcome.chunks,
                "duplicate_of": item.outcome.duplicate_of, "similarity": item.outcome.similarity,
            })
            for item in batch
        ])
        with self.vault.transaction() as db:
            now = _now()
            for item in batch:
                self._record(db, item, now)

    def _record(self, db, item: _Prepared, now: str) -> None:  # noqa: ANN001
        o = item.outcome
        if item.reingest_forgotten:
            db.execute("UPDATE documents SET source=?, forgotten_at=NULL WHERE id=?", (item.source, o.doc_id))
        db.execute("INSERT OR IGNORE INTO documents (id, source, created_at) VALUES (?, ?, ?)", (o.doc_id, item.source, now))
        row = db.execute("SELECT version, content_mac FROM versions WHERE doc_id=? AND status='current'", (o.doc_id,)).fetchone()
        if row and row["content_mac"] == item.content_mac:
            o.status, o.version = "unchanged", row["version"]  # a concurrent run recorded it first
            return
        if row:
            db.execute("UPDATE versions SET status='superseded', superseded_at=? WHERE doc_id=? AND version=?", (now, o.doc_id, row["version"]))
        version = (db.execute("SELECT MAX(version) FROM versions WHERE doc_id=?", (o.doc_id,)).fetchone()[0] or 0) + 1
        o.version = version
        db.execute(
            "INSERT INTO versions (doc_id, version, status, title, media_type, size_bytes, content_mac, raw_oid, text_oid,"
            " n_words, n_chunks, duplicate_of, duplicate_kind, similarity, minhash, ingested_at)"
            " VALUES (?, ?, 'current', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (o.doc_id, version, item.title, item.media_type, o.bytes, item.content_mac, item.raw_oid, item.text_oid,
             item.n_words, len(item.chunk_rows), o.duplicate_of,
             ("exact" if o.status == "duplicate" else "near") if o.duplicate_of else None,
             o.similarity, item.minhash, now),
        )
        db.executemany(
            "INSERT INTO chunks (doc_id, version, seq, oid, n_words) VALUES (?, ?, ?, ?, ?)",
            [(o.doc_id, version, seq, oid, n) for seq, oid, n in item.chunk_rows],
        )


def ingest(
    vault: Vault,
    paths: Iterable[Path],
    actor: str | None = None,
    progress: Callable[[IngestOutcome, int, int], None] | None = None,
    cancel: threading.Event | None = None,
    allow_forgotten: bool = False,
) -> IngestReport:
    """Ingest files and directories; ``progress(outcome, done, total)`` after each file."""
    started = time.monotonic()
    files = discover(paths, exclude=vault.home)
    ing = Ingestor(vault, actor, allow_forgotten)
    params = vault.settings.ingest
    report = IngestReport()
    vault.audit.append(ing.actor, "ingest.start", None, files=len(files))
    batch: list[_Prepared] = []
    last_commit = time.monotonic()
    try:
        for i, path in enumerate(files, start=1):
            if cancel is not None and cancel.is_set():
                raise IngestCancelled(f"ingest cancelled after {i - 1} of {len(files)} files; re-run to continue")
            result = ing.prepare(path)
            if isinstance(result, _Prepared):
                ing.note(result)
                batch.append(result)
                outcome = result.outcome
            else:
                outcome = result
            report.outcomes.append(outcome)
            if len(batch) >= params.batch_documents or time.monotonic() - last_commit >= params.batch_seconds:
                ing.commit(batch)
                batch, last_commit = [], time.monotonic()
            if progress:
                progress(outcome, i, len(files))
    finally:
        ing.commit(batch)  # what is fully prepared is kept, even on Ctrl-C
        report.seconds = time.monotonic() - started
    vault.audit.append_many([
        (ing.actor, "ingest.skipped", o.doc_id, {"source": o.path, "reason": o.reason})
        for o in report.outcomes if o.status == "skipped"
    ])
    vault.audit.append(ing.actor, "ingest.finish", None, **report.summary())
    return report
