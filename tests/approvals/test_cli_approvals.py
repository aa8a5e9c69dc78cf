"""`memo approvals …`, `memo update`, `memo rollback` as an operator and an approver use them, each
unlocking with their own slot (a MEMO_ACTOR left in the environment changes nothing)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from tests.approvals.conftest import make_version
from tests.test_cli import memo, one_line_error


def test_approval_flow_from_the_command_line(cli_env: dict[str, str], tmp_path: Path) -> None:
    assert memo(cli_env, "init").returncode == 0
    r = memo(cli_env, "approvals", "keygen", "--out", str(tmp_path / "alice.key"), "--no-passphrase")
    assert r.returncode == 0, r.stderr
    public = next(line.split()[-1] for line in r.stdout.splitlines() if line.startswith("public key:"))
    assert stat.S_IMODE((tmp_path / "alice.key").stat().st_mode) == 0o600
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "approvers.yaml").write_text(
        f'version: 1\nprincipals:\n  - {{name: alice, roles: [approver], public_key: "{public}"}}\n')
    env = cli_env  # the administrator (cli-tester) pins the policy and gives alice her own slot
    assert memo(env, "policy", "pin", str(policies)).returncode == 0
    r = memo({**env, "MEMO_NEW_PASSPHRASE": "alice's own passphrase"}, "people", "add", "alice")
    assert r.returncode == 0, r.stderr

    from appliance.config import Settings
    from appliance.vault.keys import Secret
    from appliance.vault.store import Vault

    vault = Vault.open(Settings.load(Path(cli_env["MEMO_HOME"])), Secret(passphrase=cli_env["MEMO_PASSPHRASE"]))
    v = make_version(vault)
    from appliance.memory.candidate_eval import compare, probe_sets
    from appliance.memory.versions import update_metrics
    from tests.memory.test_update import D_NEW, PAIRS, Scripted

    report = compare(Scripted("cand", {"Who runs Alpha?": "Ann.", "What is the per diem now?": "52 EUR."}),
                     Scripted("serving", {"Who runs Alpha?": "Ann."}), probe_sets(PAIRS, {D_NEW}))
    outcomes = report.pop("outcomes")
    update_metrics(vault, v.id, candidate_eval=report, candidate_eval_outcomes=outcomes)

    one_line_error(memo(env, "update"), "no memory is promoted yet")
    r = memo(env, "approvals", "list", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["enforced"] is True
    assert [x["version_id"] for x in json.loads(r.stdout)["versions"]] == [v.id]
    # the acting principal (whose slot unlocked: cli-tester) is not an approver, whatever key it holds
    one_line_error(memo(env, "approvals", "approve", v.id, "--key", str(tmp_path / "alice.key")), "cli-tester is not an approver")
    alice = {**env, "MEMO_USER": "alice", "MEMO_PASSPHRASE": "alice's own passphrase", "MEMO_ACTOR": "cli-tester"}
    r = memo(alice, "approvals", "approve", v.id, "--key", str(tmp_path / "alice.key"), "--no-promote", "--comment", "ok")
    assert r.returncode == 0, r.stderr
    assert "approved" in r.stdout and "1 of 1" in r.stdout
    r = memo(alice, "approvals", "show", v.id, "--json")
    rec = json.loads(r.stdout)["records"][0]
    assert rec["valid"] and rec["principal"] == "alice" and json.loads(r.stdout)["state"]["satisfied"]
    one_line_error(memo(alice, "rollback", v.id), "only a version that served before")
    r = memo(env, "approvals", "show", v.id, "--outcomes")
    assert r.returncode == 0, r.stderr
    assert "retention 100%" in r.stdout and "superseded values 0% → 100%" in r.stdout and D_NEW in r.stdout
    assert "[old] Who runs Alpha?" in r.stdout
    assert "approve by alice" in r.stdout and "valid" in r.stdout and "ready to serve" in r.stdout
    r = memo(env, "approvals", "list", "--all")
    assert r.returncode == 0 and v.id in r.stdout and "alice" in r.stdout
    one_line_error(memo(alice, "approvals", "reject", "mem-0099", "--key", str(tmp_path / "alice.key")), "no memory version")
    r = memo(env, "audit", "show", "--action", "approval.approve", "--json")
    assert r.returncode == 0
    assert [(e["actor"], e["action"]) for e in json.loads(r.stdout)] == [("cli-tester", "approval.approve.refused"),
                                                                        ("alice", "approval.approve")]
