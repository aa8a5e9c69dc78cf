"""Fixtures for the model runtime: a real tiny GGUF for registry mechanics, the bundled model for behaviour."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from appliance.config import Settings
from appliance.llm.base import ChatModel, ChatResult
from appliance.llm.llamacpp import LlamaCppModel, LlamaCppOptions
from appliance.llm.registry import ModelRegistry
from appliance.vault.keys import Secret
from appliance.vault.store import Vault
from tests.conftest import FAST_KDF, PASSPHRASE

# Small contexts keep the model's memory low on a shared 2-core box.
TEST_OPTIONS = LlamaCppOptions(n_ctx=1024, max_parallel=4)
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
# A sound model answers these; one greedy path can flip with the CPU's kernels (on an AVX2-only EPYC
# "What is the capital of France?" turns into French prose), so a model must get most, not each one.
KNOWN = [("What is the capital of France?", "Paris"), ("What is the capital city of France?", "Paris"),
         ("What is the capital of Germany?", "Berlin")]


def ask_known(model: ChatModel, **kwargs: Any) -> list[tuple[ChatResult, bool]]:
    """Each question of ``KNOWN`` asked in turn: its result, and whether it holds the answer."""
    out = []
    for question, answer in KNOWN:
        result = model.chat([SYSTEM, {"role": "user", "content": question}], max_tokens=32, **kwargs)
        out.append((result, answer in result.text))
    return out


def write_tiny_gguf(path: Path, value: float = 0.0) -> Path:
    """A real (if useless) GGUF file: header, metadata and one tensor, written by the gguf package."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(path.stem)
    writer.add_tensor("probe", np.full(16, value, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def registry(vault: Vault) -> ModelRegistry:
    return ModelRegistry(vault)


@pytest.fixture(scope="module")
def module_vault(tmp_path_factory: pytest.TempPathFactory) -> Vault:
    home = tmp_path_factory.mktemp("llm") / "home"
    return Vault.init(Settings(home=home, kdf=FAST_KDF), Secret(passphrase=PASSPHRASE), actor="tester")


@pytest.fixture(scope="module")
def bundled_model(module_vault: Vault) -> Iterator[LlamaCppModel]:
    """The bundled SmolLM2 loaded once per module (loading is fast; generation is what costs)."""
    model = LlamaCppModel.load(ModelRegistry(module_vault), options=TEST_OPTIONS)
    yield model
    model.close()
