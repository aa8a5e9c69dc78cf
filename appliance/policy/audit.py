"""Policy changes are audited: the digest of the policy set a command or the daemon acts under is
compared with the last one recorded in the vault, and a change appends ``policy.changed`` with
every file's SHA-256 (and which files changed or went). An auditor can match any action to the
exact policy files in force by the ``policy.changed`` entry before it."""

from __future__ import annotations

import json

from appliance.policy.loader import Policy
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
