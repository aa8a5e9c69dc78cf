"""Acceptance: SIGKILL at random points of a large ingest never leaves the vault unreadable."""

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance.config import Settings
from appliance.corpus.documents import list_documents
from appliance.vault.keys import Secret
from appliance.vault.store import Vault
from tests.conftest import FAST_KDF, PASSPHRASE

N_DOCS = 240
TRIALS = 20


def make_corpus(root: Path, n: int) -> None:
    rng = random.Random(7)
    words = "site cold room tote logger van route policy vendor audit shift lead team badge code".split()
    for i in range(n):
        sub = root / f"part{i % 6}"
        sub.mkdir(parents=True, exist_ok=True)
        body = "\n\n".join(" ".join(rng.choice(words) for _ in range(60)) + f" Fact {i}-{p}." for p in range(6))
        (sub / f"doc{i:04d}.md").write_text(f"# Document {i}\n\n{body}\n")


def run_ingest(env: dict[str, str], corpus: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "ingest", str(corpus)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_sigkill_during_ingest_never_corrupts(tmp_path: Path, cli_env: dict[str, str]) -> None:
    corpus = tmp_path / "corpus"
    make_corpus(corpus, N_DOCS)
    rng = random.Random(1125)

    # calibrate: how long a whole run takes here
    calib_home = tmp_path / "calib"
    Vault.init(Settings(home=calib_home, kdf=FAST_KDF), Secret(passphrase=PASSPHRASE), cli_env["MEMO_USER"])
    start = time.monotonic()
    assert run_ingest({**cli_env, "MEMO_HOME": str(calib_home)}, corpus).wait(timeout=600) == 0
    full = time.monotonic() - start

    killed_mid_run = 0
    for trial in range(TRIALS):
        home = tmp_path / f"home{trial}"
        settings = Settings(home=home, kdf=FAST_KDF)
        Vault.init(settings, Secret(passphrase=PASSPHRASE), cli_env["MEMO_USER"])
        env = {**cli_env, "MEMO_HOME": str(home)}
        proc = run_ingest(env, corpus)
        time.sleep(rng.uniform(0.1, full * 0.95))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_mid_run += proc.returncode == -signal.SIGKILL

        vault = Vault.open(settings, Secret(passphrase=PASSPHRASE))  # readable after the kill
        report = vault.verify()
        assert report.ok, (trial, report.problems)
        partial = len(list_documents(vault))
        assert partial <= N_DOCS

        assert run_ingest(env, corpus).wait(timeout=600) == 0  # re-running completes it
        vault = Vault.open(settings, Secret(passphrase=PASSPHRASE))
        assert len(list_documents(vault)) == N_DOCS
        final = vault.verify()
        assert final.ok, (trial, final.problems)
        with vault.read() as db:
            assert db.execute("SELECT COUNT(*) FROM versions").fetchone()[0] == N_DOCS  # no duplicate versions
    assert killed_mid_run >= TRIALS * 0.8
