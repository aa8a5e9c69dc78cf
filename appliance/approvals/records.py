"""Signed approvals of memory versions, and the gate every promotion, rollback and serve passes.

An approval (or rejection) is an Ed25519 signature, by a principal whose role is ``approver`` in
``policies/``, over a canonical JSON message that binds: the vault id, the version id, the SHA-256
of the version's weights (every adapter / weight file of its lineage, as stored in the vault), the
SHA-256 of its evaluation report, the decision, the principal and the time. Records live in the
encrypted catalog and every decision is audited. Verification re-derives both digests, so weights
or a report changed after signing, a flipped signature byte, a principal no longer in the policy
or a key that changed all invalidate the approval.

**Open mode and bootstrap.** Until the policy names at least one approver (and no approval has
ever been recorded in the vault), the appliance is in open mode: promotion and serving need no
signature, as on a fresh demo box. As soon as an approver is listed — or once any approval was
recorded, which makes it permanent for the vault — every promotion (the very first version
included: it is approved like any candidate), every rollback and every load of the serving memory
requires valid signatures from ``approvals_required`` distinct approvers and the policy's quality
rules. A rejected version never serves, in either mode.

The gate is here; the two ways through it — promotion (export, then switch) and rollback — are in
:mod:`appliance.export.promotion`, above the export and the serving memory, which both ask this gate.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from appliance.approvals.keys import public_key_text, verify
from appliance.approvals.reports import evaluation_of
from appliance.config import current_actor
from appliance.errors import MemoError
from appliance.memory.versions import MemoryVersion, chain, get_version, list_versions
from appliance.policy import Policy, load_policy
from appliance.vault.store import Vault

MESSAGE_SCHEMA = "memo.approval.v1"
DECISIONS = ("approve", "reject")


# ---------------------------------------------------------------------------------- digests
def weights_digest(vault: Vault, version_id: str) -> str:
    """SHA-256 over every weight file the version is built from (its lineage chain), in order."""
    from appliance.memory.model_io import adapter_files, full_weights_file

    h = hashlib.sha256()
    for v in chain(vault, version_id):
        names = [full_weights_file(v.id)] if v.method == "full" else list(adapter_files(v.id))
        for name in names:
            if not vault.file_exists(name):
                raise MemoError(f"{v.id} has no weights in the vault ({name}): it cannot be approved or served")
            h.update(name.encode() + b"\0" + hashlib.sha256(vault.read_file(name)).digest())
    return h.hexdigest()


def evaluation_report(version: MemoryVersion) -> dict[str, Any] | None:
    """The evidence an approver signs for: the candidate and/or forgetting report (None: none yet)."""
    report = {k: version.metrics[k] for k in ("candidate_eval", "forget_report") if k in version.metrics}
    return report or None


def report_digest(report: dict[str, Any] | None) -> str:
    if report is None:
        return "none"
    return hashlib.sha256(json.dumps(report, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


# ---------------------------------------------------------------------------------- records
@dataclass
class ApprovalRecord:
    id: int
    version_id: str
    principal: str
    decision: str
    message: str
    signature: str
    created_at: str
    valid: bool = False
    problem: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "message"}


def _records(vault: Vault, version_id: str | None = None) -> list[ApprovalRecord]:
    sql = "SELECT * FROM approvals" + (" WHERE version_id=?" if version_id else "") + " ORDER BY id"
    with vault.read() as db:
        rows = db.execute(sql, (version_id,) if version_id else ()).fetchall()
    return [ApprovalRecord(r["id"], r["version_id"], r["principal"], r["decision"], r["message"], r["signature"],
                           r["created_at"]) for r in rows]


def _check(vault: Vault, rec: ApprovalRecord, policy: Policy, digests: dict[str, tuple[str, str]]) -> ApprovalRecord:
    try:
        fields = json.loads(rec.message)
    except json.JSONDecodeError:
        rec.problem = "message is not JSON"
        return rec
    rec.fields = fields
    if canonical(fields) != rec.message.encode():
        rec.problem = "message is not in canonical form"
    elif fields.get("schema") != MESSAGE_SCHEMA:
        rec.problem = f"unknown message schema {fields.get('schema')!r}"
    elif (fields.get("vault_id"), fields.get("version_id"), fields.get("principal"), fields.get("decision")) != (
            vault.keyring.vault_id, rec.version_id, rec.principal, rec.decision):
        rec.problem = "message does not match the record (vault, version, principal or decision)"
    elif rec.principal not in policy.approvers():
        rec.problem = f"{rec.principal} is not an approver in the policy ({policy.approvers_file()})"
    elif not policy.approvers()[rec.principal]:
        rec.problem = f"approver {rec.principal} has no public_key in the policy"
    else:
        try:
            sig = base64.b64decode(rec.signature, validate=True)
        except ValueError:
            sig = b""
        if not verify(policy.approvers()[rec.principal], sig, rec.message.encode()):
            rec.problem = "signature does not verify with the approver's public key"
        elif rec.decision == "approve":
            if rec.version_id not in digests:
                version = get_version(vault, rec.version_id)
                digests[rec.version_id] = (weights_digest(vault, rec.version_id), report_digest(evaluation_report(version)))
            w, e = digests[rec.version_id]
            if fields.get("weights_sha256") != w:
                rec.problem = "the version's weights changed after it was signed"
            elif fields.get("eval_sha256") != e:
                rec.problem = "the version's evaluation report changed after it was signed"
    rec.valid = rec.problem is None
    return rec


def records(vault: Vault, version_id: str | None = None, policy: Policy | None = None) -> list[ApprovalRecord]:
    """Approval records, each verified against the current policy, weights and report."""
    policy = policy or load_policy(vault.settings)
    digests: dict[str, tuple[str, str]] = {}
    return [_check(vault, r, policy, digests) for r in _records(vault, version_id)]


def enforced(vault: Vault, policy: Policy | None = None) -> bool:
    policy = policy or load_policy(vault.settings)
    if policy.approvers():
        return True
    with vault.read() as db:
        return db.execute("SELECT 1 FROM approvals LIMIT 1").fetchone() is not None


# ---------------------------------------------------------------------------------- rules
def rule_problems(vault: Vault, version: MemoryVersion, policy: Policy) -> list[str]:
    """Where a new version's evaluation falls short of the policy's quality rules.

    Checked when a version is approved and promoted for the first time; a version that already
    served (rollback) is judged by its signatures only, so tightening a rule never takes the
    serving memory offline. The very first memory has nothing to retain and needs no report.
    """
    if version.status not in ("trained", "candidate"):
        return []
    rules = policy.approval_rules
    evaluation = evaluation_of(version.metrics)
    problems = []
    retention, superseded = evaluation.retention, evaluation.superseded
    if rules.min_retention is not None:
        served_before = any(v.status in ("promoted", "retired") and v.id != version.id for v in list_versions(vault))
        if evaluation.empty and served_before:
            problems.append(f"no evaluation report (policy needs retention ≥ {rules.min_retention:.0%}): "
                            f"run `memo approvals evaluate {version.id}`")
        elif retention is not None and retention < rules.min_retention:
            problems.append(f"retention {retention:.1%} is below the policy's minimum {rules.min_retention:.0%}")
    if rules.min_superseded is not None and superseded is not None and superseded < rules.min_superseded:
        problems.append(f"superseded-value accuracy {superseded:.1%} is below the policy's minimum {rules.min_superseded:.0%}")
    return problems


def forgotten_in(vault: Vault, version_id: str) -> list[str]:
    """Forgotten documents whose knowledge is in the version's weights."""
    from appliance.memory.update import version_documents

    docs = version_documents(vault, version_id)
    if not docs:
        return []
    with vault.read() as db:
        gone = {r[0] for r in db.execute("SELECT id FROM documents WHERE forgotten_at IS NOT NULL")}
    return sorted(docs & gone)


