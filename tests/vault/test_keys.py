import json
from pathlib import Path

import pytest

from appliance.errors import IntegrityError, MemoError, UnlockError
from appliance.vault.keys import Keyring, Secret, generate_key_file
from appliance.vault.store import Vault


def test_wrong_passphrase_is_one_clear_error(vault: Vault, settings) -> None:  # noqa: ANN001
    with pytest.raises(UnlockError, match="wrong passphrase"):
        Vault.open(settings, Secret(passphrase="not the passphrase"))


def test_missing_vault(tmp_path: Path, settings) -> None:  # noqa: ANN001
    with pytest.raises(MemoError, match="memo init"):
        Vault.open(settings.with_home(tmp_path / "nowhere"), Secret(passphrase="whatever1"))


def test_key_file_unlock_and_rekey(tmp_path: Path, settings) -> None:  # noqa: ANN001
    kf = tmp_path / "k1"
    generate_key_file(kf)
    v = Vault.init(settings, Secret(key_file=kf))
    oid = v.put_object(b"payload", "raw")
    assert Vault.open(settings, Secret(key_file=kf)).get_object(oid) == b"payload"
    objects_before = {p: p.read_bytes() for p in (settings.home / "objects").rglob("*") if p.is_file()}

    kf2 = tmp_path / "k2"
    generate_key_file(kf2)
    v.rekey(Secret(passphrase="new passphrase!", key_file=kf2))
    with pytest.raises(UnlockError, match="does not unlock"):
        Vault.open(settings, Secret(key_file=kf))
    assert Vault.open(settings, Secret(passphrase="new passphrase!")).get_object(oid) == b"payload"
    assert Vault.open(settings, Secret(key_file=kf2)).get_object(oid) == b"payload"
    # rekey re-wraps: the encrypted data files are untouched byte for byte
    assert objects_before == {p: p.read_bytes() for p in (settings.home / "objects").rglob("*") if p.is_file()}
    actions = [e.action for e in v.audit.entries()]
    assert actions.count("vault.rekey") == 1


def test_short_or_missing_key_file(tmp_path: Path, settings) -> None:  # noqa: ANN001
    short = tmp_path / "short"
    short.write_bytes(b"x" * 10)
    with pytest.raises(MemoError, match="memo vault keygen"):
        Vault.init(settings, Secret(key_file=short))
    with pytest.raises(MemoError, match="cannot read key file"):
        Vault.init(settings, Secret(key_file=tmp_path / "absent"))


def test_keyring_edit_is_corruption_not_wrong_passphrase(vault: Vault, settings, secret) -> None:  # noqa: ANN001
    path = settings.home / "keyring.json"
    doc = json.loads(path.read_bytes())
    doc["body"]["slots"][0]["iterations"] = 2
    path.write_bytes(json.dumps(doc).encode())
    with pytest.raises(IntegrityError, match="keyring.json"):
        Vault.open(settings, secret)


def test_keyring_has_no_key_material_in_clear(vault: Vault, settings) -> None:  # noqa: ANN001
    ring = Keyring.load(settings.home / "keyring.json")
    assert ring.unlock(Secret(passphrase="correct horse battery")) == vault._dek
    assert vault._dek not in (settings.home / "keyring.json").read_bytes()


# ---------------------------------------------------------------- an edited keyring (issue 15)
def _rewrite(path: Path, edit) -> None:  # noqa: ANN001
    """Edit the keyring as an attacker who knows the format would: the checksum recomputed."""
    import hashlib

    doc = json.loads(path.read_bytes())
    edit(doc)
    canon = lambda o: json.dumps(o, sort_keys=True, separators=(",", ":")).encode()  # noqa: E731
    doc["sha256"] = hashlib.sha256(canon(doc["body"])).hexdigest()
    path.write_bytes(canon(doc) + b"\n")


