"""A vault made before per-person slots opens as before and becomes one administrator's: a real
format-1 vault made by the committed code before this change (fixtures/legacy-v1), and a format-2
one as issue 15's code wrote it (a MAC, no principals)."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import subprocess
import sys
from pathlib import Path

from appliance.config import Settings
from appliance.vault.keys import Keyring, Secret, _canonical, _mac_key
from appliance.vault.store import Vault
from tests.conftest import FAST_KDF, PASSPHRASE
from tests.test_cli import one_line_error

LEGACY = Path(__file__).parent / "fixtures" / "legacy-v1"


def memo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance.cli", *args], env=env, capture_output=True, text=True, timeout=300)


def _legacy_copy(tmp_path: Path) -> tuple[Path, Path]:
    shutil.copytree(LEGACY / "home", tmp_path / "home")
    shutil.copy(LEGACY / "legacy.key", tmp_path / "legacy.key")
    return tmp_path / "home", tmp_path / "legacy.key"


def test_a_vault_from_before_principals_opens_and_is_migrated_to_one_administrator(cli_env: dict[str, str],
                                                                                     tmp_path: Path) -> None:
    home, key = _legacy_copy(tmp_path)
    old_keyring = (home / "keyring.json").read_bytes()
    assert json.loads(old_keyring)["body"]["format"] == "memo-keyring-1"
    env = {k: v for k, v in cli_env.items() if k != "MEMO_USER"}
    env.update(MEMO_HOME=str(home), MEMO_ACTOR="mallory")  # an old habit: it no longer names anyone
    status = memo(env, "vault", "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["principal"] == "admin" and json.loads(status.stdout)["documents"] == 1

    ring = Keyring.load(home / "keyring.json")
    assert ring.version == 3 and ring.principals() == {"admin": ["passphrase", "keyfile"]}  # one administrator, both secrets
    locked = {k: v for k, v in env.items() if k != "MEMO_PASSPHRASE"}
    me = memo({**locked, "MEMO_KEY_FILE": str(key)}, "whoami", "--json")
    assert me.returncode == 0 and json.loads(me.stdout)["name"] == "admin", me.stderr
    text = memo(env, "docs", "show", json.loads(memo(env, "docs", "list", "--json").stdout)[0]["id"], "--text", "--json")
    assert "Jo Brandt" in json.loads(text.stdout)["text"]  # the old content opens as before

    entries = json.loads(memo(env, "audit", "show", "--limit", "0", "--json").stdout)
    by = {e["action"]: e["actor"] for e in entries}
    assert by["vault.init"] == "oldadmin" and by["ingest.document"] == "oldadmin"  # history is not rewritten
    assert by["vault.keyring.upgraded"] == "admin" and by["policy.pinned"] == "admin"
    assert "mallory" not in json.dumps(entries)
    assert memo(env, "audit", "verify").returncode == 0 and json.loads(memo(env, "vault", "verify", "--json").stdout)["ok"]
    tokens = json.loads(memo(env, "api", "token", "list", "--json").stdout)
    assert [(t["user"], t["status"]) for t in tokens] == [("oldadmin", "active")]

    (home / "keyring.json").write_bytes(old_keyring)  # the pre-migration keyring put back
    one_line_error(memo(env, "vault", "status"), "older keyring without its MAC was put back")


def test_a_format_2_keyring_becomes_the_installed_policys_administrators(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """Issue 15's format (MAC, no principals); with roles enforced in the installed policy, the slots
    become its first administrator's, so whoever held the vault's secret stays able to administer it."""
    settings = Settings(home=tmp_path / "home", kdf=FAST_KDF)
    vault = Vault.init(settings, Secret(passphrase=PASSPHRASE))
    path = settings.home / "keyring.json"
    doc = json.loads(path.read_bytes())
    body = doc["body"]
    body["format"] = "memo-keyring-2"
    for slot in body["slots"]:
        del slot["principal"]
    doc["sha256"] = hashlib.sha256(_canonical(body)).hexdigest()
    doc["mac"] = hmac.new(_mac_key(vault._dek), _canonical(body), hashlib.sha256).hexdigest()
    path.write_bytes(_canonical(doc) + b"\n")
    with vault.transaction() as db:  # the catalog of such a vault: format 2, no keyring digest
        db.execute("UPDATE meta SET value='2' WHERE key='keyring_format'")
        db.execute("DELETE FROM meta WHERE key IN ('keyring_sha256', 'keyring_sha256_next')")
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "access.yaml").write_text("access: {enforce: true}\nprincipals:\n  - {name: rosa, roles: [admin]}\n"
                                          "  - {name: dev, roles: [reader]}\n")
    env = {**{k: v for k, v in cli_env.items() if k != "MEMO_USER"}, "MEMO_HOME": str(settings.home),
           "MEMO_POLICIES": str(policies)}
    me = memo(env, "whoami", "--json")
    assert me.returncode == 0, me.stderr
    assert json.loads(me.stdout) | {"active_tokens": 0} == {"name": "rosa", "unlock_methods": ["passphrase"], "roles": ["admin"],
                                                            "in_policy": True, "active_tokens": 0}
    assert Keyring.load(path).principals() == {"rosa": ["passphrase"]}
    people = memo(env, "people", "list", "--json")  # an administrator's use case: the migrated slot may
    assert people.returncode == 0 and [p["name"] for p in json.loads(people.stdout)] == ["rosa"]
