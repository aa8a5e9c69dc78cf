"""The bundled model, loaded once, plays both executive and memory in plumbing tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from appliance.llm.llamacpp import LlamaCppModel
from appliance.llm.registry import ModelRegistry
from appliance.vault.store import Vault
from tests.llm.conftest import TEST_OPTIONS, module_vault  # noqa: F401 - re-exported fixture


@pytest.fixture(scope="module")
def bundled_model(module_vault: Vault) -> Iterator[LlamaCppModel]:  # noqa: F811
    model = LlamaCppModel.load(ModelRegistry(module_vault), options=TEST_OPTIONS)
    yield model
    model.close()
