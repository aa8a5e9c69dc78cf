"""Approvals: only policy approvers sign; signatures bind weights and report; rejected never serves."""

from __future__ import annotations

import base64
import json
import stat

import pytest

from appliance.approvals.keys import generate, load_private, parse_public_key, public_key_text
from appliance.approvals.records import check_servable, decide, enforced, records, state
from appliance.export.promotion import promote, rollback
from appliance.errors import MemoError
from appliance.export.pipeline import promote_version
from appliance.memory.model_io import adapter_files
from appliance.memory.serve import open_memory
from appliance.memory.versions import get_version, promoted, set_status
from tests.approvals.conftest import key, make_version


def _actions(vault) -> list[str]:  # noqa: ANN001
    return [e.action for e in vault.audit.entries()]


def test_unauthorised_principals_cannot_approve(vault, keys, make_policy) -> None:  # noqa: ANN001
    policy = make_policy()
    v = make_version(vault)
    with pytest.raises(MemoError, match="mallory is not an approver"):  # in policy, but not as approver
        decide(vault, v.id, key(keys, "mallory"), "approve", actor="mallory", policy=policy)
    with pytest.raises(MemoError, match="eve is not an approver"):  # not in policy at all
        decide(vault, v.id, key(keys, "alice"), "approve", actor="eve", policy=policy)
    with pytest.raises(MemoError, match="not alice's"):  # an approver's name with someone else's key
        decide(vault, v.id, key(keys, "bob"), "approve", actor="alice", policy=policy)
    assert records(vault, v.id, policy) == []
    assert _actions(vault).count("approval.approve.refused") == 3
    with pytest.raises(MemoError, match="0 of 1 valid approval"):
        promote_version(vault, v.id, "mallory", policy=policy)
    assert get_version(vault, v.id).status == "trained" and promoted(vault) is None


def test_approval_is_signed_verified_and_promotes(vault, keys, make_policy) -> None:  # noqa: ANN001
    policy = make_policy()
    v = make_version(vault)
    rec = decide(vault, v.id, key(keys, "alice"), "approve", actor="alice", policy=policy, comment="looks right")
    assert rec.valid and rec.problem is None
    fields = json.loads(rec.message)
    assert fields["vault_id"] == vault.keyring.vault_id and fields["version_id"] == v.id and len(fields["weights_sha256"]) == 64
    # the signature is a real Ed25519 signature over the stored canonical message
    parse_public_key(keys["alice"][1]).verify(base64.b64decode(rec.signature), rec.message.encode())
    assert state(vault, v.id, policy).satisfied
    promote_version(vault, v.id, "alice", policy=policy)
    assert promoted(vault).id == v.id
    assert "approval.approve" in _actions(vault) and "memory.promote" in _actions(vault)


def test_tampered_signature_is_rejected_and_never_serves(vault, keys, make_policy) -> None:  # noqa: ANN001
    policy = make_policy()
    v = make_version(vault)
    decide(vault, v.id, key(keys, "alice"), "approve", actor="alice", policy=policy)
    with vault.transaction() as db:
        sig = bytearray(base64.b64decode(db.execute("SELECT signature FROM approvals").fetchone()[0]))
        sig[7] ^= 0x01
        db.execute("UPDATE approvals SET signature=?", (base64.b64encode(bytes(sig)).decode(),))
    [rec] = records(vault, v.id, policy)
    assert not rec.valid and "signature does not verify" in rec.problem
    with pytest.raises(MemoError, match="invalid: signature does not verify"):
        promote_version(vault, v.id, "alice", policy=policy)
    assert promoted(vault) is None


def test_tampered_message_and_changed_weights_invalidate(vault, keys, make_policy) -> None:  # noqa: ANN001
    policy = make_policy()
    v = make_version(vault)
    decide(vault, v.id, key(keys, "alice"), "approve", actor="alice", policy=policy)
    # weights swapped after approval: the digest no longer matches
    other = make_version(vault, seed=99)
    vault.write_file(adapter_files(v.id)[0], vault.read_file(adapter_files(other.id)[0]))
    [rec] = records(vault, v.id, policy)
    assert not rec.valid and "weights changed" in rec.problem
    # an approval copied onto another version does not carry over
    with vault.transaction() as db:
        db.execute("UPDATE approvals SET version_id=?", (other.id,))
    [rec] = records(vault, other.id, policy)
    assert not rec.valid and "does not match the record" in rec.problem


def test_report_changed_after_signing_invalidates(vault, keys, make_policy) -> None:  # noqa: ANN001
    from appliance.memory.versions import update_metrics

    policy = make_policy(min_retention=0.9)
    v = make_version(vault, retention=0.95)
    decide(vault, v.id, key(keys, "alice"), "approve", actor="alice", policy=policy)
    assert state(vault, v.id, policy).satisfied
    update_metrics(vault, v.id, candidate_eval={"retention": 0.99, "superseded": {"candidate": 1.0}})
    assert "evaluation report changed" in records(vault, v.id, policy)[0].problem
    assert not state(vault, v.id, policy).satisfied


