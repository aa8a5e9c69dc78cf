"""The page-encrypted catalog (SQLCipher): no plaintext page or journal on disk, a commit writes only
the pages it changed, a crash mid-commit leaves the vault readable, a damaged page is named, and
catalogs of earlier releases (sealed whole in one envelope) are converted on open with every row,
the rollback binding and the API tokens intact."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.api.tokens import TokenVerifier
from appliance.config import Settings
from appliance.corpus.ingest import ingest
from appliance.errors import IntegrityError, MemoError
from appliance.vault import catalog as cat
from appliance.vault.keys import Secret
from appliance.vault.store import CATALOG, Vault
from tests.conftest import FAST_KDF, PASSPHRASE, REPO

FIXTURES = Path(__file__).parent / "fixtures"
MARK = "Quillfeather-Oxbridge-7731"  # appears in titles, sources and rows: never in clear on disk


def _files(home: Path) -> dict[str, bytes]:
    return {str(p.relative_to(home)): p.read_bytes() for p in home.rglob("*") if p.is_file()}


def _leaks(home: Path, needle: str) -> list[str]:
    return [name for name, data in _files(home).items() if needle.encode() in data or needle.encode("utf-16-le") in data]


def test_nothing_of_the_catalog_is_in_clear_and_verify_passes(vault: Vault, tmp_path: Path) -> None:
    doc = tmp_path / f"{MARK}.md"
    doc.write_text(f"# {MARK} handbook\n\nThe {MARK} room is kept at 4 degrees.\n")
    ingest(vault, [doc])
    with vault.read() as db:
        assert db.execute("SELECT title FROM versions").fetchone()["title"] == f"{MARK} handbook"
        assert cat.get_meta(db, "catalog_format") == cat.FORMAT
    assert _leaks(vault.home, MARK) == []
    assert not cat.is_legacy(vault.home / CATALOG)
    assert oct((vault.home / CATALOG).stat().st_mode & 0o777) == "0o600"
    assert vault.verify().ok


def test_a_commit_rewrites_only_the_pages_it_changed(vault: Vault) -> None:
    with vault.transaction() as db:
        db.executemany("INSERT INTO documents VALUES (?, ?, 'now', NULL)", [(f"d{i}", f"/src/{i:06d}" + "x" * 200) for i in range(4000)])
    before = (vault.home / CATALOG).read_bytes()
    with vault.transaction() as db:
        db.execute("INSERT INTO documents VALUES ('one-more', '/src/one-more', 'now', NULL)")
    after = (vault.home / CATALOG).read_bytes()
    page = 4096
    pages = len(after) // page
    changed = sum(before[i * page:(i + 1) * page] != after[i * page:(i + 1) * page] for i in range(pages))
    assert pages > 200
    assert changed <= 8, f"{changed} of {pages} pages rewritten for one row"  # the old catalog rewrote all of them


_KILLED_WRITER = """
import os, sys
from pathlib import Path
from appliance.config import KdfParams, Settings
from appliance.vault.keys import Secret
from appliance.vault.store import Vault
v = Vault.open(Settings(home=Path(sys.argv[1]), kdf=KdfParams(memory_kib=1024, iterations=1, lanes=1)), Secret(passphrase=sys.argv[2]))
with v.transaction() as db:
    db.execute("PRAGMA cache_size = 20")  # spill pages to the file (and the old ones to the journal) before commit
    db.executemany("UPDATE documents SET source = source || ? WHERE id = ?", [(sys.argv[3], f"d{i}") for i in range(3000)])
    print("ready", flush=True)
    sys.stdin.read()  # killed here, mid-transaction
