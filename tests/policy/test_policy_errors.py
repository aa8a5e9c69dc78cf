"""Malformed policies: each kind of mistake is one line, ``FILE:LINE: FIELD: problem — what to do``;
roles, digests and the audit of policy changes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.errors import MemoError
from appliance.policy import load_policy, problems

REPO = Path(__file__).resolve().parents[2]

SCHED = """version: 1
schedules:
  inbox: /srv/inbox
  jobs:
    - {name: ingest, task: ingest, every: 30s}
"""

# (file name, text, line, field, words of the problem)
MALFORMED = [
    ("executives.yaml", "version: 1\nendpoints:\n  - name: x\n    kind: openai\n    model: m\n    purpose: [executive]\n",
     6, "endpoints.0.purpose", "unknown field — remove it or correct its spelling (allowed here: name, kind"),
    ("executives.yaml", "endpoints:\n  - {name: x, kind: llamacpp, model: m, purposes: [exec]}\n", 2, "endpoints.0.purposes.0",
     "'generator' or 'executive'"),
    ("executives.yaml", "endpoints:\n  - name: x\n    kind: llamacpp\n    purposes: [executive]\n", 2, "endpoints.0.model",
     "required field is missing — add it"),
    ("executives.yaml", "endpoints:\n  - name: gpu\n    kind: openai\n    model: m\n    url: ftp://h/v1\n    purposes: [executive]\n",
     5, "endpoints.0.url", "url must be http(s)"),
    ("access.yaml", "principals:\n  - name: a\n    roles: [superuser]\n", 3, "principals.0.roles.0", "'admin', 'approver'"),
    ("access.yaml", "access:\n  enforce: sometimes\n", 2, "access.enforce", "valid boolean"),
    ("approvers.yaml", "approval:\n  approvals_required: 3\n", 2, "approval.approvals_required", "less than or equal to 2"),
    ("approvers.yaml", "approval:\n  min_retention: 0.9\n  quorum: 2\n", 3, "approval.quorum", "unknown field"),
    ("schedules.yaml", SCHED.replace("every: 30s", "every: soon"), 5, "schedules.jobs.0.every", "30s, 5m, 2h, 1d"),
    ("schedules.yaml", SCHED.replace("every: 30s", "cron: '0 25 * * *'"), 5, "schedules.jobs.0.cron", "not a valid cron line"),
    ("schedules.yaml", SCHED.replace("every: 30s", "every: 30s, cron: '0 2 * * *'"), 5, "schedules.jobs.0",
     "exactly one of every"),
    ("schedules.yaml", SCHED.replace("task: ingest", "task: train"), 5, "schedules.jobs.0.task", "'ingest', 'reflect'"),
    ("schedules.yaml", SCHED.replace("inbox: /srv/inbox", "inbox: inbox"), 3, "schedules.inbox", "absolute path"),
    ("schedules.yaml", SCHED + "    - {name: ingest, task: reflect, every: 1m}\n", 4, "schedules.jobs", "used twice"),
    ("schedules.yaml", SCHED.replace("  jobs:", "  after_ingest: shred\n  jobs:"), 4, "schedules.after_ingest", "'delete' or 'move'"),
    ("retention.yaml", "retention:\n  memory_versions:\n    keep_retired: -1\n", 3, "retention.memory_versions.keep_retired",
     "greater than or equal to 0"),
    ("retention.yaml", "retention:\n  audit:\n    keep: 90d\n", 3, "retention.audit.keep", "'forever'"),
    ("retention.yaml", "retention:\n  reflections:\n    stale_after: 30d\n    stale_after: 60d\n", 4,
     "retention.reflections.stale_after", "given twice — keep one"),
    ("schedules.yaml", "schedules:\n  inbox: /srv/in\n  jobs:\n  - name: x\n   task: ingest\n", 5, None, "not valid YAML"),
    ("schedules.yaml", "- just\n- a list\n", 1, "(top level)", "a policy file is a mapping"),
    ("access.yaml", "version: 2\n", 1, "version", "Input should be 1"),
]


@pytest.mark.parametrize(("name", "text", "line", "field", "words"), MALFORMED,
                         ids=[f"{i}-{m[3] or 'yaml'}" for i, m in enumerate(MALFORMED)])
def test_malformed_policy_is_one_line_naming_file_line_and_field(tmp_path: Path, name: str, text: str, line: int,
                                                                  field: str | None, words: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(MemoError) as err:
        load_policy(tmp_path)
    msg = str(err.value)
    assert "\n" not in msg
    prefix = f"{path}:{line}: " + (f"{field}: " if field else "")
    assert msg.startswith(prefix), msg
    assert words in msg and " — " in msg, msg


CROSS = {
    "generator": ("schedules.yaml", SCHED.replace("jobs:", "generator: gpu\n  jobs:"), 4, "schedules.generator",
                  "no endpoint named 'gpu'"),
    "actor": ("schedules.yaml", SCHED, 2, "schedules.actor", "'memo-daemon' may not operate"),
    "two approvers": ("approvers.yaml", "approval:\n  approvals_required: 2\nprincipals:\n  - {name: al, roles: [approver]}\n", 2,
                      "approval.approvals_required", "only 0 approver(s) have a public_key"),
}


@pytest.mark.parametrize("case", sorted(CROSS))
def test_rules_that_span_files_name_file_line_and_field(tmp_path: Path, case: str) -> None:
    name, text, line, field, words = CROSS[case]
    (tmp_path / "executives.yaml").write_text("endpoints:\n  - {name: local, kind: llamacpp, model: m, purposes: [generator]}\n")
    if case == "actor":
        (tmp_path / "access.yaml").write_text("access: {enforce: true}\nprincipals:\n  - {name: root, roles: [admin]}\n")
    path = tmp_path / name
    path.write_text(text)
    found = problems(load_policy(tmp_path))
    assert len(found) == 1, found
    assert found[0].startswith(f"{path}:{line}: {field}: ") and words in found[0] and "\n" not in found[0]


def test_enforced_roles_need_an_administrator(tmp_path: Path) -> None:
    path = tmp_path / "access.yaml"
    path.write_text("version: 1\naccess:\n  enforce: true\nprincipals:\n  - {name: bob, roles: [reader]}\n")
    assert problems(load_policy(tmp_path)) == [
        f"{path}:3: access.enforce: roles are enforced but no principal has the admin role — "
        "name an administrator under principals: before enforcing"]


def test_shipped_policies_are_sound() -> None:
    policy = load_policy(REPO / "policies")
    assert problems(policy) == []
    assert {j.task for j in policy.schedules.jobs} == {"ingest", "reflect", "update", "retrain", "retention"}
    assert policy.retention.audit.keep == "forever" and not policy.enforced


def test_roles_grant_actions_only_when_enforced(tmp_path: Path) -> None:
    path = tmp_path / "access.yaml"
    path.write_text("access: {enforce: false}\nprincipals:\n  - {name: ann, roles: [operator]}\n  - {name: al, roles: [approver]}\n"
                    "  - {name: root, roles: [admin]}\n")
    open_mode = load_policy(tmp_path)
    assert open_mode.may("nobody", "administer")
    path.write_text(path.read_text().replace("enforce: false", "enforce: true"))
    p = load_policy(tmp_path)
    assert p.may("ann", "ingest") and p.may("ann", "operate") and not p.may("ann", "approve")
    assert p.may("al", "approve") and not p.may("al", "ingest") and not p.may("root", "approve")
    with pytest.raises(MemoError, match=re.escape(f"'eve' may not ingest (no principal entry); an administrator must give "
                                                  f"them one of the roles admin, operator in {path}")):
        p.require("eve", "ingest")
    with pytest.raises(ValueError):
        p.may("ann", "fly")


def test_digest_follows_content(tmp_path: Path) -> None:
    (tmp_path / "schedules.yaml").write_text(SCHED)
    a = load_policy(tmp_path).digest
    assert load_policy(tmp_path).digest == a
    (tmp_path / "schedules.yaml").write_text(SCHED.replace("30s", "31s"))
    assert load_policy(tmp_path).digest != a


def test_policy_changes_are_audited_once_per_change(vault, tmp_path: Path) -> None:  # noqa: ANN001
    from appliance.policy.audit import note_invalid, note_policy

    d = tmp_path / "pol"
    d.mkdir()
    (d / "schedules.yaml").write_text(SCHED)
    assert note_policy(vault, load_policy(d), "admin") and not note_policy(vault, load_policy(d), "admin")
    (d / "schedules.yaml").write_text(SCHED.replace("30s", "45s"))
    (d / "extra.yaml").write_text("version: 1\n")
    assert note_policy(vault, load_policy(d), "admin")
    assert note_invalid(vault, "x.yaml:1: bad", "admin") and not note_invalid(vault, "x.yaml:1: bad", "admin")
    changes = [e for e in vault.audit.entries() if e.action.startswith("policy.")]
    assert [e.action for e in changes] == ["policy.changed", "policy.changed", "policy.invalid"]
    assert changes[1].details["changed"] == ["extra.yaml", "schedules.yaml"] and changes[1].details["previous"] == changes[0].target


def test_cli_policy_check_prints_one_line_and_exits_1(tmp_path: Path, cli_env: dict[str, str]) -> None:
    bad = tmp_path / "pol"
    bad.mkdir()
    (bad / "schedules.yaml").write_text(SCHED.replace("every: 30s", "every: soon"))
    env = {**cli_env, "MEMO_POLICIES": str(bad)}
    run = subprocess.run([sys.executable, "-m", "appliance.cli", "policy", "check"], env=env, capture_output=True, text=True)
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad / 'schedules.yaml'}:5: schedules.jobs.0.every: "), run.stderr
    (bad / "schedules.yaml").write_text(SCHED)
    (bad / "executives.yaml").write_text("endpoints:\n  - {name: local, kind: llamacpp, model: m, purposes: [executive]}\n")
    run = subprocess.run([sys.executable, "-m", "appliance.cli", "policy", "check"], env=env, capture_output=True, text=True)
    assert run.returncode == 1 and "schedules.generator: endpoint 'local' is not approved as a generator" in run.stderr
    (bad / "executives.yaml").write_text("endpoints:\n  - {name: local, kind: llamacpp, model: m, purposes: [generator]}\n")
    run = subprocess.run([sys.executable, "-m", "appliance.cli", "policy", "check"], env=env, capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.startswith("ok: 2 file(s)"), run.stdout + run.stderr
    show = subprocess.run([sys.executable, "-m", "appliance.cli", "policy", "show", "--json"], env=env, capture_output=True, text=True)
    assert '"inbox": "/srv/inbox"' in show.stdout
