"""The audit log for the people who review it: filtered reading, export (itself audited), and
verification of the chain against the catalog, a saved head and the auditor's pinned key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from appliance.app.session import Session, use
from appliance.audit import witness
from appliance.audit.log import AuditEntry, VerifyResult, matches
from appliance.crypto.atomic import atomic_write


@dataclass(frozen=True)
class AuditFilter:
    """The filters of `memo audit show/export` and the console's audit tab (see :func:`matches`)."""

    actor: str | None = None
    action: str | None = None
    target: str | None = None
    since: str | None = None
    until: str | None = None

    def __call__(self, entry: AuditEntry) -> bool:
        return matches(entry, self.actor, self.action, self.target, self.since, self.until)


def _filtered(session: Session, flt: AuditFilter, lenient: bool) -> Iterator[AuditEntry]:
    log = session.vault.audit
    return (e for e in (log.entries_lenient() if lenient else log.entries()) if flt(e))


@use("audit.show")
def entries(session: Session, flt: AuditFilter = AuditFilter(), lenient: bool = False) -> list[AuditEntry]:
    """Decrypted entries that match, oldest first; ``lenient``: an unreadable entry shows as a
    placeholder instead of ending the walk (a reviewer of a tampered log still sees the rest)."""
    return list(_filtered(session, flt, lenient))


@use("audit.export")
def export(session: Session, flt: AuditFilter = AuditFilter(), out: Path | None = None,
           chosen: list[AuditEntry] | None = None) -> str:
    """The matching entries (or ``chosen`` ones) as JSONL, written to ``out`` when given; audited as
    ``audit.export`` before it leaves (the export is plaintext)."""
    picked = chosen if chosen is not None else list(_filtered(session, flt, False))
    lines = [json.dumps(e.to_dict(), sort_keys=True, default=str) for e in picked]
    session.vault.audit.append(session.principal, "audit.export", None, entries=len(lines),
                               destination=str(out) if out else "stdout", channel=session.channel)
    data = "\n".join(lines) + ("\n" if lines else "")
    if out is not None:
        atomic_write(out, data.encode())
    return data


@use("audit.verify")
def verify(session: Session, expect_head: Path | None = None, public_key: Path | None = None,
           save_head: Path | None = None) -> VerifyResult:
    """Every link, signature and payload, the binding to the catalog, a saved head and the pinned key."""
    v = session.vault
    saved = [(witness.load_head(expect_head, v.audit.public_key)[0], f"the saved head {expect_head}")] if expect_head else []
    result = v.verify_audit(saved)
    mismatch = witness.key_mismatch(v.home, witness.load_public_key(public_key), public_key) if public_key else None
    if mismatch:
        result.ok, result.problem = False, mismatch if result.ok else f"{result.problem} ({mismatch})"
    if result.ok and save_head is not None and result.head:
        witness.save_head(save_head, witness.Head.from_dict(result.head), v.keyring.vault_id)
    return result


def verify_chain_only(home: Path, public_key: Path, expect_head: Path | None = None,
                      save_head: Path | None = None) -> VerifyResult:
    """Hashes and signatures with the auditor's pinned public key, without unlocking: no principal
    acts (nothing is decrypted or written), so no role is asked."""
    from appliance.vault.keys import Keyring

    result = witness.verify_chain_only(home, public_key, expect_head)
    if result.ok and save_head is not None and result.head:
        witness.save_head(save_head, witness.Head.from_dict(result.head), Keyring.load(home / "keyring.json").vault_id)
    return result
