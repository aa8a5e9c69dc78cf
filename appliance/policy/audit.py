"""Policy changes are audited, and only an administrator's pin changes the set in force.

The set in force is the one pinned in the vault (:func:`pin_policy`: validated, audited as
``policy.pinned``); the digest of the set a command or the daemon acts under is compared with the
last one recorded, and a change appends ``policy.changed`` with every file's SHA-256 (and which
files changed or went). An auditor can match any action to the exact policy files in force by the
``policy.changed`` entry before it."""

from __future__ import annotations

import json
from pathlib import Path

from appliance.config import PinnedPolicies
from appliance.errors import MemoError
from appliance.policy.loader import Policy, load_files, load_policy, problems, read_files
from appliance.vault.store import Vault

STATE_FILE = "policy/audited.json"


def last_audited(vault: Vault) -> dict:
    return json.loads(vault.read_file(STATE_FILE)) if vault.file_exists(STATE_FILE) else {}


def note_policy(vault: Vault, policy: Policy, actor: str) -> bool:
    """Audit the policy set if it differs from the last one audited; True when it did."""
    last = last_audited(vault)
    if last.get("digest") == policy.digest:
        if "invalid" in last:  # valid again: the next invalid edit is audited again
            vault.write_file(STATE_FILE, json.dumps({k: v for k, v in last.items() if k != "invalid"}).encode())
        return False
    before = last.get("files", {})
    changed = sorted(n for n, d in policy.file_digests.items() if before.get(n) != d)
    removed = sorted(set(before) - set(policy.file_digests))
    vault.audit.append(actor, "policy.changed", policy.digest, directory=str(policy.directory), files=policy.file_digests,
                       changed=changed, removed=removed, previous=last.get("digest"))
    vault.write_file(STATE_FILE, json.dumps({"digest": policy.digest, "files": policy.file_digests}).encode())
    return True


def note_invalid(vault: Vault, error: str, actor: str) -> bool:
    """Audit (once per distinct error) that the policy set could not be read: nothing runs under it."""
    last = last_audited(vault)
    if last.get("invalid") == error:
        return False
    vault.audit.append(actor, "policy.invalid", None, error=error)
    vault.write_file(STATE_FILE, json.dumps({**last, "invalid": error}).encode())
    return True


def pin_policy(vault: Vault, directory: Path, actor: str, reason: str | None = None, first: bool = False) -> Policy:
    """Make the policy files of ``directory`` the set in force for this vault (kept in its catalog).

    Refused, with the problem named, when a file does not validate, roles are enforced and no one
    who unlocks the vault could administer it any more, or — for an administrator's pin — the set
    fails a check that spans files or the folder holds no policy. The ``first`` pin of a vault (its
    creation, or the first open of an older one) takes the installed set as it is: its cross-file
    problems stop the jobs and `memo policy check` names them, but every door still opens. Audited
    as ``policy.pinned`` before it takes effect, then as ``policy.changed`` when the set differs
    from the last one audited.
    """
    contents = read_files(directory)
    if not contents and not first:
        raise MemoError(f"{directory} holds no policy files (*.yaml): nothing pinned; give the folder with "
                        "executives.yaml, approvers.yaml, access.yaml, …")
    policy = load_files(directory, contents)
    found = problems(policy)
    if found and not first:
        raise MemoError(f"not pinned: {found[0]}")
    if policy.enforced:
        admins = sorted(n for n in vault.keyring.principals() if policy.may(n, "administer"))
        if not admins:
            people = ", ".join(sorted(vault.keyring.principals()))
            raise MemoError(f"not pinned: roles are enforced but no one who unlocks this vault ({people}) would have the "
                            f"admin role; name one of them under principals: with roles [admin] in {directory}")
    previous = vault.pinned_policies()
    before = load_files(previous.origin, [(previous.origin / n, b) for n, b in previous.files]).digest if previous else None
    vault.audit.append(actor, "policy.pinned", policy.digest, origin=str(directory), files=policy.file_digests,
                       previous=before, reason=reason)
    vault.pin_policies(PinnedPolicies(directory.resolve(), tuple((path.name, raw) for path, raw in contents)))
    pinned = load_policy(vault.settings)
    note_policy(vault, pinned, actor)
    return pinned
