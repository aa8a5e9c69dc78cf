"""Append-only, hash-chained, signed audit log.

Each line is ``{"seq", "prev", "ct", "hash", "sig", "end"}``: the entry's payload (time, actor,
action, ids, details) is sealed with the vault key, because questions and answers recorded later
are as sensitive as the corpus. ``hash`` covers seq, the previous hash and the ciphertext; ``sig``
is an Ed25519 signature by the appliance's audit key over the hash and ``end``, which marks the
last entry of one write (format-1 lines, from before ``end``, sign the hash alone).

A signed head file records the last entry and the catalog generation last committed, so cutting
entries off the end is detected, and so is an older ``head.json`` put back: the head may lag the
log only by the one write a crash can interrupt (between the log's fsync and the head's rename),
and the ``end`` marks show whether more than one write lies beyond it. Chain and signatures
verify with the public key alone; payload authenticity additionally needs the vault unlocked.
What a consistent older copy of the whole log and head cannot show by itself is caught against
a witness: a head saved outside the vault (``verify(witnesses=...)``, :mod:`appliance.audit.witness`).
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from appliance.errors import IntegrityError, MemoError
from appliance.crypto import envelope
from appliance.crypto.atomic import atomic_write

GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    ts: str
    actor: str
    action: str
    target: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    hash: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "details": self.details,
            "hash": self.hash,
        }


@dataclass
class VerifyResult:
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    problem: str | None = None
    payloads_checked: bool = False
    head: dict[str, Any] | None = None  # the signed head verified (seq, hash, catalog, sig): what a witness saves

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _entry_hash(seq: int, prev: str, ct: bytes) -> str:
    h = hashlib.sha256()
    h.update(f"memo-audit-v1|{seq}|{prev}|".encode())
    h.update(ct)
    return h.hexdigest()


@dataclass
class _Pending:
    events: list[tuple[str, str, str | None, dict[str, Any]]]
    done: bool = False
    entries: list[AuditEntry] = field(default_factory=list)
    error: BaseException | None = None


def _one_write(head_end: bool | None, after: list[tuple[int, bool | None]]) -> bool:
    """Whether the entries past the head are the one write a crash can leave unacknowledged:
    the head's own entry ended a write, and only the last entry after it ends one (format-1
    entries, which carry no ``end``, are taken as they come)."""
    if head_end is False:
        return False
    *middle, (_, last) = after
    return last is not False and not any(end is True for _, end in middle)


def _seq_hash(line: bytes) -> tuple[int, str] | None:
    if not line.endswith(b"\n"):
        return None
    try:
        rec = json.loads(line)
        return int(rec["seq"]), str(rec["hash"])
    except (ValueError, KeyError, TypeError):
        return None


def _head_message(seq: int, digest: str) -> bytes:
    return f"memo-audit-head-v1|{seq}|{digest}".encode()


def _sig_message(digest: str, end: bool | None) -> bytes:
    """What an entry's signature covers: the hash, and (format 2) whether it ends its write."""
    if end is None:
        return bytes.fromhex(digest)
    return f"memo-audit-entry-v2|{digest}|{'end' if end else 'more'}".encode()


