import random
import shutil
from pathlib import Path

import pytest

from appliance.corpus.ingest import ingest
from appliance.errors import IntegrityError, MemoError
from appliance.vault.store import Vault
from tests.conftest import SAMPLE_CORPUS


def test_objects_files_and_transactions(vault: Vault) -> None:
    oid = vault.put_object(b"alpha", "chunk")
    assert vault.put_object(b"alpha", "chunk") == oid  # content-addressed: stored once
    assert vault.put_object(b"alpha", "raw") != oid  # ids are per kind
    assert vault.get_object(oid) == b"alpha"
    vault.write_file("models/x.bin", b"weights")
    assert vault.read_file("models/x.bin") == b"weights"
    vault.write_file_stream("models/big.bin", iter([b"a" * 700_000, b"b" * 700_000]))
    assert vault.read_file("models/big.bin") == b"a" * 700_000 + b"b" * 700_000

    with pytest.raises(RuntimeError):
        with vault.transaction() as db:
            db.execute("INSERT INTO documents VALUES ('d1', 's', 'now', NULL)")
            raise RuntimeError("crash inside the transaction")
    with vault.read() as db:  # nothing from the failed transaction was written
        assert db.execute("SELECT COUNT(*) FROM documents").fetchone()[0] == 0
    with vault.transaction() as db:
        db.execute("INSERT INTO documents VALUES ('d1', 's', 'now', NULL)")
    with vault.read() as db:
        assert db.execute("SELECT COUNT(*) FROM documents").fetchone()[0] == 1


@pytest.mark.parametrize("name", ["", "/abs", "a/../b", "a//b", ".tmp-x"])
def test_bad_file_names_refused(vault: Vault, name: str) -> None:
    with pytest.raises(MemoError):
        vault.write_file(name, b"x")


def test_swapped_objects_detected(vault: Vault) -> None:
    a = vault.put_object(b"first", "chunk")
    b = vault.put_object(b"second", "chunk")
    pa, pb = vault._object_path(a), vault._object_path(b)
    da, db_ = pa.read_bytes(), pb.read_bytes()
    pa.write_bytes(db_)
    pb.write_bytes(da)
    with pytest.raises(IntegrityError, match=a):
        vault.get_object(a)


def _all_files(home: Path) -> list[Path]:
    return sorted(p for p in home.rglob("*") if p.is_file() and p.stat().st_size > 0)


def _problems_after_tamper(settings, secret) -> str:  # noqa: ANN001
    """Everything an operator would run: open, verify the vault and the audit chain."""
    try:
        v = Vault.open(settings, secret)
        report = v.verify()
    except MemoError as exc:
        return str(exc)
    return " | ".join(report.problems)


@pytest.fixture(scope="module")
def ingested_home(tmp_path_factory, ) -> Path:  # noqa: ANN001
    from appliance.config import Settings
    from appliance.vault.keys import Secret
    from tests.conftest import FAST_KDF, PASSPHRASE

    home = tmp_path_factory.mktemp("ingested") / "home"
    v = Vault.init(Settings(home=home, kdf=FAST_KDF), Secret(passphrase=PASSPHRASE))
    ingest(v, [SAMPLE_CORPUS / "hr", SAMPLE_CORPUS / "ops"])
    v.write_file("models/weights.bin", bytes(range(256)) * 100)
    assert v.verify().ok
    return home


def test_flipping_any_byte_of_any_vault_file_is_detected(ingested_home: Path, tmp_path: Path) -> None:
    """Property test: 200 random (file, position, bit) flips, each must be detected and named."""
    from appliance.config import Settings
    from appliance.vault.keys import Secret
    from tests.conftest import FAST_KDF, PASSPHRASE

    rng = random.Random(20261125)
    files = _all_files(ingested_home)
    kinds = {p.relative_to(ingested_home).parts[0] for p in files}
    assert {"keyring.json", "catalog.db.enc", "objects", "files", "audit"} <= kinds
    # every file is hit at least once, then random ones
    targets = files + [rng.choice(files) for _ in range(200 - len(files))]
    for i, target in enumerate(targets):
        home = tmp_path / f"t{i}"
        shutil.copytree(ingested_home, home)
        victim = home / target.relative_to(ingested_home)
        data = bytearray(victim.read_bytes())
        pos = rng.randrange(len(data))
        data[pos] ^= 1 << rng.randrange(8)
        victim.write_bytes(bytes(data))
        problems = _problems_after_tamper(Settings(home=home, kdf=FAST_KDF), Secret(passphrase=PASSPHRASE))
        assert problems, f"flip at {victim.relative_to(home)}:{pos} went undetected"
        rel = victim.relative_to(home)
        named = victim.name in problems or (rel.parts[0] == "audit" and "entry" in problems)
        assert named, f"flip in {rel} reported without naming it: {problems}"
        shutil.rmtree(home)


def test_deleted_object_reported_by_name(ingested_home: Path, tmp_path: Path) -> None:
    from appliance.config import Settings
    from appliance.vault.keys import Secret
    from tests.conftest import FAST_KDF, PASSPHRASE

    home = tmp_path / "h"
    shutil.copytree(ingested_home, home)
    victim = sorted((home / "objects").rglob("*"))[-1]
    victim.unlink()
    problems = _problems_after_tamper(Settings(home=home, kdf=FAST_KDF), Secret(passphrase=PASSPHRASE))
    assert victim.name in problems and "missing" in problems


def test_gc_removes_only_orphans(vault: Vault) -> None:
    orphan = vault.put_object(b"left by a killed ingest", "chunk")
    assert vault.verify().orphans == [orphan]
    assert vault.gc() == 1
    report = vault.verify()
    assert report.ok and report.orphans == []


@pytest.mark.parametrize("name", ["audit/public-key.pem", "audit/head.json", "keyring.json"])
def test_every_byte_of_the_plaintext_files_is_covered(ingested_home: Path, tmp_path: Path, name: str) -> None:
    """The files kept outside encryption are small, so every byte is flipped (random sampling once
    missed the PEM's trailing newline, which a PEM parser forgives)."""
    from appliance.config import Settings
    from appliance.vault.keys import Secret
    from tests.conftest import FAST_KDF, PASSPHRASE

    home = tmp_path / "home"
    shutil.copytree(ingested_home, home)
    victim = home / name
    original = victim.read_bytes()
    undetected = []
    for pos in range(len(original)):
        data = bytearray(original)
        data[pos] ^= 1 << (pos % 8)
        victim.write_bytes(bytes(data))
        if not _problems_after_tamper(Settings(home=home, kdf=FAST_KDF), Secret(passphrase=PASSPHRASE)):
            undetected.append(pos)
    victim.write_bytes(original)
    assert not undetected, f"flips in {name} at {undetected} went undetected"