def _slot(field: str, value):  # noqa: ANN001, ANN202
    def edit(doc: dict) -> None:
        doc["body"]["slots"][0][field] = value
    return edit


@pytest.mark.parametrize("edit, word", [
    (_slot("memory_kib", 8), "memory_kib 8"),                       # was a traceback
    (_slot("memory_kib", 16 * 1024 * 1024), "memory_kib 16777216"),  # was a 16 GiB allocation
    (_slot("iterations", 100_000_000), "iterations 100000000"),      # was a hang
    (_slot("lanes", 0), "lanes 0"),
    (_slot("iterations", "3"), "iterations '3'"),
    (_slot("salt", "not base64!"), "salt"),
    (_slot("extra", 1), "fields"),
])
def test_kdf_edits_are_tampering_before_any_kdf_runs(cli_env: dict[str, str], edit, word: str) -> None:  # noqa: ANN001
    import subprocess
    import sys

    def memo(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "appliance.cli", *args], env=cli_env, capture_output=True, text=True, timeout=120)

    assert memo("init").returncode == 0
    _rewrite(Path(cli_env["MEMO_HOME"]) / "keyring.json", edit)
    r = memo("vault", "status")  # the timeout above is what a hang or a 16 GiB allocation would hit
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert "tampered" in lines[0] and "keyring.json" in lines[0] and word in lines[0], lines[0]


def test_an_added_slot_or_swapped_audit_key_fails_the_mac(vault: Vault, settings, secret, tmp_path: Path) -> None:  # noqa: ANN001
    import base64

    from appliance.vault.keys import make_slots
    from tests.conftest import FAST_KDF

    path = settings.home / "keyring.json"
    original = path.read_bytes()
    intruder = make_slots(vault.keyring.vault_id, b"\x01" * 32, Secret(passphrase="the intruder's own"), FAST_KDF)[0]
    _rewrite(path, lambda doc: doc["body"]["slots"].append(intruder))
    with pytest.raises(IntegrityError, match="MAC does not verify"):
        Vault.open(settings, secret)  # the owner's own passphrase: the MAC shows the edit
    with pytest.raises(IntegrityError):
        Vault.open(settings, Secret(passphrase="the intruder's own"))  # the intruder's: another data key
    path.write_bytes(original)
    _rewrite(path, lambda doc: doc["body"].__setitem__("audit_public_key", base64.b64encode(b"\x02" * 32).decode()))
    with pytest.raises(IntegrityError, match="MAC does not verify"):
        Vault.open(settings, secret)
    path.write_bytes(original)
    assert Vault.open(settings, secret).verify().ok


def test_an_in_bounds_edit_of_the_unlocking_slot_cannot_unlock(vault: Vault, settings, secret) -> None:  # noqa: ANN001
    """The limit of any keyring: an edited parameter of the slot that would unlock looks, to the
    one holding the passphrase, like a wrong passphrase (nothing checkable without the key)."""
    _rewrite(settings.home / "keyring.json", _slot("iterations", 2))
    with pytest.raises(UnlockError, match="wrong passphrase"):
        Vault.open(settings, secret)


def test_a_format_1_keyring_is_upgraded_once_and_never_downgraded(vault: Vault, settings, secret, tmp_path: Path) -> None:  # noqa: ANN001
    import hashlib

    path = settings.home / "keyring.json"
    doc = json.loads(path.read_bytes())
    doc["body"]["format"] = "memo-keyring-1"
    del doc["mac"]
    for slot in doc["body"]["slots"]:  # a format-1 keyring's slots name no principal
        del slot["principal"]
    canon = lambda o: json.dumps(o, sort_keys=True, separators=(",", ":")).encode()  # noqa: E731
    doc["sha256"] = hashlib.sha256(canon(doc["body"])).hexdigest()
    legacy = canon(doc) + b"\n"
    path.write_bytes(legacy)
    with vault.transaction() as db:  # a vault from before the upgrade: its catalog never saw format 2
        db.execute("DELETE FROM meta WHERE key='keyring_format'")
    opened = Vault.open(settings, secret)
    assert json.loads(path.read_bytes())["body"]["format"] == "memo-keyring-3" and not opened.keyring.legacy
    assert [e.action for e in opened.audit.entries()].count("vault.keyring.upgraded") == 1
    assert Vault.open(settings, secret).verify().ok
    path.write_bytes(legacy)  # the old, MAC-less copy put back
    with pytest.raises(IntegrityError, match="older keyring without its MAC"):
        Vault.open(settings, secret)