@dataclass(frozen=True)
class Head:
    """The signed pointer to the last entry; ``catalog`` is the catalog generation last committed."""

    seq: int
    hash: str
    catalog: int = 0
    sig: str = ""
    version: int = 2

    def message(self) -> bytes:
        if self.version == 1:
            return _head_message(self.seq, self.hash)
        return f"memo-audit-head-v2|{self.seq}|{self.hash}|{self.catalog}".encode()

    def signed(self, key: Ed25519PrivateKey) -> "Head":
        return Head(self.seq, self.hash, self.catalog, base64.b64encode(key.sign(self.message())).decode(), self.version)

    def to_bytes(self) -> bytes:
        doc: dict[str, Any] = {"seq": self.seq, "hash": self.hash, "sig": self.sig}
        if self.version != 1:
            doc.update(v=self.version, catalog=self.catalog)
        return json.dumps(doc).encode()

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash, "catalog": self.catalog, "sig": self.sig, "v": self.version}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Head":
        return cls(int(d["seq"]), str(d["hash"]), int(d.get("catalog", 0)), str(d.get("sig", "")), int(d.get("v", 2)))

    @classmethod
    def parse(cls, raw: bytes, public_key: Ed25519PublicKey, name: str) -> "Head":
        """A head file's content, its signature checked; ``name`` is what an error reports."""
        try:
            doc = json.loads(raw)
            version = int(doc.get("v", 1))
            head = cls(int(doc["seq"]), str(doc["hash"]), int(doc.get("catalog", 0)) if version != 1 else 0,
                       str(doc["sig"]), version)
            if version not in (1, 2) or head.seq < 0 or head.catalog < 0 or len(head.hash) != 64:
                raise ValueError
            public_key.verify(base64.b64decode(head.sig, validate=True), head.message())
            return head
        except (ValueError, KeyError, TypeError, AttributeError, InvalidSignature):
            raise IntegrityError(f"{name}: signed head is corrupt or forged (or not signed by this vault's audit key)") from None

    @classmethod
    def load(cls, path: Path, public_key: Ed25519PublicKey) -> "Head":
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise MemoError(f"cannot read {path}: {exc.strerror}") from None
        if len(raw) > 4096:
            raise IntegrityError(f"{path}: signed head is corrupt or forged (too large)")
        return cls.parse(raw, public_key, str(path))


