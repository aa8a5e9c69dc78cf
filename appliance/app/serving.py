"""The serving gate: what waits for approval, signed decisions, promotion, rollback, and opening a
memory (and an executive over it) to answer — every way a version starts or is used to serve."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from appliance.app.session import Session, use
from appliance.approvals import records as rec
from appliance.export import promotion as gate
from appliance.approvals.reports import VersionReport


@dataclass(frozen=True)
class Review:
    """A version as an approver reviews it: its report, approval state and every signature, verified."""

    version: VersionReport
    state: rec.ApprovalState
    records: list[rec.ApprovalRecord]

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version.model_dump(exclude={"metrics"}), "state": self.state.to_dict(),
                "records": [r.to_dict() for r in self.records]}


@use("approvals.list")
def enforced(session: Session) -> bool:
    """Whether approvals apply (an approver is named, or one ever signed): otherwise open mode."""
    return rec.enforced(session.vault, session.policy())


@use("approvals.list")
def reviews(session: Session, show_all: bool = False) -> list[Review]:
    """Versions waiting for a decision (or all), each with its state and verified signatures."""
    from appliance.memory.versions import get_version, list_versions

    vault, policy = session.vault, session.policy()
    versions = list_versions(vault) if show_all else rec.pending(vault)
    return [Review(VersionReport.of(get_version(vault, v.id)), rec.state(vault, v.id, policy), rec.records(vault, v.id, policy))
            for v in versions]


@use("approvals.list")
def review(session: Session, version_id: str) -> Review:
    from appliance.memory.versions import get_version

    vault, policy = session.vault, session.policy()
    version = get_version(vault, version_id)
    return Review(VersionReport.of(version), rec.state(vault, version_id, policy), rec.records(vault, version_id, policy))


@dataclass(frozen=True)
class Decision:
    record: rec.ApprovalRecord
    state: rec.ApprovalState
    promoted: bool


@use("approvals.decide")
def decide(session: Session, version_id: str, private_key: Any, decision: str, comment: str = "",
           promote_when_complete: bool = False) -> Decision:
    """Sign ``decision`` with the approver's own Ed25519 key (the policy's key for this principal);
    with ``promote_when_complete``, export and promote once the policy's approvals are complete."""
    vault = session.vault
    record = rec.decide(vault, version_id, private_key, decision, actor=session.principal, policy=session.policy(),
                        comment=comment)
    state = rec.state(vault, version_id, session.policy())
    done = False
    if decision == "approve" and promote_when_complete and state.satisfied:
        promote(session, version_id)
        done = True
    return Decision(record, state, done)


@use("promote")
def promote(session: Session, version_id: str) -> dict[str, Any]:
    """Make a version the serving memory (its served GGUF exported and verified first if missing);
    refused unless the approval gate lets it serve."""
    return gate.promote(session.vault, version_id, session.principal, session.policy())


@use("rollback")
def rollback(session: Session, version_id: str) -> str | None:
    """Serve again a version that served before (its approvals verified again); returns the previous one."""
    return gate.rollback(session.vault, version_id, session.principal, session.policy())


@use("memory.ask")
def open_memory(session: Session, version_id: str | None = None) -> Any:
    """A version's served GGUF (default: the promoted one), opened only if the gate lets it serve."""
    from appliance.memory.serve import open_memory as run

    return run(session.vault, version_id)


@use("ask")
def open_executive(session: Session, endpoint: str = "local", version_id: str | None = None, params: Any = None) -> Any:
    """The policy-approved executive over a served memory version (default: the promoted one)."""
    from appliance.executive.session import open_executive as run

    return run(session.vault, endpoint, version_id, params)


@use("memory.list")
def serving_version(session: Session) -> str | None:
    """The version serving now, if any."""
    from appliance.memory.versions import promoted

    current = promoted(session.vault)
    return current.id if current else None


@use("serve")
def open_api(session: Session, endpoint: str = "local", version_id: str | None = None, params: Any = None) -> Any:
    """The executive the HTTP API serves (its requests then act as their tokens' principals)."""
    from appliance.executive.session import open_executive as run

    return run(session.vault, endpoint, version_id, params)
