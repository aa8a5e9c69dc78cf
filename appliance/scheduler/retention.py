"""Retention (``policies/retention.yaml``): what old data is deleted, and what never is.

* **Memory versions**: the weights (adapters, full weights, exported GGUFs) of versions that are
  older than ``delete_after`` and not needed are deleted. Needed, whatever their age: the serving
  version, versions waiting for a decision, the ``keep_retired`` most recent versions that served
  before (rollback targets), and every version any of these is built on (its chain). The catalog
  row — lineage, metrics, evaluation report, approvals — is kept, so the audit trail and every
  signature stay verifiable; the row is marked ``pruned``.
* **Reflections** of document content that is no longer current (a newer version replaced it, or
  the document was forgotten) are deleted ``stale_after`` after they were written.
* **Audit**: the log is append-only and never truncated (its hash chain and signed head would
  show any cut). Every ``archive_every`` a copy of the signed, encrypted log, its head and public
  key is written under ``archive_dir`` for off-box write-once storage; it verifies with the
  public key alone.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from appliance.policy.schema import Retention
from appliance.vault.store import Vault

ARCHIVE_STATE = "scheduler/audit-archive.json"


def _age(ts: str, now: datetime) -> timedelta:
    t = datetime.fromisoformat(ts)
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return now - t


def protected_versions(vault: Vault, keep_retired: int) -> set[str]:
    """Versions whose weights must stay: serving, waiting, recent rollback targets, and their chains."""
    from appliance.approvals.records import pending
    from appliance.memory.versions import chain, list_versions

    versions = list_versions(vault)
    keep = {v.id for v in versions if v.status == "promoted"} | {v.id for v in pending(vault)}
    retired = sorted((v for v in versions if v.status == "retired"), key=lambda v: (v.created_at, v.id), reverse=True)
    keep |= {v.id for v in retired[:keep_retired]}
    # an update in flight trains from the serving memory; a task vector of a waiting candidate is in its lineage
    for vid in list(keep):
        keep |= {v.id for v in chain(vault, vid)}
        merge = next(v for v in versions if v.id == vid).lineage.get("merge") or {}
        keep |= set(merge.get("old", [])) | ({merge["task_vector"]} if merge.get("task_vector") else set())
    return keep


def prune_memory_versions(vault: Vault, keep_retired: int, delete_after_s: int, actor: str,
                          now: datetime | None = None) -> list[str]:
    from appliance.errors import MemoError
    from appliance.llm.registry import ModelRegistry
    from appliance.memory.serve import gguf_name
    from appliance.memory.versions import list_versions, update_metrics

    now = now or datetime.now(timezone.utc)
    keep = protected_versions(vault, keep_retired)
    names = list(vault.file_names())
    pruned = []
    for v in list_versions(vault):
        if v.id in keep or v.metrics.get("pruned") or _age(v.created_at, now).total_seconds() < delete_after_s:
            continue
        prefix = f"memory/{v.id}/"
        files = [n for n in names if n.startswith(prefix)]
        for n in files:
            vault.delete_file(n)
        registry = ModelRegistry(vault)
        for t in ("f16", "q8_0", "f32"):  # exported GGUFs: the registry record and its encrypted weights
            try:
                registry.forget(gguf_name(v.id, t), actor)
                files.append(gguf_name(v.id, t))
            except MemoError:
                pass
        update_metrics(vault, v.id, pruned={"at": now.isoformat(timespec="seconds"), "by": actor, "files": len(files)})
        vault.audit.append(actor, "retention.memory", v.id, status=v.status, files=len(files), created_at=v.created_at)
        pruned.append(v.id)
    return pruned


def stale_units(vault: Vault, older_than_s: int, now: datetime | None = None) -> list[str]:
    """Reflection units whose chunks are not current content of a current document, written long enough ago."""
    from appliance.reflect.store import load_units

    now = now or datetime.now(timezone.utc)
    with vault.read() as db:
        current_docs = {r["doc_id"] for r in db.execute("SELECT doc_id FROM versions WHERE status='current'")}
        current_oids = {r["oid"] for r in db.execute(
            "SELECT c.oid FROM chunks c JOIN versions v ON v.doc_id=c.doc_id AND v.version=c.version WHERE v.status='current'")}
    out = []
    for u in load_units(vault):
        stale = any(d not in current_docs for d in u.doc_ids) or any(o not in current_oids for o in u.chunk_oids)
        if stale and _age(u.created_at, now).total_seconds() >= older_than_s:
            out.append(u.unit_id)
    return out


def prune_reflections(vault: Vault, older_than_s: int, actor: str, now: datetime | None = None) -> int:
    from appliance.reflect.store import unit_file

    units = stale_units(vault, older_than_s, now)
    for uid in units:
        vault.delete_file(unit_file(uid))
    if units:
        vault.audit.append(actor, "retention.reflections", None, units=len(units))
    return len(units)


def archive_audit(vault: Vault, every_s: int | None, archive_dir: str, actor: str, now: datetime | None = None) -> str | None:
    """Copy the encrypted, signed log (and head, public key) under ``archive_dir`` when one is due."""
    if every_s is None:
        return None
    now = now or datetime.now(timezone.utc)
    state = json.loads(vault.read_file(ARCHIVE_STATE)) if vault.file_exists(ARCHIVE_STATE) else {}
    if state.get("at") and _age(state["at"], now).total_seconds() < every_s:
        return None
    target_root = Path(archive_dir).expanduser()
    if not target_root.is_absolute():
        target_root = vault.home / target_root
    target = target_root / f"audit-{now.strftime('%Y%m%dT%H%M%SZ')}"
    target.mkdir(parents=True, mode=0o700)
    src = vault.home / "audit"
    head = json.loads((src / "head.json").read_text())
    for name in ("log.jsonl", "head.json", "public-key.pem"):
        if (src / name).exists():
            shutil.copy2(src / name, target / name)
    entry = vault.audit.append(actor, "audit.archive", str(target), seq=head["seq"], hash=head["hash"])
    vault.write_file(ARCHIVE_STATE, json.dumps({"at": now.isoformat(), "dir": str(target), "seq": entry.seq}).encode())
    return str(target)


def apply_retention(vault: Vault, rules: Retention, actor: str, begin: Callable[..., None] | None = None,
                    now: datetime | None = None) -> dict[str, Any]:
    if begin:
        begin(rules=rules.model_dump())
    pruned = prune_memory_versions(vault, rules.memory_versions.keep_retired, rules.memory_versions.delete_after, actor, now)
    units = prune_reflections(vault, rules.reflections.stale_after, actor, now)
    archived = archive_audit(vault, rules.audit.archive_every, rules.audit.archive_dir, actor, now)
    return {"did": bool(pruned or units or archived), "memory_versions_pruned": pruned, "reflection_units_deleted": units,
            "audit_archive": archived}