def test_rejected_candidate_never_serves(vault, keys, make_policy) -> None:  # noqa: ANN001
    policy = make_policy()
    v = make_version(vault)
    decide(vault, v.id, key(keys, "bob"), "reject", actor="bob", policy=policy, comment="lost facts")
    assert get_version(vault, v.id).status == "rejected"
    with pytest.raises(MemoError, match="rejected"):
        decide(vault, v.id, key(keys, "alice"), "approve", actor="alice", policy=policy)
    with pytest.raises(MemoError, match="rejected and can never serve"):
        promote_version(vault, v.id, "alice", policy=policy)
    with pytest.raises(MemoError, match="rejected"):
        promote(vault, v.id, "alice", policy=policy)
    with pytest.raises(MemoError, match="rejected"):  # refused before any GGUF is looked up or loaded
        open_memory(vault, v.id)
    # even forcing the status back does not make it servable: the signed rejection stands
    set_status(vault, v.id, "candidate")
    with pytest.raises(MemoError, match="rejected by bob"):
        check_servable(vault, v.id, policy)
    assert "approval.reject" in _actions(vault)


def test_open_mode_then_enforced_for_good(vault, keys, make_policy) -> None:  # noqa: ANN001
    open_policy = make_policy(approvers=())
    v1 = make_version(vault)
    assert not enforced(vault, open_policy)
    promote_version(vault, v1.id, "operator", policy=open_policy)  # bootstrap / demo: no approver named yet
    assert promoted(vault).id == v1.id
    rejected = make_version(vault, parent=v1.id)
    set_status(vault, rejected.id, "rejected")
    with pytest.raises(MemoError, match="rejected"):  # a rejected version never serves, even in open mode
        promote_version(vault, rejected.id, policy=open_policy)
    # naming an approver turns approvals on, for the serving memory too
    policy = make_policy()
    assert enforced(vault, policy)
    with pytest.raises(MemoError, match="may not serve"):
        check_servable(vault, v1.id, policy)
    v2 = make_version(vault, parent=v1.id)
    decide(vault, v2.id, key(keys, "alice"), "approve", actor="alice", policy=policy)
    # once an approval is recorded, dropping every approver from the policy does not reopen the vault
    assert enforced(vault, open_policy)
    with pytest.raises(MemoError, match="not an approver in the policy"):
        check_servable(vault, v2.id, open_policy)


def test_two_distinct_approvers_and_min_retention(vault, keys, make_policy) -> None:  # noqa: ANN001
    policy = make_policy(required=2, min_retention=0.9)
    low = make_version(vault, retention=0.5)
    with pytest.raises(MemoError, match="retention 50.0% is below the policy's minimum 90%"):
        decide(vault, low.id, key(keys, "alice"), "approve", actor="alice", policy=policy)
    good = make_version(vault, retention=0.95)
    decide(vault, good.id, key(keys, "alice"), "approve", actor="alice", policy=policy)
    st = state(vault, good.id, policy)
    assert st.approved_by == ["alice"] and not st.satisfied
    with pytest.raises(MemoError, match="already signed"):
        decide(vault, good.id, key(keys, "alice"), "approve", actor="alice", policy=policy)
    with pytest.raises(MemoError, match="1 of 2 valid approval"):
        promote_version(vault, good.id, "alice", policy=policy)
    decide(vault, good.id, key(keys, "bob"), "approve", actor="bob", policy=policy)
    assert state(vault, good.id, policy).satisfied
    promote(vault, good.id, "bob", policy=policy)  # already exported: only the switch
    assert promoted(vault).id == good.id


def test_rollback_to_an_approved_version(vault, keys, make_policy) -> None:  # noqa: ANN001
    policy = make_policy()
    v1, v2 = make_version(vault), make_version(vault, seed=1)
    for v in (v1, v2):
        decide(vault, v.id, key(keys, "alice"), "approve", actor="alice", policy=policy)
        promote_version(vault, v.id, "alice", policy=policy)
    assert get_version(vault, v1.id).status == "retired"
    with pytest.raises(MemoError, match="needs role approver or admin"):
        rollback(vault, v1.id, "mallory", policy)
    assert rollback(vault, v1.id, "alice", policy) == v2.id
    assert promoted(vault).id == v1.id and get_version(vault, v2.id).status == "retired"
    assert "memory.rollback" in _actions(vault)
    v3 = make_version(vault, seed=3)
    with pytest.raises(MemoError, match="only a version that served before"):
        rollback(vault, v3.id, "alice", policy)


def test_key_files(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "k.pem"
    pub = generate(path, "s3cret")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and pub.startswith("ed25519:")
    assert public_key_text(load_private(path, "s3cret")) == pub
    with pytest.raises(MemoError, match="passphrase-protected"):
        load_private(path)
    with pytest.raises(MemoError, match="wrong passphrase"):
        load_private(path, "nope")
    with pytest.raises(MemoError, match="already exists"):
        generate(path)
    path.chmod(0o644)
    with pytest.raises(MemoError, match="readable by others"):
        load_private(path, "s3cret")


def test_a_new_version_after_one_served_needs_an_evaluation(vault, keys, make_policy) -> None:  # noqa: ANN001
    policy = make_policy(min_retention=0.9)
    first = make_version(vault)  # the very first memory: nothing to retain, no report needed
    decide(vault, first.id, key(keys, "alice"), "approve", actor="alice", policy=policy)
    promote_version(vault, first.id, "alice", policy=policy)
    retrained = make_version(vault)  # e.g. a plain `memo train` from the base, never evaluated
    with pytest.raises(MemoError, match="no evaluation report.*memo approvals evaluate"):
        decide(vault, retrained.id, key(keys, "alice"), "approve", actor="alice", policy=policy)
    # the serving version stays servable under the rule (it is judged by its signatures)
    assert check_servable(vault, first.id, policy).satisfied
