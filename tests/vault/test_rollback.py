"""Rolled-back vaults: an older copy of the catalog, of the audit head, of the log or of the whole
audit folder put back beside the current rest is an integrity error naming the file; a consistent
older copy of the whole vault is caught against a saved head (the auditor's, the daemon's)."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.api.tokens import TokenVerifier, create_token, revoke_token
from appliance.audit import witness
from appliance.audit.log import Head, _sig_message
from appliance.config import Settings
from appliance.corpus.ingest import ingest
from appliance.errors import IntegrityError, MemoError
from appliance.vault.keys import Secret
from appliance.vault.store import Vault
from tests.conftest import PASSPHRASE


def _copy(src: Path, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst) if dst.is_dir() else dst.unlink()
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy2(src, dst)
    return dst


def _problems(settings: Settings) -> str:
    """What `memo vault verify` and `memo audit verify` would say."""
    try:
        v = Vault.open(settings, Secret(passphrase=PASSPHRASE))
        report = v.verify()
        audit = v.verify_audit()
    except MemoError as exc:
        return str(exc)
    return " | ".join(report.problems + ([audit.problem] if not audit.ok and audit.problem else []))


@pytest.fixture
def busy(vault: Vault, tmp_path: Path) -> tuple[Vault, Path]:
    """A vault with some history; ``snap`` holds a copy of it from half-way."""
    doc = tmp_path / "a.md"
    doc.write_text("# A\n\nAlpha is led by Ann Quist.\n")
    ingest(vault, [doc])
    snap = _copy(vault.home, tmp_path / "snap")
    doc.write_text("# A\n\nAlpha is led by Bo Lind now.\n")
    ingest(vault, [doc])
    for i in range(3):
        vault.audit.append("tester", "test.event", None, n=i)
    return vault, snap


def test_an_older_catalog_is_named_on_every_load(busy) -> None:  # noqa: ANN001
    vault, snap = busy
    _copy(snap / "catalog.db.enc", vault.home / "catalog.db.enc")
    with pytest.raises(IntegrityError, match=r"catalog\.db\.enc: an older copy was put back"):
        with vault.read():
            pass
    assert "catalog.db.enc" in _problems(vault.settings)


def test_an_older_catalog_does_not_bring_a_revoked_token_back(vault: Vault, tmp_path: Path) -> None:
    token = create_token(vault, "mallory", actor="admin")
    before = _copy(vault.home / "catalog.db.enc", tmp_path / "catalog-before-revoke")
    verifier = TokenVerifier(vault)  # as a running server holds it
    assert verifier.verify(token.token).user == "mallory"
    revoke_token(vault, token.info.id, actor="admin")
    with pytest.raises(MemoError, match="revoked"):
        verifier.verify(token.token)
    _copy(before, vault.home / "catalog.db.enc")
    with pytest.raises(IntegrityError, match="older copy"):
        verifier.verify(token.token)  # refused, never "mallory" again
    fresh = Vault.open(vault.settings, Secret(passphrase=PASSPHRASE))
    with pytest.raises(IntegrityError, match="catalog.db.enc"):
        TokenVerifier(fresh).verify(token.token)


def test_an_older_head_is_named(busy) -> None:  # noqa: ANN001
    vault, snap = busy
    _copy(snap / "audit" / "head.json", vault.home / "audit" / "head.json")
    problems = _problems(vault.settings)
    assert "head.json" in problems and ("older" in problems or "more than one write" in problems), problems


def test_an_older_head_after_the_last_commit_is_still_caught(vault: Vault, tmp_path: Path) -> None:
    """No catalog write after it: the head's lag over the log shows more than one write."""
    vault.audit.append("tester", "one", None)
    old_head = _copy(vault.home / "audit" / "head.json", tmp_path / "head.json")
    vault.audit.append("tester", "two", None)
    vault.audit.append("tester", "three", None)
    _copy(old_head, vault.home / "audit" / "head.json")
    result = vault.audit.verify()
    assert not result.ok and "more than one write" in result.problem and "head.json" in result.problem


