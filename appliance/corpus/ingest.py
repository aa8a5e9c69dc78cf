"""Ingestion: files → text → chunks → encrypted objects + catalog rows, with versions and duplicates.

A document is identified by its source path; re-ingesting a changed file adds a version and
supersedes the previous one, an unchanged file is skipped. Identical text under another path is an
exact duplicate (recorded, not chunked again); very similar text is a near duplicate (kept and
marked). Work is committed in batches, each audited before it is committed, so an interrupted run
loses at most one batch and re-running it finishes the job.

Every input is untrusted. Files are found without following links out of the folder given (a
symlink whose target lies outside it is refused, as are FIFOs, sockets and devices, and a file
is opened below its folder one component at a time with ``O_NOFOLLOW``, so a link swapped in
meanwhile is not followed either); each file is parsed in a worker process under limits
(:mod:`appliance.corpus.sandbox`), while this process reads the next file and hashes, chunks and
encrypts the last. A file that cannot be ingested is skipped with a one-line reason and the run
goes on. File names need not be UTF-8: the catalog and reports show undecodable bytes as
``\\xNN``.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from appliance.config import current_actor
from appliance.corpus.chunking import chunk_text
from appliance.corpus.dedup import BandIndex, NearDuplicateIndex, from_blob, minhash, similarity, to_blob
from appliance.corpus.limits import ParseLimits
from appliance.corpus.readers import MEDIA_TYPES, Extracted, UnreadableInput
from appliance.corpus.sandbox import ParserPool
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
    file: Path | None = field(default=None, repr=False)  # the file itself (``path`` is its printable name)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None and k != "file"}


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


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(32), 127]}


def printable(path: Path | str) -> str:
    """A path as one line of text that survives UTF-8 everywhere (catalog, audit, terminal):
    bytes of a non-UTF-8 name and control characters (a newline in a name) become ``\\xNN``;
    other names are unchanged."""
    return os.fsencode(path).decode("utf-8", "backslashreplace").translate(_CONTROL)


_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory"))


def _not_regular(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    return next((what for test, what in _KINDS if test(mode)), "not a regular file")


@dataclass(frozen=True)
class Entry:
    """A file to ingest: where it was found, what to read (below ``root`` when confined), or why not."""

    path: Path
    target: Path
    root: Path | None = None  # resolved folder it must be read below; None: a file named on its own
    refused: str | None = None

    @property
    def name(self) -> str:
        return printable(self.path)


def _classify(path: Path, root: Path, where: Path, named: bool = False) -> Entry | None:
    """What the entry ``path`` below ``root`` (resolved; ``where`` is ``path`` under it) is.

    None for a directory, or a link to one inside the root: a walk finds its files anyway; a file
    ``named`` on its own that is a link to a folder is refused instead.
    """
    try:
        st = os.lstat(path)
    except OSError as exc:
        return Entry(path, where, root, f"{printable(path)}: cannot read ({exc.strerror})")
    if stat.S_ISLNK(st.st_mode):
        target = path.resolve()
        if not target.is_relative_to(root):
            return Entry(path, target, root, f"{printable(path)}: symbolic link to {printable(target)}, outside "
                                             f"{printable(root)}; refused (copy the file in instead)")
        try:
            mode = os.stat(target).st_mode
        except OSError:
            return Entry(path, target, root, f"{printable(path)}: broken symbolic link; refused")
        if stat.S_ISDIR(mode) and not named:
            return None
        return Entry(path, target, root, None if stat.S_ISREG(mode) else
                     f"{printable(path)}: symbolic link to {_not_regular(mode)}; only regular files are ingested")
    if stat.S_ISDIR(st.st_mode) and not named:
        return None
    kind = _not_regular(st.st_mode)
    return Entry(path, where, root, f"{printable(path)}: is {kind}, not a regular file; refused" if kind else None)


def _walk(root: Path) -> list[Entry]:
    """Entries below ``root``, hidden ones skipped, links to folders never descended."""
    base = root.resolve()
    found: list[Entry] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        for name in sorted(filenames) + [d for d in dirnames if (here / d).is_symlink()]:
            if name.startswith("."):
                continue
            path = here / name
            entry = _classify(path, base, base / path.relative_to(root))
            if entry is not None:
                found.append(entry)
    return found


def discover(paths: Iterable[Path], exclude: Path | None = None, confine: Path | None = None) -> list[Entry]:
    """Expand directories (sorted, hidden entries skipped); every named path must exist.

    ``exclude`` is the vault's own directory: ingesting the vault into itself is never wanted.
    ``confine`` (the daemon's inbox): every named path is an entry of that folder, under the same
    rules as a walked folder's; without it a file named on its own is read where it is (a link
    named on the command line is the operator's choice and is followed).
    """
    found: list[Entry] = []
    base = confine.resolve() if confine is not None else None
    for raw in paths:
        path = Path(raw).expanduser()
        if base is not None:
            if not os.path.lexists(path):
                continue  # taken by another process meanwhile
            if not path.is_relative_to(confine):  # type: ignore[arg-type]
                raise MemoError(f"{printable(path)}: not inside {printable(confine)}")  # type: ignore[arg-type]
            entry = _classify(path, base, base / path.relative_to(confine), named=True)  # type: ignore[arg-type]
            if entry is not None:
                found.append(entry)
        elif not path.exists():
            raise MemoError(f"{printable(path)}: no such file or directory")
        elif path.is_dir():
            found.extend(sorted(_walk(path), key=lambda e: e.path))
        else:
            found.append(Entry(path, path))
    seen: set[Path] = set()
    unique = []
    skip = exclude.resolve() if exclude else None
    for e in found:
        r = e.target.resolve() if e.refused is None else e.path.absolute()
        if skip is not None and r.is_relative_to(skip):
            continue
        if r not in seen:
            seen.add(r)
            unique.append(e)
    return unique


_NOFOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


class _Folders:
    """The folder last opened below a root, one component at a time with ``O_NOFOLLOW``: its
    files are then opened relative to it (files come sorted by folder, so each is opened once)."""

    def __init__(self) -> None:
        self._key: tuple[Path, Path] | None = None
        self._fd: int | None = None

    def open(self, root: Path, target: Path) -> int:
        parent = target.parent
        if self._key != (root, parent):
            self.close()
            fd = os.open(root, _NOFOLLOW | os.O_DIRECTORY)
            try:
                for part in parent.relative_to(root).parts:
                    nxt = os.open(part, _NOFOLLOW | os.O_DIRECTORY, dir_fd=fd)
                    os.close(fd)
                    fd = nxt
            except BaseException:
                os.close(fd)
                raise
            self._key, self._fd = (root, parent), fd
        return os.open(target.name, _NOFOLLOW | os.O_NONBLOCK, dir_fd=self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._key, self._fd = None, None


def read_input(entry: Entry, limit: int, folders: _Folders | None = None) -> bytes:
    """The file's bytes, or :class:`UnreadableInput`: not a regular file (a FIFO cannot hang us:
    it is opened non-blocking and refused), too large, or unreadable."""
    name = entry.name
    try:
        if entry.root is not None:
            own = folders or _Folders()
            try:
                fd = own.open(entry.root, entry.target)
            finally:
                if own is not folders:
                    own.close()
        else:
            fd = os.open(entry.target, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnreadableInput(f"{name}: a symbolic link appeared in its path while it was read; refused") from None
        raise UnreadableInput(f"{name}: cannot read ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        kind = _not_regular(st.st_mode)
        if kind:
            raise UnreadableInput(f"{name}: is {kind}, not a regular file; refused")
        if st.st_size > limit:
            raise UnreadableInput(f"{name}: {_human(st.st_size)} exceeds the {_human(limit)} limit; split the document or raise the limit")
        parts, got = [], 0
        while got <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - got))
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        if got > limit:
            raise UnreadableInput(f"{name}: grew past the {_human(limit)} limit while it was read; split the document")
        return b"".join(parts)
    except OSError as exc:
        raise UnreadableInput(f"{name}: cannot read ({exc.strerror})") from None
    finally:
        os.close(fd)


@dataclass
class _Loaded:
    entry: Entry
    data: bytes


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Ingestor:
    """One ingest run over a vault. What the vault already holds is looked up in the catalog per
    file (indexed: by source, by content, by LSH band), so a run's cost does not grow with the
    vault; the files of this run are kept here, so later files of the run see earlier ones."""

    def __init__(self, vault: Vault, actor: str | None = None, allow_forgotten: bool = False) -> None:
        self.vault = vault
        self.settings = vault.settings
        self.actor = actor or current_actor()
        self.allow_forgotten = allow_forgotten
        self.folders = _Folders()
        self.index = NearDuplicateIndex(self.settings.ingest)  # this run's documents
        self.bands = BandIndex(self.settings.ingest)  # the vault's
        self.by_source: dict[str, tuple[str, str, bool]] = {}  # this run's: source -> (doc_id, content_mac, forgotten)
        self.by_content: dict[str, str] = {}  # this run's: content mac of a current version -> doc_id
        self._touched: set[str] = set()  # documents this run gave a new current version
        with vault.read() as db:
            complete = self.bands.complete(db)
        if not complete:  # a catalog of an earlier release: index its signatures once
            with vault.transaction() as db:
                if not self.bands.complete(db):
                    self.bands.rebuild(db)

    def _known(self, db: Any, source: str) -> tuple[str, str, bool] | None:
        """(doc_id, content mac of its current version, forgotten) of the document at ``source``."""
        if source in self.by_source:
            return self.by_source[source]
        row = db.execute("SELECT d.id, d.forgotten_at, v.content_mac FROM documents d LEFT JOIN versions v "
                         "ON v.doc_id = d.id AND v.status = 'current' WHERE d.source = ?", (source,)).fetchone()
        return (row["id"], row["content_mac"] or "", row["forgotten_at"] is not None) if row else None

    def _same_content(self, db: Any, content_mac: str) -> str | None:
        """The document whose current version has this text (the vault's first, then this run's)."""
        row = db.execute("SELECT v.doc_id FROM versions v JOIN documents d ON d.id = v.doc_id "
                         "WHERE v.content_mac = ? AND v.status = 'current' ORDER BY d.rowid LIMIT 1", (content_mac,)).fetchone()
        return row["doc_id"] if row else self.by_content.get(content_mac)

    def _near(self, db: Any, mh: Any, doc_id: str) -> tuple[str, float] | None:
        """The most similar current document at or above the threshold: the vault's, then this run's."""
        blob = to_blob(mh)
        threshold = self.settings.ingest.near_duplicate_threshold
        best = self.index.best_match(mh, exclude=doc_id)
        for other, theirs in self.bands.candidates(db, blob):
            if other == doc_id or other in self._touched:
                continue  # this run changed it: the run's own index has its current text
            sim = similarity(blob, theirs)
            if sim >= threshold and (best is None or sim > best[1]):
                best = (other, sim)
        return best

    def doc_id_for(self, source: str) -> str:
        return "doc-" + self.vault.mac(source.encode(), "doc-id")[:12]

    def forgotten_key(self, source: str) -> str:
        return "forgotten:" + self.vault.mac(source.encode(), "forgotten-source")

    def load(self, entry: Entry) -> _Loaded | IngestOutcome:
        """Check and read one file (this process: it holds no parser)."""
        if entry.refused:
            return IngestOutcome(entry.name, "skipped", reason=entry.refused, file=entry.path)
        try:
            if entry.path.suffix.lower() not in MEDIA_TYPES:
                raise UnreadableInput(
                    f"{entry.name}: unsupported file type {printable(entry.path.suffix) or '(none)'}; "
                    f"supported: {', '.join(sorted(MEDIA_TYPES))}"
                )
            data = read_input(entry, self.settings.ingest.max_file_bytes, self.folders)
        except UnreadableInput as exc:
            return IngestOutcome(entry.name, "skipped", reason=str(exc), file=entry.path)
        return _Loaded(entry, data)

    def prepare(self, loaded: _Loaded, extracted: Extracted | str) -> _Prepared | IngestOutcome:
        """Store the objects of one parsed file; return what the catalog must record."""
        entry = loaded.entry
        path = entry.name
        if isinstance(extracted, str):
            return IngestOutcome(path, "skipped", reason=extracted, file=entry.path)
        source = printable(entry.target.resolve())
        doc_id = self.doc_id_for(source)
        content_mac = self.vault.mac(extracted.text.encode(), "text")
        with self.vault.read() as db:
            return self._prepare(db, loaded, extracted, source, doc_id, content_mac)

    def _prepare(self, db: Any, loaded: _Loaded, extracted: Extracted, source: str, doc_id: str,
                 content_mac: str) -> _Prepared | IngestOutcome:
        """:meth:`prepare` within one read of the catalog (what the vault already holds)."""
        entry, data = loaded.entry, loaded.data
        path, size = entry.name, len(data)
        reingest_forgotten = False
        forgotten = self._known(db, self.forgotten_key(source)) is not None
        known = self._known(db, source)
        exact = self._same_content(db, content_mac)
        if forgotten:
            if not self.allow_forgotten:
                return IngestOutcome(
                    path, "skipped", doc_id=doc_id, file=entry.path,
                    reason=f"{path}: this document was forgotten; pass --allow-forgotten to ingest it again",
                )
            reingest_forgotten = True
        if known and known[1] == content_mac:
            return IngestOutcome(path, "unchanged", doc_id=doc_id, bytes=size, file=entry.path)
        outcome = IngestOutcome(path, "new_version" if known else "added", doc_id=doc_id, bytes=size, file=entry.path)
        raw_oid = self.vault.put_object(data, "raw", durable=False)
        text_oid = self.vault.put_object(extracted.text.encode(), "text", durable=False)
        if exact and exact != doc_id:
            outcome.status, outcome.duplicate_of, outcome.similarity = "duplicate", exact, 1.0
            return _Prepared(outcome, source, extracted.title, extracted.media_type, content_mac, raw_oid, text_oid,
                             len(extracted.text.split()), [], None, reingest_forgotten)
        mh = minhash(extracted.text, self.settings.ingest)
        match = self._near(db, mh, doc_id)
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
        self._touched.add(doc_id)
        if item.minhash:
            self.index.add(doc_id, from_blob(item.minhash, self.settings.ingest))
        else:
            self.index.remove(doc_id)

    def commit(self, batch: list[_Prepared], skipped: list[IngestOutcome] | None = None) -> None:
        """Audit the batch (and the files refused since the last commit), then record it."""
        skipped = skipped or []
        if not batch and not skipped:
            return
        if batch:
            self.vault.flush()  # the batch's objects are durable before anything refers to them
        self.vault.audit.append_many([
            (self.actor, "ingest.document", item.outcome.doc_id, {
                "status": item.outcome.status, "source": item.source, "media_type": item.media_type,
                "bytes": item.outcome.bytes, "chunks": item.outcome.chunks,
                "duplicate_of": item.outcome.duplicate_of, "similarity": item.outcome.similarity,
            })
            for item in batch
        ] + [(self.actor, "ingest.skipped", o.doc_id, {"source": o.path, "reason": o.reason}) for o in skipped])
        if not batch:
            return
        with self.vault.transaction() as db:
            now = _now()
            for item in batch:
                self._record(db, item, now)

    def _record(self, db, item: _Prepared, now: str) -> None:  # noqa: ANN001
        o = item.outcome
        if item.reingest_forgotten:
            db.execute("UPDATE documents SET source=?, forgotten_at=NULL WHERE id=?", (item.source, o.doc_id))
        db.execute("INSERT OR IGNORE INTO documents (id, source, created_at) VALUES (?, ?, ?)", (o.doc_id, item.source, now))
        row = db.execute("SELECT version, content_mac, minhash FROM versions WHERE doc_id=? AND status='current'",
                         (o.doc_id,)).fetchone()
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
        self.bands.record(db, o.doc_id, item.minhash, previous=row["minhash"] if row else None)


def ingest(
    vault: Vault,
    paths: Iterable[Path],
    actor: str | None = None,
    progress: Callable[[IngestOutcome, int, int], None] | None = None,
    cancel: threading.Event | None = None,
    allow_forgotten: bool = False,
    confine: Path | None = None,
    on_commit: Callable[[list[IngestOutcome]], None] | None = None,
    limits: ParseLimits | None = None,
    workers: int | None = None,
) -> IngestReport:
    """Ingest files and directories; ``progress(outcome, done, total)`` after each file.

    ``on_commit(outcomes)`` runs after each batch is committed (and audited) with every outcome
    settled since the last call, so a caller can move those files away at once (the daemon's
    inbox: nothing already in the vault stays behind if a later file fails the run).
    ``confine``: see :func:`discover`; ``limits``/``workers``: the parser sandbox.
    """
    started = time.monotonic()
    files = discover(paths, exclude=vault.home, confine=confine)
    ing = Ingestor(vault, actor, allow_forgotten)
    params = vault.settings.ingest
    report = IngestReport()
    vault.audit.append(ing.actor, "ingest.start", None, files=len(files))
    batch: list[_Prepared] = []
    skipped: list[IngestOutcome] = []
    settled: list[IngestOutcome] = []
    last_commit = time.monotonic()

    def commit() -> None:
        nonlocal batch, skipped, settled, last_commit
        ing.commit(batch, skipped)
        done, batch, skipped, settled, last_commit = settled, [], [], [], time.monotonic()
        if on_commit and done:
            on_commit(done)

    with ParserPool(limits, workers) as pool:
        # files are read here and parsed by the pool a few ahead of the one being stored
        window: deque[tuple[_Loaded | IngestOutcome, Future[Extracted | str] | None]] = deque()
        ahead, in_flight = 0, 0
        depth = 2 * pool.size + 1
        try:
            for i in range(1, len(files) + 1):
                while ahead < len(files) and (not window or (len(window) < depth and in_flight < 64 * 2**20)):
                    loaded = ing.load(files[ahead])
                    ahead += 1
                    if isinstance(loaded, _Loaded):
                        window.append((loaded, pool.submit(loaded.data, loaded.entry.name)))
                        in_flight += len(loaded.data)
                    else:
                        window.append((loaded, None))
                if cancel is not None and cancel.is_set():
                    raise IngestCancelled(f"ingest cancelled after {i - 1} of {len(files)} files; re-run to continue")
                loaded, future = window.popleft()
                if future is not None:
                    assert isinstance(loaded, _Loaded)
                    in_flight -= len(loaded.data)
                    result = ing.prepare(loaded, future.result())
                else:
                    result = loaded  # type: ignore[assignment]
                if isinstance(result, _Prepared):
                    ing.note(result)
                    batch.append(result)
                    outcome = result.outcome
                else:
                    outcome = result
                    if outcome.status == "skipped":
                        skipped.append(outcome)
                report.outcomes.append(outcome)
                settled.append(outcome)
                if len(batch) >= params.batch_documents or time.monotonic() - last_commit >= params.batch_seconds:
                    commit()
                if progress:
                    progress(outcome, i, len(files))
        finally:
            ing.folders.close()
            commit()  # what is fully prepared is kept, even on Ctrl-C
            report.seconds = time.monotonic() - started
    vault.audit.append(ing.actor, "ingest.finish", None, **report.summary())
    return report
