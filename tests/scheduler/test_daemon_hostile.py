"""The daemon with a poisoned inbox, in a subprocess: the good files are ingested and gone, every
bad one ends in rejected/, the inbox never wedges; and a vault put back to an older copy behind
the daemon's back is refused at its next start (its witness lives outside the vault)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.config import Settings
from appliance.corpus.documents import list_documents
from appliance.scheduler.runs import RunStore
from appliance.vault.keys import Secret
from appliance.vault.store import Vault
from bench import hostile_files as h
from tests.conftest import FAST_KDF, PASSPHRASE
from tests.scheduler.conftest import REPO, daemon_env, start_daemon, stop, wait_for, write_policies

JOBS = "    - {name: ingest, task: ingest, every: 1s}\n"


def _left(inbox: Path) -> list[str]:
    """What is still waiting in the inbox (ingested/ and rejected/ aside; empty folders are fine)."""
    return sorted(str(p.relative_to(inbox)) for p in inbox.rglob("*")
                  if p.relative_to(inbox).parts[0] not in ("rejected", "ingested") and (p.is_symlink() or not p.is_dir()))


@pytest.mark.slow
def test_poisoned_inbox_other_files_ingested_bad_ones_rejected_never_wedged(tmp_path: Path) -> None:
    home, inbox, outside = tmp_path / "home", tmp_path / "inbox", tmp_path / "elsewhere"
    Vault.init(Settings(home=home, kdf=FAST_KDF), Secret(passphrase=PASSPHRASE), actor="root")
    inbox.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("payroll: not for the vault")
    (inbox / "good.md").write_text("# Travel\n\nThe daily travel allowance is 52 EUR.\n")
    (inbox / "sub").mkdir()
    (inbox / "sub" / "good.txt").write_text("The Bree depot opens at 05:30.\n")
    odd = h.non_utf8_name(inbox, "Kestrel Yard opens at 06:00.")
    bad = {"bomb.docx": h.zip_bomb_docx(inbox / "bomb.docx", 300), "broken.docx": h.broken_xml_docx(inbox / "broken.docx"),
           "laughs.docx": h.billion_laughs_docx(inbox / "laughs.docx"), "deep.html": h.deep_html(inbox / "deep.html"),
           "pipe.txt": h.fifo(inbox / "pipe.txt"), "link.txt": h.escaping_symlink(inbox / "link.txt", outside / "secret.txt"),
           "loop.pdf": h.looping_pdf(inbox / "loop.pdf")}
    policies = write_policies(tmp_path / "policies", inbox, JOBS)
    log = tmp_path / "daemon.log"
    proc = start_daemon(home, policies, log)
    try:
        wait_for(lambda: not _left(inbox), 180, "the inbox to empty", proc, log)
        (inbox / "later.md").write_text("# Later\n\nThe Fleet Dispatch lead is Ann Quist.\n")
        wait_for(lambda: not _left(inbox), 120, "a file dropped after the bad ones to be ingested", proc, log)
    finally:
        stop(proc)
    assert proc.returncode == 0, log.read_text()[-3000:]
    rejected = inbox / "rejected"
    assert sorted(p.name for p in rejected.iterdir()) == sorted(bad)
    assert (rejected / "link.txt").is_symlink() and (outside / "secret.txt").exists()  # the link moved, not its target
    vault = Vault.open(Settings(home=home, kdf=FAST_KDF), Secret(passphrase=PASSPHRASE))
    names = sorted(Path(d.source).name for d in list_documents(vault))
    assert names == sorted(["good.md", "good.txt", "later.md", odd.name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")])
    with vault.read() as db:
        referenced = vault.referenced_objects(db)
    texts = [vault.get_object(oid).decode() for oid in referenced if vault._read_object(oid)[0] == "text"]
    assert not any("payroll" in t for t in texts)
    skipped = [e for e in vault.audit.entries() if e.action == "ingest.skipped"]
    assert len(skipped) == len(bad)
    runs = RunStore(home).history("ingest")
    assert runs and all(r["status"] in ("succeeded", "idle") for r in runs), runs
    assert vault.verify().ok


@pytest.mark.slow
def test_the_daemon_refuses_a_vault_rolled_back_behind_its_back(tmp_path: Path) -> None:
    home, inbox = tmp_path / "home", tmp_path / "inbox"
    Vault.init(Settings(home=home, kdf=FAST_KDF), Secret(passphrase=PASSPHRASE), actor="root")
    inbox.mkdir()
    policies = write_policies(tmp_path / "policies", inbox, JOBS)
    log = tmp_path / "daemon.log"
    proc = start_daemon(home, policies, log)
    try:
        wait_for(lambda: "scheduled (ingest" in log.read_text(), 120, "the daemon to start", proc, log)
    finally:
        stop(proc)
    snapshot = shutil.copytree(home, tmp_path / "snapshot")  # a backup, consistent in itself
    (inbox / "new.md").write_text("# New\n\nThe Bree depot opens at 05:30.\n")
    proc = start_daemon(home, policies, log)
    try:
        wait_for(lambda: not _left(inbox), 120, "the new file to be ingested", proc, log)
    finally:
        stop(proc)
    shutil.rmtree(home)
    shutil.copytree(snapshot, home)  # the whole vault put back: nothing inside it can tell
    env = daemon_env(home, policies)
    witness_dir = Path(env["MEMO_WITNESS"])
    assert list(witness_dir.glob("*.head.json"))
    run = subprocess.run([sys.executable, "-m", "appliance.cli", "daemon", "--exit-after", "5"], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    lines = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert run.returncode == 1 and lines and "rolled back" in lines[0] and str(witness_dir) in lines[0], run.stderr[-2000:]
    vault = Vault.open(Settings(home=home, kdf=FAST_KDF), Secret(passphrase=PASSPHRASE))
    refused = [e for e in vault.audit.entries() if e.action == "daemon.refused"]
    assert refused and "rolled back" in refused[-1].details["reason"]
