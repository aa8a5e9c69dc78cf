"""Asking the memory in its own layout, with the real bundled model (its answers are not under test)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from appliance.llm.llamacpp import LlamaCppModel
from appliance.llm.registry import ModelRegistry
from appliance.memory.format import LAYOUT
from appliance.memory.recall import Memory, confidence, for_version
from appliance.vault.store import Vault
from tests.llm.conftest import TEST_OPTIONS, module_vault  # noqa: F401 - fixture


@pytest.fixture(scope="module")
def model(module_vault: Vault) -> Iterator[LlamaCppModel]:  # noqa: F811
    m = LlamaCppModel.load(ModelRegistry(module_vault), options=TEST_OPTIONS)
    yield m
    m.close()


def test_confidence_is_the_weakest_token() -> None:
    import math

    assert confidence([math.log(0.9), math.log(0.5), 0.0]) == pytest.approx(0.5)
    assert confidence(None) == 1.0


def test_ask_in_the_lean_layout_reports_confidence_and_resolves_sources(model: LlamaCppModel) -> None:
    memory = Memory(model, ["doc-000000000001", "doc-000000000002"], "mem-x")
    [r] = memory.ask(["What is the capital of France?"], max_tokens=16)
    assert r.question == "What is the capital of France?" and r.answer and 0 < r.confidence <= 1
    assert r.logprobs and r.completion_tokens > 0 and r.prompt_tokens < 20  # no system prompt in front
    assert not r.unknown and set(r.sources) <= {"doc-000000000001", "doc-000000000002"}


def test_versions_are_asked_the_way_they_learned(model: LlamaCppModel) -> None:
    lean = for_version(model, {"format": LAYOUT, "sources": ["doc-000000000001"]}, "mem-1")
    legacy = for_version(model, {"reflections": {"pairs": 3}}, "mem-0")
    assert not lean.legacy and lean.table.doc_ids == ["doc-000000000001"]
    assert legacy.legacy
    [r] = legacy.ask(["What is the capital of France?"], max_tokens=24)
    assert r.answer and r.prompt_tokens > 20  # the earlier layout's system prompt is sent
