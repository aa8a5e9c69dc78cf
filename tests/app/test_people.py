"""People and their slots, for real through `memo`: the slot that unlocks names who acts, a removed
person's passphrase opens nothing any more (nor does an older keyring that still holds it), and a
MEMO_ACTOR in the environment changes nothing in the log."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.app import people
from appliance.app.session import Session
from appliance.errors import MemoError
from appliance.vault.keys import Secret
from appliance.vault.store import Vault
from tests.conftest import SAMPLE_CORPUS, session_as
from tests.test_cli import one_line_error

BOB = "bob's own passphrase"


def memo(env: dict[str, str], *args: str, **more: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance.cli", *args], env={**env, **more}, capture_output=True, text=True,
                          timeout=300)


def test_a_removed_persons_passphrase_no_longer_opens_the_vault(cli_env: dict[str, str], tmp_path: Path) -> None:
    admin = cli_env
    assert memo(admin, "init").returncode == 0
    added = memo(admin, "people", "add", "bob", MEMO_NEW_PASSPHRASE=BOB)
    assert added.returncode == 0 and "bob can now unlock the vault with passphrase" in added.stdout, added.stderr
    bob = {**admin, "MEMO_USER": "bob", "MEMO_PASSPHRASE": BOB}
    assert json.loads(memo(bob, "whoami", "--json").stdout)["name"] == "bob"
    assert memo(admin, "api", "token", "add", "bob").returncode == 0
    keyring = Path(admin["MEMO_HOME"]) / "keyring.json"
    with_bob = keyring.read_bytes()

    removed = memo(admin, "people", "remove", "bob")
    assert removed.returncode == 0 and "revoked API token" in removed.stdout, removed.stderr
    one_line_error(memo(bob, "vault", "status"), "no slot of 'bob'")
    nameless = {k: v for k, v in bob.items() if k != "MEMO_USER"}
    one_line_error(memo(nameless, "vault", "status"), "wrong passphrase")
    keyring.write_bytes(with_bob)  # an older keyring.json, which still holds bob's slot, put back
    one_line_error(memo(bob, "vault", "status"), "is not the keyring this vault last wrote")
    one_line_error(memo(admin, "vault", "status"), "is not the keyring this vault last wrote")  # whoever unlocks


def test_removal_revokes_tokens_and_is_audited(cli_env: dict[str, str]) -> None:
    admin = cli_env
    assert memo(admin, "init").returncode == 0
    assert memo(admin, "people", "add", "bob", MEMO_NEW_PASSPHRASE=BOB).returncode == 0
    assert memo(admin, "api", "token", "add", "bob").returncode == 0
    assert memo(admin, "people", "remove", "bob").returncode == 0
    assert [(t["user"], t["status"]) for t in json.loads(memo(admin, "api", "token", "list", "--json").stdout)] == [
        ("bob", "revoked")]
    assert [p["name"] for p in json.loads(memo(admin, "people", "list", "--json").stdout)] == ["cli-tester"]
    entries = json.loads(memo(admin, "audit", "show", "--limit", "0", "--json").stdout)
    people_entries = [(e["action"], e["actor"], e["details"].get("person")) for e in entries if e["action"].startswith("people.")]
    assert people_entries == [("people.add", "cli-tester", "bob"), ("people.remove", "cli-tester", "bob")]
    assert [(e["actor"], e["details"]["user"]) for e in entries if e["action"] == "api.token.revoke"] == [("cli-tester", "bob")]


def test_a_set_memo_actor_changes_nothing_in_the_log(cli_env: dict[str, str], tmp_path: Path) -> None:
    env = {**cli_env, "MEMO_ACTOR": "mallory"}
    assert memo(env, "init").returncode == 0
    doc = tmp_path / "a.md"
    doc.write_text("# A\n\nAlpha is led by Ann Quist.\n")
    assert memo(env, "ingest", str(doc)).returncode == 0
    first = json.loads(memo(env, "docs", "list", "--json").stdout)[0]["id"]
    assert memo(env, "docs", "forget", first, "--yes").returncode == 0
    assert memo(env, "audit", "export", "--out", str(tmp_path / "x.jsonl")).returncode == 0
    entries = json.loads(memo(env, "audit", "show", "--limit", "0", "--json").stdout)
    assert {e["actor"] for e in entries} == {"cli-tester"}, {e["actor"] for e in entries}
    assert "mallory" not in json.dumps(entries)
    assert {"vault.init", "ingest.document", "docs.forget", "docs.forgotten", "audit.export"} <= {e["action"] for e in entries}


def test_people_in_process_last_admin_and_own_secret(vault: Vault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "access.yaml").write_text("access: {enforce: true}\nprincipals:\n  - {name: tester, roles: [admin]}\n"
                                          "  - {name: rosa, roles: [admin]}\n  - {name: dev, roles: [reader]}\n")
    monkeypatch.setenv("MEMO_POLICIES", str(policies))
    admin = Session.of(vault)
    dev = session_as(vault, "dev")
    assert people.whoami(dev).roles == ["reader"]
    with pytest.raises(MemoError, match="dev may not add a person"):
        people.add(dev, "eve", Secret(passphrase="eve's passphrase"))
    with pytest.raises(MemoError, match="tester is the last administrator"):
        people.remove(admin, "tester")
    session_as(vault, "rosa")
    people.remove(admin, "tester")  # another administrator remains: allowed
    assert sorted(Vault.open(vault.settings, Secret(passphrase="rosa's passphrase", principal="rosa")).keyring.principals()) == [
        "dev", "rosa"]
    assert people.rekey(dev, Secret(passphrase="dev's new passphrase")) == ["passphrase"]  # one's own secret: no role needed
    with pytest.raises(MemoError, match="wrong passphrase"):
        Vault.open(vault.settings, Secret(passphrase="dev's passphrase", principal="dev"))
    assert Vault.open(vault.settings, Secret(passphrase="dev's new passphrase", principal="dev")).principal == "dev"


def test_ingest_of_the_sample_corpus_is_the_unlocking_persons(cli_env: dict[str, str]) -> None:
    assert memo(cli_env, "init").returncode == 0
    assert memo(cli_env, "people", "add", "olga", MEMO_NEW_PASSPHRASE="olga's passphrase").returncode == 0
    olga = {**cli_env, "MEMO_USER": "olga", "MEMO_PASSPHRASE": "olga's passphrase"}
    assert memo(olga, "ingest", str(SAMPLE_CORPUS / "hr" / "org-chart.md")).returncode == 0
    entries = json.loads(memo(cli_env, "audit", "show", "--action", "ingest", "--json").stdout)
    assert entries and {e["actor"] for e in entries} == {"olga"}