def test_a_passphrase_that_is_not_utf8_unlocks(settings, cli_env: dict[str, str]) -> None:  # noqa: ANN001
    import os
    import subprocess
    import sys

    odd = os.fsdecode(b"caf\xe9 au lait \xff!")  # as the environment hands such bytes to Python
    v = Vault.init(settings, Secret(passphrase=odd))
    assert Vault.open(settings, Secret(passphrase=odd)).keyring.vault_id == v.keyring.vault_id
    env = {k.encode(): v.encode() for k, v in cli_env.items() if k != "MEMO_PASSPHRASE"}
    env[b"MEMO_PASSPHRASE"] = b"caf\xe9 au lait \xff!"
    run = lambda *a: subprocess.run([sys.executable, "-m", "appliance.cli", *a], env=env, capture_output=True, timeout=120)  # noqa: E731
    assert run("init").returncode == 0
    r = run("vault", "status")
    assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr
    env[b"MEMO_PASSPHRASE"] = b"caf\xe9 au lait \xfe!"
    r = run("vault", "status")
    assert r.returncode == 1 and b"wrong passphrase" in r.stderr and b"Traceback" not in r.stderr


def test_rekey_is_audited_before_it_takes_effect(vault: Vault, settings) -> None:  # noqa: ANN001
    import hashlib

    vault.rekey(Secret(passphrase="a brand new passphrase"))
    entry = [e for e in vault.audit.entries() if e.action == "vault.rekey"][-1]
    assert entry.actor == vault.principal == "tester"
    assert entry.details["keyring_sha256"] == hashlib.sha256((settings.home / "keyring.json").read_bytes()).hexdigest()


@pytest.mark.slow
def test_a_killed_rekey_never_changes_the_secret_unaudited(cli_env: dict[str, str], tmp_path: Path) -> None:
    """SIGKILL at random moments of `memo vault rekey`: either the old passphrase still opens the
    vault, or the new one does and the last vault.rekey entry names exactly this keyring."""
    import hashlib
    import random
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import FAST_KDF, PASSPHRASE

    rng = random.Random(15)
    outcomes = set()
    for trial in range(8):
        home = tmp_path / f"h{trial}"
        env = {**cli_env, "MEMO_HOME": str(home), "MEMO_NEW_PASSPHRASE": "a brand new passphrase"}
        Vault.init(settings_for(home, FAST_KDF), Secret(passphrase=PASSPHRASE))
        proc = subprocess.Popen([sys.executable, "-m", "appliance.cli", "vault", "rekey"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 2.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        try:
            v = Vault.open(settings_for(home, FAST_KDF), Secret(passphrase=PASSPHRASE))
            outcomes.add("old")
        except UnlockError:
            v = Vault.open(settings_for(home, FAST_KDF), Secret(passphrase="a brand new passphrase"))
            entry = [e for e in v.audit.entries() if e.action == "vault.rekey"][-1]
            assert entry.details["keyring_sha256"] == hashlib.sha256((home / "keyring.json").read_bytes()).hexdigest()
            outcomes.add("new")
        assert v.verify().ok
    assert outcomes  # which ones happened depends on timing; each one was checked


def settings_for(home: Path, kdf):  # noqa: ANN001, ANN201
    from appliance.config import Settings

    return Settings(home=home, kdf=kdf)
