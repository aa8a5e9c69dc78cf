"""Append-only, hash-chained, signed audit log.

Each line is ``{"seq", "prev", "ct", "hash", "sig"}``: the entry's payload (time, actor, action,
ids, details) is sealed with the vault key, because questions and answers recorded later are as
sensitive as the corpus. ``hash`` covers seq, the previous hash and the ciphertext; ``sig`` is an
Ed25519 signature over it by the appliance's audit key. A signed head file records the last entry,
so cutting entries off the end is detected too. Chain and signatures verify with the public key
alone; payload authenticity additionally needs the vault unlocked.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from appliance.errors import IntegrityError, MemoError
from appliance.vault import envelope
from appliance.vault.atomic import atomic_write

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

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _entry_hash(seq: int, prev: str, ct: bytes) -> str:
    h = hashlib.sha256()
    h.update(f"memo-audit-v1|{seq}|{prev}|".encode())
    h.update(ct)
    return h.hexdigest()


def _head_message(seq: int, digest: str) -> bytes:
    return f"memo-audit-head-v1|{seq}|{digest}".encode()


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

    def append(self, actor: str, action: str, target: str | None = None, **details: Any) -> AuditEntry:
        return self.append_many([(actor, action, target, details)])[0]

    def append_many(self, events: list[tuple[str, str, str | None, dict[str, Any]]]) -> list[AuditEntry]:
        """Append (actor, action, target, details) events with one fsync and one head update."""
        if self._data_key is None or self._signing_key is None:
            raise MemoError("the audit log is read-only until the vault is unlocked")
        if not events:
            return []
        with self._locked():
            try:
                seq, prev, intact = self._tail()
            except (ValueError, KeyError):
                raise IntegrityError(f"{self.path}: last entry unreadable; run `memo audit verify`") from None
            if self.path.exists() and self.path.stat().st_size != intact:
                # a writer died mid-line: that entry was never acknowledged
                with open(self.path, "r+b") as fh:
                    fh.truncate(intact)
                    os.fsync(fh.fileno())
            written: list[AuditEntry] = []
            lines: list[bytes] = []
            for actor, action, target, details in events:
                seq += 1
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
                sig = self._signing_key.sign(bytes.fromhex(digest))
                record = {"seq": seq, "prev": prev, "ct": base64.b64encode(ct).decode(), "hash": digest,
                          "sig": base64.b64encode(sig).decode()}
                lines.append(json.dumps(record, separators=(",", ":")).encode() + b"\n")
                written.append(AuditEntry(**{**entry.__dict__, "hash": digest}))
                prev = digest
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, b"".join(lines))
                os.fsync(fd)
            finally:
                os.close(fd)
            head_sig = self._signing_key.sign(_head_message(seq, prev))
            atomic_write(
                self.head_path,
                json.dumps({"seq": seq, "hash": prev, "sig": base64.b64encode(head_sig).decode()}).encode(),
            )
            return written

    # ----------------------------------------------------------------- reading
    def _lines(self) -> Iterator[tuple[int, bytes]]:
        if not self.path.exists():
            return
        with open(self.path, "rb") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.endswith(b"\n"):
                    return  # a torn line from a crash: never acknowledged, ignored
                yield lineno, line

    def verify(self) -> VerifyResult:
        """Walk the whole chain; report the first entry that breaks it."""
        prev = GENESIS
        expected = 1
        count = 0

        def broken(seq: int, problem: str) -> VerifyResult:
            return VerifyResult(False, count, seq, problem, self._data_key is not None)

        for lineno, line in self._lines():
            try:
                rec = json.loads(line)
                seq, rec_prev, digest = int(rec["seq"]), str(rec["prev"]), str(rec["hash"])
                ct = base64.b64decode(rec["ct"], validate=True)
                sig = base64.b64decode(rec["sig"], validate=True)
            except (ValueError, KeyError, TypeError):
                return broken(expected, f"entry {expected} (line {lineno}) is malformed")
            if seq != expected:
                return broken(expected, f"entry {expected} (line {lineno}) has seq {seq}: entries were deleted, inserted or reordered")
            if rec_prev != prev:
                return broken(seq, f"entry {seq} (line {lineno}) does not link to entry {seq - 1}: the chain is broken")
            if _entry_hash(seq, prev, ct) != digest:
                return broken(seq, f"entry {seq} (line {lineno}) was modified: its hash does not match")
            try:
                self.public_key.verify(sig, bytes.fromhex(digest))
            except (InvalidSignature, ValueError):
                return broken(seq, f"entry {seq} (line {lineno}) has an invalid signature")
            if self._data_key is not None:
                try:
                    envelope.open_sealed(self._data_key, ct, f"audit:{seq}", f"audit entry {seq}")
                except IntegrityError:
                    return broken(seq, f"entry {seq} (line {lineno}) payload fails authentication")
            prev = digest
            expected += 1
            count += 1
        try:
            head = self._read_head()
        except IntegrityError as exc:
            return broken(count, str(exc))
        if head is not None:
            hseq, hhash = head
            if count < hseq:
                return broken(count + 1, f"entry {count + 1} to {hseq} missing: the log ends at entry {count} but the signed head records {hseq} (entries removed from the end)")
            if hseq >= 1 and not self._hash_at(hseq, hhash):
                return broken(hseq, f"entry {hseq} differs from the one the signed head records")
        elif count:
            return broken(count, f"{self.head_path} is missing: the log's end cannot be confirmed")
        return VerifyResult(True, count, payloads_checked=self._data_key is not None)

    def _hash_at(self, seq: int, digest: str) -> bool:
        for _, line in self._lines():
            rec = json.loads(line)
            if rec["seq"] == seq:
                return rec["hash"] == digest
        return False

    def _read_head(self) -> tuple[int, str] | None:
        if not self.head_path.exists():
            return None
        try:
            head = json.loads(self.head_path.read_bytes())
            seq, digest = int(head["seq"]), str(head["hash"])
            self.public_key.verify(base64.b64decode(head["sig"]), _head_message(seq, digest))
            return seq, digest
        except (ValueError, KeyError, TypeError, InvalidSignature):
            raise IntegrityError(f"{self.head_path}: signed head is corrupt or forged") from None

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
