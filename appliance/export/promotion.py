"""The two ways a memory version starts serving, each through the approval gate of
:mod:`appliance.approvals.records`: promotion (its served GGUF exported and verified if missing,
then the switch of :func:`appliance.export.pipeline.promote_version`) and rollback to a version
that served before.

They live with the export, above the gate and the serving memory, so the gate imports neither
the export nor the serving memory (which ask it themselves).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from appliance.actor import current_actor
from appliance.approvals.records import check_servable, enforced, forgotten_in
from appliance.errors import MemoError
from appliance.export.pipeline import export_version, promote_version
from appliance.memory.serve import SERVE_TYPE
from appliance.memory.versions import get_version, promoted, set_status
from appliance.policy import Policy, load_policy
from appliance.vault.store import Vault


def promote(vault: Vault, version_id: str, actor: str | None = None, policy: Policy | None = None,
            export_progress: Callable[..., Any] | None = None) -> dict[str, Any]:
    """Export the serving GGUF if missing (verified), then switch the serving memory (one transaction)."""
    actor = actor or current_actor()
    policy = policy or load_policy(vault.settings)
    check_servable(vault, version_id, policy, "be promoted")
    exported = get_version(vault, version_id).metrics.get("export", {}).get(SERVE_TYPE)
    results = None
    if not exported or "refused" in exported:
        results = export_version(vault, version_id, (SERVE_TYPE,), actor=actor)
    promote_version(vault, version_id, actor, policy=policy)
    return {"version": version_id, "exported": results}


def rollback(vault: Vault, version_id: str, actor: str | None = None, policy: Policy | None = None) -> str | None:
    """Serve a version that served before; its approvals are verified again. Returns the previous one."""
    actor = actor or current_actor()
    policy = policy or load_policy(vault.settings)
    version = get_version(vault, version_id)
    current = promoted(vault)
    if current is not None and current.id == version_id:
        raise MemoError(f"{version_id} is already the serving memory")
    if version.status != "retired":
        raise MemoError(f"{version_id} is {version.status}: only a version that served before (retired) can be rolled back to; "
                        "a new version needs approval (`memo approvals approve`)")
    if enforced(vault, policy) and not ({"approver", "admin"} & policy.roles(actor)):
        raise MemoError(f"{actor} may not roll back the memory: needs role approver or admin in {policy.approvers_file()}")
    forgotten = forgotten_in(vault, version_id)
    if forgotten:
        raise MemoError(f"{version_id} was trained on forgotten document(s) {', '.join(forgotten)} and can never serve again")
    check_servable(vault, version_id, policy, "serve again")
    exported = version.metrics.get("export", {}).get(SERVE_TYPE)
    if not exported or "refused" in exported:
        raise MemoError(f"{version_id} has no verified {SERVE_TYPE} export: run `memo export {version_id}` first")
    set_status(vault, version_id, "promoted")
    vault.audit.append(actor, "memory.rollback", version_id, previous=current.id if current else None)
    return current.id if current else None