@dataclass
class ApprovalState:
    version_id: str
    status: str
    enforced: bool
    required: int
    approved_by: list[str]
    rejected_by: list[str]
    invalid: list[ApprovalRecord]
    rule_problems: list[str]

    @property
    def satisfied(self) -> bool:
        return (not self.rejected_by and self.status != "rejected" and not self.rule_problems
                and len(self.approved_by) >= self.required)

    def to_dict(self) -> dict[str, Any]:
        return {"version_id": self.version_id, "status": self.status, "enforced": self.enforced, "required": self.required,
                "approved_by": self.approved_by, "rejected_by": self.rejected_by, "satisfied": self.satisfied,
                "invalid": [{"principal": r.principal, "decision": r.decision, "problem": r.problem} for r in self.invalid],
                "rule_problems": self.rule_problems}


def state(vault: Vault, version_id: str, policy: Policy | None = None) -> ApprovalState:
    policy = policy or load_policy(vault.settings)
    version = get_version(vault, version_id)
    recs = records(vault, version_id, policy)
    return ApprovalState(
        version_id, version.status, enforced(vault, policy), policy.approval_rules.approvals_required,
        sorted({r.principal for r in recs if r.valid and r.decision == "approve"}),
        sorted({r.principal for r in recs if r.valid and r.decision == "reject"}),
        [r for r in recs if not r.valid], rule_problems(vault, version, policy),
    )


