"""Approval rules and approver keys in policy files: strict, one place, shipped file in open mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.errors import MemoError
from appliance.policy import load_policy

REPO = Path(__file__).resolve().parents[2]


def test_shipped_approvers_file_is_open_mode_with_rules() -> None:
    policy = load_policy(REPO / "policies")
    assert policy.approvers() == {}
    assert policy.approval_rules.approvals_required == 1 and policy.approval_rules.min_retention == 0.9
    assert policy.approvers_file() == REPO / "policies" / "approvers.yaml"


@pytest.mark.parametrize(("text", "problem"), [
    ('principals:\n  - {name: a, roles: [approver], public_key: "rsa:AAAA"}\n', "public_key must be 'ed25519:'"),
    ("approval:\n  approvals_required: 3\n", "approval.approvals_required"),
    ("approval:\n  min_retention: 1.5\n", "approval.min_retention"),
    ("approval:\n  min_retention: 0.9\n  quorum: 2\n", "approval.quorum"),
])
def test_invalid_approval_policy_names_the_field(tmp_path: Path, text: str, problem: str) -> None:
    (tmp_path / "approvers.yaml").write_text("version: 1\n" + text)
    with pytest.raises(MemoError, match=problem):
        load_policy(tmp_path)


def test_approval_rules_defined_once(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("approval:\n  approvals_required: 1\n")
    (tmp_path / "b.yaml").write_text("approval:\n  approvals_required: 2\n")
    with pytest.raises(MemoError, match="b.yaml: approval rules are already defined in .*a.yaml"):
        load_policy(tmp_path)


def test_approver_without_key_is_listed_but_cannot_sign(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("principals:\n  - {name: carol, roles: [approver]}\n")
    assert load_policy(tmp_path).approvers() == {"carol": None}
