"""The policy set in force: the one pinned in the vault. Pinning another is an administrator's
audited act; the files of a folder, or ``MEMO_POLICIES``, change nothing until they are pinned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from appliance.app.session import Session, use
from appliance.policy import PERMISSIONS, Endpoint, Policy, load_policy, problems
from appliance.policy.audit import note_policy, pin_policy


def check(directory: Path) -> tuple[Policy, list[str]]:
    """Validate a folder of policy files (no vault needed): the set and its cross-file problems."""
    policy = load_policy(directory)
    return policy, problems(policy)


@use("policy.pin")
def pin(session: Session, directory: Path) -> Policy:
    """Make ``directory``'s files the set in force (validated, audited as ``policy.pinned``)."""
    return pin_policy(session.vault, directory, session.principal)


@use("policy.pin")
def record(session: Session) -> bool:
    """Audit the set in force if it differs from the last one audited (``policy.changed``)."""
    return note_policy(session.vault, session.policy(), session.principal)


@use("policy.show")
def show(session: Session) -> dict[str, Any]:
    """The set in force: files and digests, principals and what they may do, endpoints, gates, jobs, retention."""
    return describe(session.policy())


def describe(p: Policy) -> dict[str, Any]:
    """A policy set as data (what `memo policy show --json` prints)."""
    return {
        "directory": str(p.directory), "pinned": p.pinned, "digest": p.digest, "files": p.file_digests,
        "access": {"enforce": p.enforced},
        "principals": [{**pr.model_dump(), "may": sorted({a for r in pr.roles for a in PERMISSIONS[r]}),
                        "file": str(p.origin.get(f"principal:{pr.name}"))} for pr in p.principals],
        "endpoints": [{**ep.model_dump(exclude={"description"}), "file": str(p.file_of(ep))} for ep in p.endpoints],
        "approval": p.approval_rules.model_dump(),
        "schedules": p.schedules.model_dump() if p.schedules else None,
        "retention": p.retention.model_dump(),
    }


@use("ask")
def executives(session: Session) -> tuple[list[Endpoint], Policy]:
    """The endpoints the policy in force approves as executive (what the console offers)."""
    policy = session.policy()
    return [ep for ep in policy.endpoints if "executive" in ep.purposes], policy