"""


def test_a_writer_killed_mid_commit_leaves_an_encrypted_journal_and_a_readable_vault(vault: Vault) -> None:
    with vault.transaction() as db:
        db.executemany("INSERT INTO documents VALUES (?, ?, 'now', NULL)", [(f"d{i}", f"/src/{i:06d}" + "y" * 100) for i in range(3000)])
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(vault.home), PASSPHRASE, MARK], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        journal = vault.home / f"{CATALOG}-journal"
        assert journal.exists() and journal.stat().st_size > 0  # the old pages, saved for the rollback
        assert _leaks(vault.home, MARK) == [] and _leaks(vault.home, "/src/000001") == []
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    fresh = Vault.open(vault.settings, Secret(passphrase=PASSPHRASE))
    with fresh.read() as db:  # the hot journal is rolled back: the old state, whole
        rows = db.execute("SELECT source FROM documents").fetchall()
    assert len(rows) == 3000 and not any(MARK in r["source"] for r in rows)
    assert fresh.verify().ok


def test_a_damaged_page_is_named_by_verify_and_by_the_reads_that_meet_it(vault: Vault) -> None:
    with vault.transaction() as db:
        db.executemany("INSERT INTO documents VALUES (?, ?, 'now', NULL)", [(f"d{i}", f"/src/{i}" + "z" * 300) for i in range(1000)])
    path = vault.home / CATALOG
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x04
    path.write_bytes(bytes(data))
    report = vault.verify()
    problem = next(p for p in report.problems if CATALOG in p)
    assert "HMAC verification failed for page" in problem and "restore it from backup" in problem
    fresh = Vault.open(vault.settings, Secret(passphrase=PASSPHRASE))  # a reader that had not read the page before
    with pytest.raises(IntegrityError, match=r"catalog\.db\.enc: authentication failed"):
        with fresh.read() as db:  # the damaged page is one of the table's or of its index on source
            db.execute("SELECT * FROM documents").fetchall()
            db.execute("SELECT source FROM documents ORDER BY source").fetchall()


def test_a_catalog_that_is_not_one_names_the_file() -> None:
    with pytest.raises(IntegrityError, match="not this vault's catalog"):
        cat.connect(FIXTURES / "legacy-v1" / "home" / CATALOG, os.urandom(32))


def _copy(name: str, tmp_path: Path) -> Path:
    home = tmp_path / name
    shutil.copytree(FIXTURES / name / "home", home)
    return home


def test_a_catalog_of_the_previous_release_is_converted_on_open(tmp_path: Path) -> None:
    home = _copy("envelope-catalog", tmp_path)
    sealed = (home / CATALOG).read_bytes()
    assert cat.is_legacy(home / CATALOG)
    old_head = json.loads((home / "audit" / "head.json").read_text())
    vault = Vault.open(Settings(home=home, kdf=FAST_KDF), Secret(passphrase=PASSPHRASE))
    assert not cat.is_legacy(home / CATALOG)
    status = vault.status()
    assert (status.documents, status.current_versions, status.chunks) == (3, 3, 2)
    with vault.read() as db:
        gen = cat.generation(db)
        dup = db.execute("SELECT duplicate_kind FROM versions WHERE duplicate_kind IS NOT NULL").fetchone()
        assert cat.get_meta(db, "catalog_migrated_from") == "envelope-1"
    assert dup["duplicate_kind"] == "exact"
    assert gen == old_head["catalog"] + 1  # the generation carried over, and one commit recorded the conversion
    migrated = [e for e in vault.audit.entries() if e.action == "vault.catalog.migrated"]
    assert len(migrated) == 1 and migrated[0].details["format"] == cat.FORMAT
    active, revoked = (FIXTURES / "envelope-catalog" / "tokens.txt").read_text().split()
    verifier = TokenVerifier(vault)
    assert verifier.verify(active).user == "carol"
    with pytest.raises(MemoError, match="revoked"):
        verifier.verify(revoked)
    assert vault.verify().ok and vault.verify_audit().ok
    again = Vault.open(vault.settings, Secret(passphrase=PASSPHRASE))  # converted once
    assert sum(e.action == "vault.catalog.migrated" for e in again.audit.entries()) == 1

    (home / CATALOG).write_bytes(sealed)  # the pre-conversion catalog put back: an older copy
    with pytest.raises(IntegrityError, match=r"catalog\.db\.enc: .*(older copy|earlier release)"):
        with vault.read():
            pass
    reopened = Vault.open(vault.settings, Secret(passphrase=PASSPHRASE))  # converts it again, and sees its age
    with pytest.raises(IntegrityError, match=r"catalog\.db\.enc: an older copy was put back"):
        with reopened.read():
            pass


def test_the_oldest_vaults_convert_too(tmp_path: Path) -> None:
    """fixtures/legacy-v1: before per-person slots and before the catalog–audit binding."""
    home = _copy("legacy-v1", tmp_path)
    shutil.copy(FIXTURES / "legacy-v1" / "legacy.key", tmp_path / "legacy.key")
    vault = Vault.open(Settings(home=home, kdf=FAST_KDF), Secret(passphrase=PASSPHRASE))
    assert not cat.is_legacy(home / CATALOG) and vault.status().documents == 1
    assert vault.verify().ok and vault.verify_audit().ok
    actions = [e.action for e in vault.audit.entries()]
    assert actions.count("vault.catalog.migrated") == 1 and "vault.keyring.upgraded" in actions
