"""The policy set in force is the one pinned in the vault: pointing MEMO_POLICIES elsewhere, or
editing the pinned folder, changes nothing; pinning another set is an administrator's audited
act, refused when it would leave no administrator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.test_cli import one_line_error

OPEN = "access: {enforce: false}\nprincipals:\n  - {name: cli-tester, roles: [admin]}\n"
ENFORCED = "access: {enforce: true}\nprincipals:\n  - {name: cli-tester, roles: [admin]}\n  - {name: dev, roles: [reader]}\n"
PERMISSIVE = ("access: {enforce: false}\nendpoints:\n  - {name: anywhere, kind: openai, url: 'https://llm.example/v1', model: m,"
              " purposes: [executive], data_allowed_to_leave: [questions, sub_questions, memory_answers, document_text]}\n")


def memo(env: dict[str, str], *args: str, **more: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance.cli", *args], env={**env, **more}, capture_output=True, text=True,
                          timeout=300)


def folder(root: Path, name: str, access: str) -> Path:
    d = root / name
    d.mkdir()
    (d / "access.yaml").write_text(access)
    return d


def test_the_pinned_set_is_in_force_whatever_the_caller_names(cli_env: dict[str, str], tmp_path: Path) -> None:
    installed, enforced = folder(tmp_path, "installed", OPEN), folder(tmp_path, "enforced", ENFORCED)
    env = {**cli_env, "MEMO_POLICIES": str(installed)}
    assert memo(env, "init").returncode == 0  # pins the installed set
    pinned = json.loads(memo(env, "policy", "show", "--json").stdout)
    assert pinned["pinned"] and pinned["access"] == {"enforce": False} and pinned["directory"] == str(installed.resolve())
    assert memo(env, "people", "add", "dev", MEMO_NEW_PASSPHRASE="dev's passphrase").returncode == 0
    dev = {**env, "MEMO_USER": "dev", "MEMO_PASSPHRASE": "dev's passphrase"}

    # a caller's own folder approving any external URL and enforcing nothing: ignored
    permissive = folder(tmp_path, "permissive", PERMISSIVE)
    shown = json.loads(memo(dev, "policy", "show", "--json", MEMO_POLICIES=str(permissive)).stdout)
    assert shown["digest"] == pinned["digest"] and shown["endpoints"] == []
    (installed / "access.yaml").write_text(ENFORCED)  # the pinned folder edited on disk: nothing changes either
    assert json.loads(memo(env, "policy", "show", "--json").stdout)["digest"] == pinned["digest"]

    # an administrator pins the enforced set: from now on dev is a reader
    r = memo(env, "policy", "pin", str(enforced))
    assert r.returncode == 0 and "roles enforced" in r.stdout, r.stderr
    one_line_error(memo(dev, "policy", "pin", str(permissive)), "dev may not change the policy in force")
    one_line_error(memo(dev, "ingest", str(enforced / "access.yaml")), "dev may not ingest documents")
    entries = json.loads(memo(env, "audit", "show", "--action", "policy", "--limit", "0", "--json").stdout)
    pins = [(e["actor"], e["details"]["origin"]) for e in entries if e["action"] == "policy.pinned"]
    assert pins == [("cli-tester", str(installed)), ("cli-tester", str(enforced))]
    assert [e["actor"] for e in entries if e["action"] == "policy.changed"] == ["cli-tester", "cli-tester"]
    refused = json.loads(memo(env, "audit", "show", "--action", "access.refused", "--json").stdout)
    assert [(e["actor"], e["target"]) for e in refused] == [("dev", "policy.pin"), ("dev", "ingest")]


def test_a_pin_that_would_leave_no_administrator_is_refused(cli_env: dict[str, str], tmp_path: Path) -> None:
    assert memo(cli_env, "init").returncode == 0
    nobody = folder(tmp_path, "nobody", "access: {enforce: true}\nprincipals:\n  - {name: somebody-else, roles: [admin]}\n")
    one_line_error(memo(cli_env, "policy", "pin", str(nobody)), "no one who unlocks this vault", "would have the admin role")
    broken = folder(tmp_path, "broken", "access: {enforce: maybe}\n")
    one_line_error(memo(cli_env, "policy", "pin", str(broken)), "access.yaml:1: access.enforce")
    one_line_error(memo(cli_env, "policy", "pin", str(tmp_path / "empty-folder-that-is-missing")), "holds no policy files")
    assert json.loads(memo(cli_env, "policy", "show", "--json").stdout)["access"] == {"enforce": False}  # still the shipped set


def test_init_refuses_a_first_administrator_the_enforced_policy_does_not_name(cli_env: dict[str, str], tmp_path: Path) -> None:
    enforced = folder(tmp_path, "enforced", ENFORCED)
    one_line_error(memo({**cli_env, "MEMO_USER": "dev", "MEMO_POLICIES": str(enforced)}, "init"),
                   "dev would not be an administrator", "cli-tester")
    assert memo({**cli_env, "MEMO_POLICIES": str(enforced)}, "init").returncode == 0
