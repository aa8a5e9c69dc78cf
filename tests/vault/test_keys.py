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
