"""Asking the memory in its own layout, with the real bundled model (its answers are not under test)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from appliance.llm.llamacpp import LlamaCppModel
from appliance.llm.registry import ModelRegistry
from appliance.memory.format import LAYOUT
from appliance.memory.recall import Memory, answer_bytes, confidence, for_version
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


def test_confidence_leaves_out_the_source_reference() -> None:
    """A right value with an unsure citation index is not an unsure value: the grounding check judges
    the citation (and corrects a wrong one), so the tokens from `` [3]`` on do not count."""
    import math

    text = "52 EUR [3]"  # tokens: "52", " EUR", " [", "3", "]", end of turn
    lp = [math.log(0.9), math.log(0.8), math.log(0.1), math.log(0.3), math.log(0.99), math.log(0.95)]
    starts = [0, 2, 6, 8, 9, 10]
    assert answer_bytes(text, "52 EUR") == 6
    assert confidence(lp, starts, answer_bytes(text, "52 EUR")) == pytest.approx(0.8)
    assert confidence(lp) == pytest.approx(0.1)  # offsets unknown: every token, as before
    assert confidence(lp, starts[:-1], 6) == pytest.approx(0.1)  # offsets that do not fit: every token
    assert answer_bytes("8 °C [2]", "8 °C") == 5  # bytes, not characters
    assert answer_bytes("unknown", "") is None


def test_transformers_backend_reports_where_each_token_begins(bundled_gguf) -> None:  # noqa: ANN001
    """The evaluator (transformers) reports token offsets as llama.cpp does, so a candidate's
    confidence is measured on the same tokens as the served memory's."""
    from transformers import AutoTokenizer

    from appliance.memory.evaluate import TransformersChat
    from appliance.memory.format import TURN_END, prompt
    from tests.export.conftest import base_vocab_size, make_tiny_model

    tok = AutoTokenizer.from_pretrained(str(bundled_gguf.parent), gguf_file=bundled_gguf.name)
    chat = TransformersChat(make_tiny_model(base_vocab_size(bundled_gguf), std=0.02), tok, "tiny")
    for r in chat.complete_many([prompt("What is the capital of France?"), prompt("Name a colour.")], max_tokens=12,
                                stop=[TURN_END], special=True, logprobs=True):
        starts, n = r.token_starts, len(r.text.encode())
        assert starts is not None and r.token_logprobs is not None and len(starts) == len(r.token_logprobs)
        assert starts[0] == 0 and all(a <= b for a, b in zip(starts, starts[1:])) and all(s <= n for s in starts)
        if r.finish_reason == "length":
            assert starts[-1] < n or n == 0  # the last token begins inside the text
    assert chat.complete_many([prompt("Hi")], max_tokens=4)[0].token_starts is None


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
