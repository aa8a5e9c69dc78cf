import json
import random

import pytest

from appliance.audit.log import AuditLog
from appliance.vault.store import Vault


def _lines(log: AuditLog) -> list[bytes]:
    return log.path.read_bytes().splitlines(keepends=True)


def _fill(vault: Vault, n: int = 12) -> AuditLog:
    for i in range(n):
        vault.audit.append("alice", "test.event", f"doc-{i}", n=i)
    assert vault.audit.verify().ok
    return vault.audit


def test_entries_roundtrip_and_chain(vault: Vault) -> None:
    log = _fill(vault)
    entries = list(log.entries())
    assert [e.seq for e in entries] == list(range(1, 14))
    assert entries[0].action == "vault.init"
    assert entries[5].details == {"n": 4} and entries[5].actor == "alice"
    result = log.verify()
    assert result.ok and result.entries == 13 and result.payloads_checked


def test_payloads_are_not_plaintext(vault: Vault) -> None:
    vault.audit.append("alice", "ask", None, question="who signs the CR-3 logbook")
    raw = vault.audit.path.read_bytes() + vault.audit.head_path.read_bytes()
    assert b"CR-3" not in raw and b"alice" not in raw


@pytest.mark.parametrize("seed", range(8))
def test_edit_delete_reorder_truncate_are_detected(vault: Vault, seed: int) -> None:
    log = _fill(vault)
    rng = random.Random(seed)
    lines = _lines(log)
    original = b"".join(lines)
    cases = []
    i = rng.randrange(1, len(lines) - 1)
    # 1. edit a field of an entry (keep JSON valid)
    rec = json.loads(lines[i])
    rec["prev"] = rec["prev"][:-1] + ("0" if rec["prev"][-1] != "0" else "1")
    cases.append(("edit", lines[:i] + [json.dumps(rec, separators=(",", ":")).encode() + b"\n"] + lines[i + 1 :], i + 1))
    # 2. replace ciphertext with another entry's ciphertext
    rec = json.loads(lines[i])
    rec["ct"] = json.loads(lines[i - 1])["ct"]
    cases.append(("ct-swap", lines[:i] + [json.dumps(rec, separators=(",", ":")).encode() + b"\n"] + lines[i + 1 :], i + 1))
    # 3. delete an entry
    cases.append(("delete", lines[:i] + lines[i + 1 :], i + 1))
    # 4. swap two adjacent entries
    cases.append(("reorder", lines[:i] + [lines[i + 1], lines[i]] + lines[i + 2 :], i + 1))
    # 5. cut entries off the end
    cases.append(("truncate", lines[: i + 1], i + 2))
    for name, content, bad_seq in cases:
        log.path.write_bytes(b"".join(content))
        result = log.verify()
        assert not result.ok, name
        assert result.first_bad_seq == bad_seq, (name, result)
        assert f"entry {bad_seq}" in result.problem, (name, result.problem)
        log.path.write_bytes(original)
    assert log.verify().ok


def test_forged_entry_with_recomputed_hash_fails_signature(vault: Vault) -> None:
    from appliance.audit.log import _entry_hash

    log = _fill(vault, 3)
    lines = _lines(log)
    rec = json.loads(lines[1])
    rec["ct"] = json.loads(lines[2])["ct"]
    rec["hash"] = _entry_hash(rec["seq"], rec["prev"], __import__("base64").b64decode(rec["ct"]))
    lines[1] = json.dumps(rec, separators=(",", ":")).encode() + b"\n"
    log.path.write_bytes(b"".join(lines))
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 2 and "signature" in result.problem


def test_torn_last_line_is_recovered_on_next_append(vault: Vault) -> None:
    log = _fill(vault, 3)
    with open(log.path, "ab") as fh:
        fh.write(b'{"seq":5,"prev":"abc')  # a writer killed mid-line
    assert log.verify().ok  # never acknowledged, so ignored
    log.append("alice", "after.crash")
    result = log.verify()
    assert result.ok and result.entries == 5
    assert [e.action for e in log.entries()][-1] == "after.crash"


def test_chain_verifies_without_unlocking(vault: Vault, settings) -> None:  # noqa: ANN001
    _fill(vault, 2)
    readonly = Vault.audit_readonly(settings)
    result = readonly.verify()
    assert result.ok and not result.payloads_checked and result.entries == 3