def test_a_crash_between_log_and_head_is_not_a_rollback(vault: Vault, tmp_path: Path) -> None:
    """The one state a crash leaves (the last write's lines, the head one write behind) verifies."""
    vault.audit.append("tester", "one", None)
    old_head = _copy(vault.home / "audit" / "head.json", tmp_path / "head.json")
    vault.audit.append_many([("tester", "two", None, {}), ("tester", "three", None, {})])
    _copy(old_head, vault.home / "audit" / "head.json")
    assert vault.audit.verify().ok
    assert vault.verify().ok


def test_a_log_truncated_with_its_matching_head_is_named(busy) -> None:  # noqa: ANN001
    vault, snap = busy
    log = vault.home / "audit" / "log.jsonl"
    old_lines = (snap / "audit" / "log.jsonl").read_bytes()
    log.write_bytes(old_lines)  # the log cut back to N entries ...
    _copy(snap / "audit" / "head.json", vault.home / "audit" / "head.json")  # ... with the head of entry N
    problems = _problems(vault.settings)
    assert "head.json" in problems or "log.jsonl" in problems, problems
    assert "rolled back" in problems, problems


def test_a_swapped_audit_folder_is_named(busy) -> None:  # noqa: ANN001
    vault, snap = busy
    _copy(snap / "audit", vault.home / "audit")
    problems = _problems(vault.settings)
    assert "rolled back" in problems and "audit" in problems, problems


def test_a_whole_vault_rollback_needs_a_witness_and_is_caught_by_one(busy, tmp_path: Path) -> None:  # noqa: ANN001
    vault, snap = busy
    saved = tmp_path / "auditor" / "head.json"
    saved.parent.mkdir()
    current = vault.audit.head()
    assert current is not None
    witness.save_head(saved, current, vault.keyring.vault_id)
    shutil.rmtree(vault.home)
    _copy(snap, vault.home)  # consistent: catalog, log and head all from before
    assert _problems(vault.settings) == ""  # nothing inside the vault can tell: this is what needs a witness
    old = Vault.open(vault.settings, Secret(passphrase=PASSPHRASE))
    result = old.verify_audit([(witness.load_head(saved, old.audit.public_key)[0], f"the saved head {saved}")])
    assert not result.ok and "rolled back" in result.problem and str(saved) in result.problem
    pinned = tmp_path / "auditor" / "public-key.pem"
    pinned.write_bytes((vault.home / "audit" / "public-key.pem").read_bytes())
    chain_only = witness.verify_chain_only(vault.home, pinned, saved)
    assert not chain_only.ok and "rolled back" in chain_only.problem
    with pytest.raises(IntegrityError, match="rolled back"):
        witness.extends(old.audit, witness.load_head(saved, old.audit.public_key)[0], "the daemon's witness")


def test_the_daemon_witness_advances_and_refuses_going_back(busy, tmp_path: Path) -> None:  # noqa: ANN001
    vault, snap = busy
    w = witness.Witness.for_vault(vault.home, vault.keyring.vault_id, tmp_path / "witness")
    first = w.advance(vault.audit)
    vault.audit.append("tester", "later", None)
    second = w.advance(vault.audit)
    assert first is not None and second is not None and second.seq == first.seq + 1
    assert Head.load(w.path, vault.audit.public_key) == second
    shutil.rmtree(vault.home)
    _copy(snap, vault.home)
    old = Vault.open(vault.settings, Secret(passphrase=PASSPHRASE))
    with pytest.raises(IntegrityError, match="rolled back"):
        w.advance(old.audit)
    assert Head.load(w.path, vault.audit.public_key) == second  # the witness keeps the newest it saw
    with pytest.raises(MemoError, match="inside MEMO_HOME"):
        witness.Witness.for_vault(vault.home, "x", vault.home / "w")