def check_servable(vault: Vault, version_id: str, policy: Policy | None = None, purpose: str = "serve") -> ApprovalState | None:
    """Refuse (one line) a version that may not serve: rejected, or not approved where approvals apply."""
    policy = policy or load_policy(vault.settings)
    version = get_version(vault, version_id)
    if version.status == "rejected":
        raise MemoError(f"{version_id} was rejected and can never serve")
    if not enforced(vault, policy):
        return None
    st = state(vault, version_id, policy)
    if st.rejected_by:
        raise MemoError(f"{version_id} was rejected by {', '.join(st.rejected_by)} and can never serve")
    if st.satisfied:
        return st
    why = []
    if len(st.approved_by) < st.required:
        why.append(f"{len(st.approved_by)} of {st.required} valid approval(s)")
    why += [f"{r.principal}'s {r.decision} is invalid: {r.problem}" for r in st.invalid]
    why += st.rule_problems
    raise MemoError(f"{version_id} may not {purpose}: {'; '.join(why)}; approvers sign with `memo approvals approve {version_id}`")


# ---------------------------------------------------------------------------------- decisions
def decide(vault: Vault, version_id: str, private_key, decision: str, actor: str | None = None,  # noqa: ANN001
           policy: Policy | None = None, comment: str = "") -> ApprovalRecord:
    """Sign and record ``decision`` on a version as ``actor``; a rejection takes effect at once."""
    from appliance.memory.versions import set_status

    if decision not in DECISIONS:
        raise MemoError(f"decision must be approve or reject, not {decision!r}")
    actor = actor or current_actor()
    policy = policy or load_policy(vault.settings)
    approvers = policy.approvers()
    version = get_version(vault, version_id)
    if actor not in approvers:
        vault.audit.append(actor, f"approval.{decision}.refused", version_id, reason="not an approver")
        raise MemoError(f"{actor} is not an approver: only principals with role approver in {policy.approvers_file()} may "
                        f"{decision} memory versions")
    if not approvers[actor]:
        raise MemoError(f"approver {actor} has no public_key in {policy.approvers_file()}: add the one `memo approvals keygen` printed")
    if public_key_text(private_key) != approvers[actor]:
        vault.audit.append(actor, f"approval.{decision}.refused", version_id, reason="key does not match policy")
        raise MemoError(f"this key is not {actor}'s: its public key differs from the one in {policy.approvers_file()}")
    if version.status == "rejected":
        raise MemoError(f"{version_id} was already rejected")
    if decision == "approve" and version.status in ("promoted", "retired"):
        raise MemoError(f"{version_id} is {version.status}: it was approved before (use `memo rollback {version_id}` to serve it again)")
    if any(r.principal == actor for r in _records(vault, version_id)):
        raise MemoError(f"{actor} has already signed a decision on {version_id}; a second approval must come from another approver")
    if decision == "approve":
        problems = rule_problems(vault, version, policy)
        forgotten = forgotten_in(vault, version_id)
        if forgotten:
            problems.append(f"it was trained on forgotten document(s) {', '.join(forgotten)}")
        if problems:
            vault.audit.append(actor, "approval.approve.refused", version_id, reason="; ".join(problems))
            raise MemoError(f"{version_id} cannot be approved: {'; '.join(problems)}")
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    fields = {"schema": MESSAGE_SCHEMA, "vault_id": vault.keyring.vault_id, "version_id": version_id,
              "weights_sha256": weights_digest(vault, version_id),
              "eval_sha256": report_digest(evaluation_report(version)), "decision": decision, "principal": actor,
              "signed_at": now, "comment": comment}
    message = canonical(fields)
    signature = base64.b64encode(private_key.sign(message)).decode()
    with vault.transaction() as db:
        cur = db.execute("INSERT INTO approvals (version_id, principal, decision, message, signature, created_at)"
                         " VALUES (?, ?, ?, ?, ?, ?)", (version_id, actor, decision, message.decode(), signature, now))
        rid = cur.lastrowid
    if decision == "reject":
        set_status(vault, version_id, "rejected")
    vault.audit.append(actor, f"approval.{decision}", version_id, weights_sha256=fields["weights_sha256"],
                       eval_sha256=fields["eval_sha256"], signature_sha256=hashlib.sha256(signature.encode()).hexdigest(),
                       comment=comment)
    return next(r for r in records(vault, version_id, policy) if r.id == rid)


def pending(vault: Vault) -> list[MemoryVersion]:
    """Versions waiting for a decision: candidates, and trained versions never decided on."""
    decided = {r.version_id for r in _records(vault)}
    return [v for v in list_versions(vault) if v.status == "candidate" or (v.status == "trained" and v.id not in decided
                                                                                 and v.lineage.get("kind") != "task_vector")]
