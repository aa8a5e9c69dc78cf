"""Scheduler fixtures: policy directories with schedules of seconds, a tiny random base model as a
GGUF in the appliance's models folder (so trainings take seconds), daemons in subprocesses."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.config import Settings
from appliance.vault.keys import Secret
from appliance.vault.store import Vault
from tests.conftest import FAST_KDF, PASSPHRASE

REPO = Path(__file__).resolve().parents[2]


def write_policies(directory: Path, inbox: Path, jobs: str, training: str = "{}", enforce: bool = True,
                   retention: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "executives.yaml").write_text(
        "endpoints:\n  - {name: local, kind: llamacpp, model: smollm2-135m-instruct-q4_1, purposes: [generator, executive]}\n")
    (directory / "access.yaml").write_text(
        f"access: {{enforce: {'true' if enforce else 'false'}}}\nprincipals:\n"
        "  - {name: memo-daemon, roles: [operator]}\n  - {name: root, roles: [admin]}\n  - {name: rita, roles: [reader]}\n")
    (directory / "schedules.yaml").write_text(
        f"schedules:\n  inbox: {inbox}\n  settle: 0\n  actor: memo-daemon\n  generator: local\n  update_method: linear\n"
        f"  training: {training}\n  jobs:\n{jobs}")
    if retention:
        (directory / "retention.yaml").write_text(retention)
    return directory


@pytest.fixture
def sched_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A vault, an inbox and a policy directory (MEMO_POLICIES) for in-process runs."""
    home, inbox, pol = tmp_path / "home", tmp_path / "inbox", tmp_path / "policies"
    settings = Settings(home=home, kdf=FAST_KDF)
    vault = Vault.init(settings, Secret(passphrase=PASSPHRASE), actor="root")
    monkeypatch.setenv("MEMO_POLICIES", str(pol))  # the installed folder of a vault nothing pinned yet (made in-process)
    inbox.mkdir()
    return {"vault": vault, "home": home, "inbox": inbox, "policies": pol, "settings": settings}


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama with the bundled tokenizer, as a GGUF (built once per session)."""
    from appliance.export.gguf_writer import bundled_base_gguf, write_gguf
    from tests.export.conftest import base_vocab_size, make_tiny_model

    path = tmp_path_factory.mktemp("tiny") / "tiny.gguf"
    model = make_tiny_model(base_vocab_size(bundled_base_gguf()), std=0.02)
    write_gguf(model, path, output_type="f32")
    return path


def add_tiny_model(home: Path, tiny_gguf: Path) -> None:
    (home / "models").mkdir(parents=True, exist_ok=True)
    shutil.copy(tiny_gguf, home / "models" / "tiny.gguf")


def daemon_key(home: Path) -> Path:
    """The daemon's service-account key file: its own slot (memo-daemon), added by root the first time."""
    key = home.parent / f"{home.name}-memo-daemon.key"
    if not key.exists():
        from appliance.vault.keys import generate_key_file

        generate_key_file(key)
        root = Vault.open(Settings(home=home, kdf=FAST_KDF), Secret(passphrase=PASSPHRASE, principal="root"))
        root.add_person("memo-daemon", Secret(key_file=key))
    return key


def daemon_env(home: Path, policies: Path) -> dict[str, str]:
    """The daemon as systemd runs it: unlocked by the service account's key file (so it acts as
    memo-daemon), the policies pinned from ``policies`` by its first open."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMO_")}
    env.update(MEMO_HOME=str(home), MEMO_KEY_FILE=str(daemon_key(home)), MEMO_POLICIES=str(policies),
               MEMO_WITNESS=str(home.parent / f"{home.name}-witness"), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return env


def start_daemon(home: Path, policies: Path, log: Path) -> subprocess.Popen:
    fh = open(log, "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-m", "appliance.cli", "daemon"], env=daemon_env(home, policies),
                            stdout=fh, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_for(cond: Callable[[], Any], timeout: float, what: str, proc: subprocess.Popen | None = None,
             log: Path | None = None, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(every)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}; daemon log:\n{tail}")
