"""llama.cpp backend on the real bundled model: answers, JSON, batching, seeds, RAM-only vault models."""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path

import pytest

from appliance.errors import MemoError
from appliance.llm.base import ChatModel, GenerationStats
from appliance.llm.llamacpp import LlamaCppModel
from appliance.llm.registry import ModelRegistry
from appliance.vault.store import Vault
from tests.llm.conftest import SYSTEM, TEST_OPTIONS

pytestmark = pytest.mark.slow

CAPITAL = [SYSTEM, {"role": "user", "content": "What is the capital of France?"}]
QA_SCHEMA = {
    "type": "object",
    "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
    "required": ["question", "answer"],
    "additionalProperties": False,
}


def test_bundled_model_answers(bundled_model: LlamaCppModel) -> None:
    assert isinstance(bundled_model, ChatModel)
    result = bundled_model.chat(CAPITAL, max_tokens=32)
    assert "Paris" in result.text
    assert result.finish_reason == "stop"
    assert result.stats.prompt_tokens > 10 and 0 < result.stats.completion_tokens < 32
    assert result.stats.seconds > 0 and result.stats.tokens_per_second > 0
    assert result.model.startswith("llamacpp:smollm2-135m-instruct-q4_1@sha256:")


def test_json_schema_output_parses(bundled_model: LlamaCppModel) -> None:
    prompt = [SYSTEM, {"role": "user", "content": "Write one question and its answer about Paris, as JSON."}]
    result = bundled_model.chat(prompt, max_tokens=96, json_schema=QA_SCHEMA)
    doc = result.json()
    assert set(doc) == {"question", "answer"}
    assert all(isinstance(v, str) and v for v in doc.values())


def test_unsupported_schema_fails_loudly(bundled_model: LlamaCppModel) -> None:
    with pytest.raises(MemoError, match="schema"):
        bundled_model.chat(CAPITAL, json_schema={"$ref": "https://example.org/remote.json"})


def test_batched_answers_equal_single_ones(bundled_model: LlamaCppModel) -> None:
    """A prompt's greedy answer does not depend on what it is batched with."""
    topics = ["bread", "rivers", "owls", "glass", "copper"]  # more than max_parallel: slots are reused
    convs = [[SYSTEM, {"role": "user", "content": f"One sentence about {t}."}] for t in topics]
    batched = bundled_model.chat_many(convs, max_tokens=24)
    single = [bundled_model.chat(c, max_tokens=24) for c in convs]
    assert [r.text for r in batched] == [r.text for r in single]
    total = GenerationStats.combine(r.stats for r in batched)
    assert total.completion_tokens == sum(r.stats.completion_tokens for r in batched)


def test_seed_makes_sampling_reproducible(bundled_model: LlamaCppModel) -> None:
    story = [SYSTEM, {"role": "user", "content": "Tell me a very short story."}]
    a = bundled_model.chat(story, max_tokens=24, temperature=0.9, seed=11)
    b = bundled_model.chat(story, max_tokens=24, temperature=0.9, seed=11)
    assert a.text == b.text and a.seed == 11
    drawn = bundled_model.chat(story, max_tokens=8, temperature=0.9)
    assert drawn.seed is not None  # reported, so the answer can be replayed
    assert bundled_model.chat(story, max_tokens=8, temperature=0.9, seed=drawn.seed).text == drawn.text


def test_stop_strings_and_length(bundled_model: LlamaCppModel) -> None:
    counted = bundled_model.complete("1, 2, 3, 4, 5,", max_tokens=6)
    assert counted.finish_reason == "length" and counted.stats.completion_tokens == 6
    stopped = bundled_model.complete("1, 2, 3, 4, 5,", max_tokens=40, stop=[" 8"])
    assert stopped.finish_reason == "stop" and " 8" not in stopped.text and "7" in stopped.text


def test_prompt_longer_than_context_is_refused(bundled_model: LlamaCppModel) -> None:
    with pytest.raises(MemoError, match="context holds"):
        bundled_model.complete("word " * (TEST_OPTIONS.n_ctx + 10))


def _files_containing(roots: list[Path], needle: bytes, since: float) -> list[Path]:
    hits = []
    for root in roots:
        for path in root.rglob("*"):
            try:
                recent = path.is_file() and not path.is_symlink() and path.stat().st_mtime >= since
                if recent and needle in path.read_bytes():
                    hits.append(path)
            except OSError:
                continue
    return hits


def test_vault_model_runs_from_ram_only(vault: Vault, bundled_gguf: Path) -> None:
    started = time.time() - 1
    registry = ModelRegistry(vault)
    registry.import_gguf("memory-test", bundled_gguf)
    with LlamaCppModel.load(registry, "memory-test", TEST_OPTIONS) as model:
        maps = Path("/proc/self/maps").read_text()
        assert "/memfd:memo-memory-test" in maps  # weights mapped from the anonymous memfd
        assert "Paris" in model.chat(CAPITAL, max_tokens=32).text
        assert model.identity.startswith("llamacpp:memory-test@")
        # No plaintext copy anywhere under the appliance home or the temp dir (first MiB of the GGUF).
        head = bundled_gguf.read_bytes()[: 1 << 20]
        roots = [vault.home, Path(tempfile.gettempdir())]
        assert _files_containing(roots, head, since=started) == []
        assert not any(p.suffix == ".gguf" for p in vault.home.rglob("*") if p.is_file() and "files" not in p.parts)
    # Without mmap llama.cpp read()s the memfd into its own buffers: also fine.
    no_mmap = dataclasses.replace(TEST_OPTIONS, use_mmap=False)
    with LlamaCppModel.load(registry, "memory-test", no_mmap) as model:
        assert model.complete("The capital of France is", max_tokens=4).stats.completion_tokens == 4
    fds = {os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}")}
    assert not any("memo-memory-test" in target for target in fds)  # descriptor closed after loading
