"""Memory versions: every trained or merged model, its lineage and status, in the catalog.

Status moves trained → candidate → promoted | rejected; exactly one version is promoted (serving)
at a time. Lineage records what the version was made from, so an auditor can trace any answer
back to the reflections and documents behind it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from appliance.errors import MemoError
from appliance.vault.store import Vault

STATUSES = ("trained", "candidate", "promoted", "rejected", "retired")
ROOT_METHODS = ("full", "merge")  # weights relative to the base model, whatever the parent


@dataclass
class MemoryVersion:
    id: str
    parent: str | None
    base_model: str
    method: str
    status: str
    created_at: str
    created_by: str
    lineage: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _row(r) -> MemoryVersion:  # noqa: ANN001
    return MemoryVersion(r["id"], r["parent"], r["base_model"], r["method"], r["status"], r["created_at"],
                         r["created_by"], json.loads(r["lineage"]), json.loads(r["metrics"]))


def list_versions(vault: Vault) -> list[MemoryVersion]:
    with vault.read() as db:
        return [_row(r) for r in db.execute("SELECT * FROM memory_versions ORDER BY id")]


def get_version(vault: Vault, version_id: str) -> MemoryVersion:
    with vault.read() as db:
        r = db.execute("SELECT * FROM memory_versions WHERE id=?", (version_id,)).fetchone()
    if r is None:
        raise MemoError(f"no memory version {version_id!r}; list them with `memo memory list`")
    return _row(r)


def promoted(vault: Vault) -> MemoryVersion | None:
    with vault.read() as db:
        r = db.execute("SELECT * FROM memory_versions WHERE status='promoted'").fetchone()
    return _row(r) if r else None


def chain(vault: Vault, version_id: str) -> list[MemoryVersion]:
    """The version and its ancestors, oldest first.

    A full fine-tune and a merge reset the chain: their weights (a merged adapter) are relative
    to the base model, not to their parent.
    """
    out: list[MemoryVersion] = []
    current: str | None = version_id
    while current:
        v = get_version(vault, current)
        out.insert(0, v)
        if v.method in ROOT_METHODS:
            break
        current = v.parent
    return out


def create_version(vault: Vault, parent: str | None, base_model: str, method: str, actor: str,
                   lineage: dict[str, Any], metrics: dict[str, Any] | None = None) -> MemoryVersion:
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with vault.transaction() as db:
        n = db.execute("SELECT COUNT(*) FROM memory_versions").fetchone()[0] + 1
        vid = f"mem-{n:04d}"
        db.execute("INSERT INTO memory_versions VALUES (?, ?, ?, ?, 'trained', ?, ?, ?, ?)",
                   (vid, parent, base_model, method, now, actor, json.dumps(lineage), json.dumps(metrics or {})))
    return get_version(vault, vid)


def update_metrics(vault: Vault, version_id: str, **metrics: Any) -> MemoryVersion:
    with vault.transaction() as db:
        r = db.execute("SELECT metrics FROM memory_versions WHERE id=?", (version_id,)).fetchone()
        if r is None:
            raise MemoError(f"no memory version {version_id!r}")
        merged = {**json.loads(r["metrics"]), **metrics}
        db.execute("UPDATE memory_versions SET metrics=? WHERE id=?", (json.dumps(merged), version_id))
    return get_version(vault, version_id)


def set_status(vault: Vault, version_id: str, status: str) -> None:
    if status not in STATUSES:
        raise MemoError(f"unknown status {status!r}")
    with vault.transaction() as db:
        if status == "promoted":
            db.execute("UPDATE memory_versions SET status='retired' WHERE status='promoted'")
        db.execute("UPDATE memory_versions SET status=? WHERE id=?", (status, version_id))
