"""Every use case of the appliance and the policy actions that grant it: the one table the
application layer checks, whichever door a request came in by.

A policy gives principals roles and roles grant actions (:data:`appliance.policy.PERMISSIONS`:
admin → administer, operate, ingest, ask, audit; operator → operate, ingest, ask; approver →
approve, ask; auditor → audit; reader → ask). A use case names the actions any one of which lets a
principal do it; an empty set means any person who unlocked the vault (changing their own secret,
saying who they are). ``access: enforce: false`` (open mode) lets everyone do everything.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.errors import MemoError


@dataclass(frozen=True)
class UseCase:
    name: str
    needs: frozenset[str]  # actions, any one of which grants it; empty: anyone who unlocked
    says: str  # "<principal> may not <says>"


class AccessRefused(MemoError):
    """A principal's roles do not grant a use case; already audited as ``access.refused``."""


def _uc(name: str, needs: str, says: str) -> UseCase:
    return UseCase(name, frozenset(needs.split()), says)


USE_CASES: dict[str, UseCase] = {uc.name: uc for uc in (
    # the vault and its people
    _uc("vault.status", "operate audit administer", "see the vault's status"),
    _uc("vault.verify", "audit administer", "verify the vault"),
    _uc("vault.gc", "administer", "remove unreferenced objects"),
    _uc("vault.rekey", "", "change their own secret"),
    _uc("whoami", "", "see who they are"),
    _uc("people.list", "administer audit", "list the people of the vault"),
    _uc("people.add", "administer", "add a person"),
    _uc("people.remove", "administer", "remove a person"),
    _uc("tokens.list", "administer audit", "list API tokens"),
    _uc("tokens.add", "administer", "create API tokens"),
    _uc("tokens.revoke", "administer", "revoke API tokens"),
    _uc("tls.import", "administer", "import a TLS certificate"),
    _uc("policy.show", "administer operate approve audit", "see the policy in force"),
    _uc("policy.pin", "administer", "change the policy in force"),
    # documents
    _uc("ingest", "ingest", "ingest documents"),
    _uc("docs.list", "ingest audit", "list documents"),
    _uc("docs.text", "ingest", "read a document's text"),
    _uc("docs.forget", "administer", "forget a document"),
    # models, reflections, memory
    _uc("models.list", "operate", "list or register models"),
    _uc("reflect", "operate", "write reflections"),
    _uc("reflect.stats", "operate audit", "see reflection statistics"),
    _uc("reflect.show", "operate", "read reflections"),
    _uc("train", "operate", "train a memory"),
    _uc("update", "operate", "make an update candidate"),
    _uc("evaluate", "operate", "evaluate a memory"),
    _uc("export", "operate", "export a memory"),
    _uc("memory.list", "operate approve audit", "see memory versions"),
    # the serving gate
    _uc("approvals.list", "approve operate audit", "see approvals"),
    _uc("approvals.decide", "approve", "approve or reject memory versions"),
    _uc("promote", "operate approve", "promote a memory"),
    _uc("rollback", "approve administer", "roll back the memory"),
    _uc("serve", "operate", "serve the HTTP API"),
    # questions
    _uc("ask", "ask", "ask questions"),
    _uc("memory.ask", "ask", "ask the memory"),
    _uc("endpoint.test", "operate administer", "test an executive endpoint"),
    # the audit log
    _uc("audit.show", "audit", "read the audit log"),
    _uc("audit.export", "audit", "export the audit log"),
    _uc("audit.verify", "audit administer", "verify the audit log"),
    # jobs
    _uc("jobs.list", "operate audit", "see scheduled jobs"),
    _uc("jobs.run", "operate", "run jobs"),
    _uc("jobs.pause", "operate", "pause or resume jobs"),
    _uc("daemon", "operate", "run the daemon"),
)}


def use_case(name: str) -> UseCase:
    try:
        return USE_CASES[name]
    except KeyError:
        raise ValueError(f"unknown use case {name!r}") from None