def _resign(home: Path) -> Path:
    """An attacker's rewrite: every entry and the head signed with their own key, that key put in
    keyring.json (checksum recomputed) and public-key.pem. Returns the attacker's PEM."""
    attacker = Ed25519PrivateKey.generate()
    log = home / "audit" / "log.jsonl"
    lines = []
    for line in log.read_bytes().splitlines():
        rec = json.loads(line)
        rec["sig"] = base64.b64encode(attacker.sign(_sig_message(rec["hash"], rec.get("end")))).decode()
        lines.append(json.dumps(rec, separators=(",", ":")).encode())
    log.write_bytes(b"\n".join(lines) + b"\n")
    head = json.loads((home / "audit" / "head.json").read_bytes())
    h = Head(head["seq"], head["hash"], head.get("catalog", 0), "", head.get("v", 1)).signed(attacker)
    (home / "audit" / "head.json").write_bytes(h.to_bytes())
    ring = json.loads((home / "keyring.json").read_bytes())
    ring["body"]["audit_public_key"] = base64.b64encode(attacker.public_key().public_bytes_raw()).decode()
    canon = lambda o: json.dumps(o, sort_keys=True, separators=(",", ":")).encode()  # noqa: E731
    ring["sha256"] = hashlib.sha256(canon(ring["body"])).hexdigest()
    (home / "keyring.json").write_bytes(canon(ring) + b"\n")
    pem = attacker.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (home / "audit" / "public-key.pem").write_bytes(pem)
    return home / "audit" / "public-key.pem"


def test_a_resigned_chain_fails_against_the_pinned_key(busy, tmp_path: Path) -> None:  # noqa: ANN001
    vault, _ = busy
    pinned = tmp_path / "pinned.pem"
    pinned.write_bytes((vault.home / "audit" / "public-key.pem").read_bytes())  # taken at installation
    _resign(vault.home)
    assert Vault.audit_readonly(vault.settings).verify().ok  # the vault's own key "verifies": why it is never enough
    result = witness.verify_chain_only(vault.home, pinned)
    assert not result.ok and "invalid signature" in result.problem and "another audit key" in result.problem
    with pytest.raises(IntegrityError, match="keyring.json: keyring was tampered"):
        Vault.open(vault.settings, Secret(passphrase=PASSPHRASE))  # unlocked, the keyring's MAC gives it away


def test_cli_chain_only_with_a_pinned_key(cli_env: dict[str, str], tmp_path: Path) -> None:
    def memo(*args: str, env: dict[str, str] = cli_env) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "appliance.cli", *args], env=env, capture_output=True, text=True, timeout=300)

    assert memo("init").returncode == 0
    home = Path(cli_env["MEMO_HOME"])
    pinned = tmp_path / "pinned.pem"
    pinned.write_bytes((home / "audit" / "public-key.pem").read_bytes())
    saved = tmp_path / "saved-head.json"
    locked = {k: v for k, v in cli_env.items() if k != "MEMO_PASSPHRASE"}
    ok = memo("audit", "verify", "--chain-only", "--public-key", str(pinned), "--save-head", str(saved), env=locked)
    assert ok.returncode == 0 and "OK" in ok.stdout, ok.stderr
    snap = _copy(home, tmp_path / "snap")
    assert memo("api", "token", "add", "cli-tester").returncode == 0
    shutil.rmtree(home)
    _copy(snap, home)
    _resign(home)
    bad = memo("audit", "verify", "--chain-only", "--public-key", str(pinned), env=locked)
    assert bad.returncode == 1 and "BROKEN" in bad.stderr and "Traceback" not in bad.stderr
    assert memo("audit", "verify", "--chain-only", "--public-key", str(home / "audit" / "public-key.pem"),
                env=locked).returncode == 0  # the attacker's own key agrees with the attacker's chain
    _copy(snap, home)
    rolled = memo("audit", "verify", "--expect-head", str(saved))
    assert rolled.returncode == 0, rolled.stderr  # the saved head is older than the snapshot: that is fine