class AuditLog:
    """The log of one vault. ``data_key``/``signing_key`` are None when only verifying chain."""

    def __init__(
        self,
        directory: Path,
        public_key: Ed25519PublicKey,
        data_key: bytes | None = None,
        signing_key: Ed25519PrivateKey | None = None,
    ) -> None:
        self.dir = directory
        self.path = directory / "log.jsonl"
        self.head_path = directory / "head.json"
        self.public_key = public_key
        self._data_key = data_key
        self._signing_key = signing_key
        self._writer = threading.Lock()  # one thread of this process writes; the others' events ride along
        self._pending: list[_Pending] = []
        self._pending_lock = threading.Lock()

    # ----------------------------------------------------------------- writing
    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _tail(self) -> tuple[int, str, int]:
        """Return (last seq, last hash, byte length of the intact log); a torn last line is ignored."""
        if not self.path.exists():
            return 0, GENESIS, 0
        with open(self.path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            block = 4096
            while True:
                start = max(0, size - block)
                fh.seek(start)
                data = fh.read(size - start)
                end = data.rfind(b"\n")
                begin = data.rfind(b"\n", 0, end) if end >= 0 else -1
                if start == 0 or begin >= 0:
                    break
                block *= 2
        if end < 0:
            return 0, GENESIS, 0
        rec = json.loads(data[begin + 1 : end])
        return int(rec["seq"]), str(rec["hash"]), start + end + 1

    def head(self) -> Head | None:
        """The signed head now on disk (signature checked), or None when there is none yet."""
        if not self.head_path.exists():
            return None
        return Head.load(self.head_path, self.public_key)

    def _write_head(self, head: Head) -> None:
        assert self._signing_key is not None
        atomic_write(self.head_path, head.signed(self._signing_key).to_bytes())

    def append(self, actor: str, action: str, target: str | None = None, **details: Any) -> AuditEntry:
        return self.append_many([(actor, action, target, details)])[0]

    def append_many(self, events: list[tuple[str, str, str | None, dict[str, Any]]]) -> list[AuditEntry]:
        """Append (actor, action, target, details) events with one fsync and one head update.

        Group commit: threads appending at the same time (the API server's requests) are written
        together by whichever holds the writer lock, with one fsync; each call still returns only
        once its own entries are durable.
        """
        if self._data_key is None or self._signing_key is None:
            raise MemoError("the audit log is read-only until the vault is unlocked")
        if not events:
            return []
        mine = _Pending(events)
        with self._pending_lock:
            self._pending.append(mine)
        with self._writer:
            if not mine.done:
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                try:
                    written = self._write([e for p in batch for e in p.events])
                except BaseException as exc:
                    for p in batch:
                        p.done, p.error = True, exc
                else:
                    for p in batch:
                        p.done, p.entries, written = True, written[: len(p.events)], written[len(p.events):]
        if mine.error is not None:
            raise mine.error
        return mine.entries

    def _write(self, events: list[tuple[str, str, str | None, dict[str, Any]]]) -> list[AuditEntry]:
        assert self._data_key is not None and self._signing_key is not None
        with self._locked():
            try:
                seq, prev, intact = self._tail()
            except (ValueError, KeyError):
                raise IntegrityError(f"{self.path}: last entry unreadable; run `memo audit verify`") from None
            current = self.head()  # refuses to extend a log whose head is forged
            if self.path.exists() and self.path.stat().st_size != intact:
                # a writer died mid-line: that entry was never acknowledged
                with open(self.path, "r+b") as fh:
                    fh.truncate(intact)
                    os.fsync(fh.fileno())
            written: list[AuditEntry] = []
            lines: list[bytes] = []
            for n, (actor, action, target, details) in enumerate(events, start=1):
                seq += 1
                end = n == len(events)
                entry = AuditEntry(
                    seq=seq,
                    ts=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                    actor=actor,
                    action=action,
                    target=target,
                    details=details,
                )
                payload = json.dumps(
                    {k: v for k, v in entry.to_dict().items() if k not in ("seq", "hash")},
                    sort_keys=True,
                    separators=(",", ":"),
                    default=str,
                ).encode()
                ct = envelope.seal(self._data_key, payload, f"audit:{seq}")
                digest = _entry_hash(seq, prev, ct)
                sig = self._signing_key.sign(_sig_message(digest, end))
                record = {"seq": seq, "prev": prev, "ct": base64.b64encode(ct).decode(), "hash": digest,
                          "sig": base64.b64encode(sig).decode(), "end": end}
                lines.append(json.dumps(record, separators=(",", ":")).encode() + b"\n")
                written.append(AuditEntry(**{**entry.__dict__, "hash": digest}))
                prev = digest
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, b"".join(lines))
                os.fsync(fd)
            finally:
                os.close(fd)
            self._write_head(Head(seq, prev, current.catalog if current else 0))
            return written

    def bind_catalog(self, generation: int) -> None:
        """Record in the signed head that catalog ``generation`` was committed (the vault calls
        this after each catalog write, under its lock), so an older catalog put back shows."""
        if self._signing_key is None:
            raise MemoError("the audit log is read-only until the vault is unlocked")
        with self._locked():
            current = self.head()
            if current is not None and current.catalog >= generation:
                return
            if current is None:
                seq, prev, _ = self._tail()
                current = Head(seq, prev)
            self._write_head(Head(current.seq, current.hash, generation))

    # ----------------------------------------------------------------- reading
    def _lines(self, limit: int | None = None) -> Iterator[tuple[int, bytes]]:
        """Complete lines, up to byte ``limit`` (a snapshot's length) when given."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as fh:
            read = 0
            for lineno, line in enumerate(fh, start=1):
                if not line.endswith(b"\n"):
                    return  # a torn line from a crash: never acknowledged, ignored
                read += len(line)
                if limit is not None and read > limit:
                    return
                yield lineno, line

    def _snapshot(self) -> tuple[bytes | None, int]:
        """The head file's bytes and the log's length, taken together under the writers' lock
        (when this reader can take it: an auditor's read-only copy has no lock to take)."""
        def take() -> tuple[bytes | None, int]:
            head = self.head_path.read_bytes() if self.head_path.exists() else None
            size = self.path.stat().st_size if self.path.exists() else 0
            return head, size

        try:
            fd = os.open(self.dir / ".lock", os.O_RDONLY)
        except OSError:
            return take()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return take()
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def verify(self, witnesses: Sequence[tuple[Head, str]] = ()) -> VerifyResult:
        """Walk the whole chain; report the first entry that breaks it.

        ``witnesses`` are (head, name) pairs recorded earlier where this log cannot rewrite them: an
        auditor's saved head, the daemon's, the position the catalog was committed at. The log
        must still hold each one's entry, unchanged, and the signed head must not be older.
        """
        prev = GENESIS
        expected_seq = 1
        count = 0
        head_raw, size = self._snapshot()

        def broken(seq: int, problem: str) -> VerifyResult:
            return VerifyResult(False, count, seq, problem, self._data_key is not None)

        head_problem: str | None = None
        try:
            head = Head.parse(head_raw, self.public_key, str(self.head_path)) if head_raw is not None else None
        except IntegrityError as exc:
            head, head_problem = None, str(exc)
        hseq = head.seq if head else 0
        hash_at: dict[int, str] = {}
        wanted = {hseq, *(w.seq for w, _ in witnesses)}
        ends_after_head: list[tuple[int, bool | None]] = []  # (seq, end) of the entries past the head
        head_entry_end: bool | None = None
        for lineno, line in self._lines(size):
            try:
                rec = json.loads(line)
                seq, rec_prev, digest = int(rec["seq"]), str(rec["prev"]), str(rec["hash"])
                ct = base64.b64decode(rec["ct"], validate=True)
                sig = base64.b64decode(rec["sig"], validate=True)
                end = rec.get("end")
                if end is not None and not isinstance(end, bool):
                    raise ValueError
            except (ValueError, KeyError, TypeError):
                return broken(expected_seq, f"entry {expected_seq} (line {lineno}) is malformed")
            if seq != expected_seq:
                return broken(expected_seq, f"entry {expected_seq} (line {lineno}) has seq {seq}: entries were deleted, inserted or reordered")
            if rec_prev != prev:
                return broken(seq, f"entry {seq} (line {lineno}) does not link to entry {seq - 1}: the chain is broken")
            if _entry_hash(seq, prev, ct) != digest:
                return broken(seq, f"entry {seq} (line {lineno}) was modified: its hash does not match")
            try:
                self.public_key.verify(sig, _sig_message(digest, end))
            except (InvalidSignature, ValueError):
                return broken(seq, f"entry {seq} (line {lineno}) has an invalid signature")
            if self._data_key is not None:
                try:
                    envelope.open_sealed(self._data_key, ct, f"audit:{seq}", f"audit entry {seq}")
                except IntegrityError:
                    return broken(seq, f"entry {seq} (line {lineno}) payload fails authentication")
            if seq in wanted:
                hash_at[seq] = digest
            if seq == hseq:
                head_entry_end = end
            elif seq > hseq:
                ends_after_head.append((seq, end))
            prev = digest
            expected_seq += 1
            count += 1
        if head_problem:
            return broken(count, head_problem)
        if head is not None:
            if count < hseq:
                return broken(count + 1, f"entry {count + 1} to {hseq} missing: the log ends at entry {count} but the signed head records {hseq} (entries removed from the end)")
            if hseq >= 1 and hash_at.get(hseq) != head.hash:
                return broken(hseq, f"entry {hseq} differs from the one the signed head records")
            if ends_after_head and not _one_write(head_entry_end if hseq else True, ends_after_head):
                return broken(hseq + 1, f"{self.head_path} records entry {hseq}, but the log goes on to entry {count} over more "
                                        "than one write: an older head.json was put back (restore the latest one)")
        elif count:
            return broken(count, f"{self.head_path} is missing: the log's end cannot be confirmed")
        for witness, name in witnesses:
            if count < witness.seq:
                return broken(count + 1, f"{self.path} ends at entry {count} but {name} records entry {witness.seq}: "
                                         "the audit log was rolled back or truncated")
            if witness.seq >= 1 and hash_at.get(witness.seq) != witness.hash:
                return broken(witness.seq, f"entry {witness.seq} differs from the one {name} records: the audit log was replaced")
            if hseq < witness.seq:
                return broken(hseq + 1, f"{self.head_path} records entry {hseq}, older than the entry {witness.seq} {name} "
                                        "records: an older head.json was put back")
            if head is not None and head.catalog < witness.catalog:
                return broken(hseq, f"{self.head_path} records catalog generation {head.catalog}, older than the "
                                    f"{witness.catalog} {name} records: the vault was rolled back")
        return VerifyResult(True, count, payloads_checked=self._data_key is not None,
                            head=head.to_dict() if head else None)

    def locate(self, seq: int, hint: int | None = None) -> tuple[str, int] | None:
        """(hash, byte offset) of entry ``seq``; the scan starts at offset ``hint`` (an earlier
        entry's, as a witness keeps it) when the line there is that entry or one before it."""
        if seq < 1 or not self.path.exists():
            return None
        with open(self.path, "rb") as fh:
            offset = 0
            if hint is not None and hint > 0:
                fh.seek(hint)
                found = _seq_hash(fh.readline())
                offset = hint if found and found[0] <= seq else 0
            fh.seek(offset)
            for line in fh:
                found = _seq_hash(line)
                if found and found[0] == seq:
                    return found[1], offset
                offset += len(line)
        return None

    def entries(self) -> Iterator[AuditEntry]:
        """Decrypt entries in order (authenticating each); verify() checks the chain."""
        if self._data_key is None:
            raise MemoError("reading audit entries needs the vault unlocked")
        for lineno, line in self._lines():
            try:
                rec = json.loads(line)
                seq = int(rec["seq"])
                ct = base64.b64decode(rec["ct"], validate=True)
            except (ValueError, KeyError, TypeError):
                raise IntegrityError(f"{self.path}: line {lineno} is malformed; run `memo audit verify`") from None
            payload = json.loads(envelope.open_sealed(self._data_key, ct, f"audit:{seq}", f"audit entry {seq}"))
            yield AuditEntry(seq=seq, hash=rec["hash"], **payload)

    def entries_lenient(self) -> Iterator[AuditEntry]:
        """Like :meth:`entries`, but an entry that cannot be parsed or decrypted comes back as an
        ``(unreadable)`` placeholder instead of ending the walk, so a reviewer of a tampered log
        still sees every other entry around the broken one (the console's audit table)."""
        if self._data_key is None:
            raise MemoError("reading audit entries needs the vault unlocked")
        for lineno, line in self._lines():
            seq = lineno
            try:
                rec = json.loads(line)
                seq = int(rec["seq"])
                ct = base64.b64decode(rec["ct"], validate=True)
                payload = json.loads(envelope.open_sealed(self._data_key, ct, f"audit:{seq}", f"audit entry {seq}"))
                yield AuditEntry(seq=seq, hash=rec["hash"], **payload)
            except (ValueError, KeyError, TypeError, IntegrityError) as exc:
                yield AuditEntry(seq=seq, ts="", actor="?", action="(unreadable)", details={"line": lineno, "problem": str(exc)})

    def count(self) -> int:
        return sum(1 for _ in self._lines())


def matches(entry: AuditEntry, actor: str | None = None, action: str | None = None, target: str | None = None,
            since: str | None = None, until: str | None = None) -> bool:
    """The filters of ``memo audit show/export``: exact actor and target, an action or its prefix
    (``ingest`` matches ``ingest.file``), ISO time bounds compared as text (so ``2026-01-31`` works)."""
    if actor and entry.actor != actor:
        return False
    if action and not (entry.action == action or entry.action.startswith(action.rstrip("*").rstrip(".") + ".")):
        return False
    if target and entry.target != target:
        return False
    if since and entry.ts < since:
        return False
    if until and entry.ts > until:
        return False
    return True
