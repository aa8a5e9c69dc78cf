"""llama.cpp backend on the real bundled model: answers, JSON, batching, prefix sharing, seeds, RAM-only vault models."""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.errors import MemoError
from appliance.llm.base import ChatModel, ChatResult, GenerationStats
from appliance.llm.llamacpp import LlamaCppModel, _common
from appliance.llm.registry import ModelRegistry
from appliance.reflect.prompts import paraphrase_prompt, question_prompt
from appliance.vault.store import Vault
from tests.llm.conftest import SYSTEM, TEST_OPTIONS, ask_known

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
    right = [r for r, ok in ask_known(bundled_model) if ok]
    assert len(right) >= 2
    result = right[0]
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
        assert sum(ok for _, ok in ask_known(model)) >= 2
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


# ------------------------------------------------------------------------------ prefix sharing
FACTS = [  # reflection-style: one long few-shot prefix, short tails; two answers share a fact
    ("Team: People Ops; Lead: Anna Berg", "Anna Berg"),
    ("Team: People Ops; Lead: Anna Berg", "People Ops"),
    ("The cold room is kept at 4 degrees.", "4 degrees"),
    ("System: Routewise; Owning team: Fleet Dispatch; Hosted at: On-prem", "Fleet Dispatch"),
    ("Travel must be approved by the line manager before booking.", "the line manager"),
    ("Per diem for domestic travel is 45 EUR.", "45 EUR"),
]
PARTY = "🎉 Summer party 2025!!! 🎉: "
UNEVEN = [  # prompts of nearly equal length: batched as llama.cpp splits them, one answer used to change
    (PARTY + "The Halvorsen & Quist summer party will take place on 14 June 2025 at The Copper Lantern in "
     "Brannoch, starting at 18:00.", "14 June 2025"),
    (PARTY + "The Halvorsen & Quist summer party will take place on 14 June 2025 at The Copper Lantern in "
     "Brannoch, starting at 18:00.", "18:00"),
    (PARTY + 'live music by "The Reefer Units" (yes, that\'s the Fleet Dispatch band)', "The Reefer Units"),
    (PARTY + 'live music by "The Reefer Units" (yes, that\'s the Fleet Dispatch band)', "Fleet Dispatch"),
    (PARTY + "Please sign up on the sheet next to reception at Kestrel Yard by 6 June so we can tell the "
     "caterer the numbers.", "Kestrel Yard"),
    (PARTY + "Please sign up on the sheet next to reception at Kestrel Yard by 6 June so we can tell the "
     "caterer the numbers.", "June"),
    (PARTY + "A shuttle bus leaves Gannet Point at 17:15 and Little Osier at 17:30.", "17:15"),
    (PARTY + "A shuttle bus leaves Gannet Point at 17:15 and Little Osier at 17:30.", "17:30"),
]


@pytest.fixture(scope="module")
def plain_model(module_vault: Vault) -> Iterator[LlamaCppModel]:
    """The reference: no sharing, one sequence at a time, so every prompt is decoded alone from scratch."""
    options = dataclasses.replace(TEST_OPTIONS, share_prefix=False, max_parallel=1)
    model = LlamaCppModel.load(ModelRegistry(module_vault), options=options)
    yield model
    model.close()


def _decoded(results: list[ChatResult]) -> int:
    return sum(r.stats.prompt_tokens - r.stats.cached_tokens for r in results)


def test_common_prefix_length() -> None:
    assert _common([1, 2, 3, 4], [1, 2, 9], 10) == 2
    assert _common([1, 2, 3], [1, 2, 3, 4], 10) == 3
    assert _common([1, 2, 3], [1, 2, 3], 2) == 2
    assert _common([5], [1], 3) == 0 and _common([], [1], 3) == 0 and _common([1], [1], 0) == 0
    assert all(_common(list(range(n)) + [-1], list(range(100)), 200) == n for n in range(0, 60, 7))


def test_shared_prefix_answers_equal_unshared_ones(bundled_model: LlamaCppModel, plain_model: LlamaCppModel) -> None:
    """Sharing prompt prefixes (in a batch and across calls) changes no greedy answer, and decodes far less."""
    questions = [question_prompt(f, a) for f, a in FACTS]
    paraphrases = [paraphrase_prompt(q) for q in ("When does Gannet Point open?", "Who leads People Ops?")]
    expected_q = [plain_model.chat(c, max_tokens=24).text for c in questions]
    expected_p = [plain_model.chat(c, max_tokens=24).text for c in paraphrases]
    assert plain_model.totals.cached_tokens == 0

    bundled_model.clear_cache()
    first = bundled_model.chat_many(questions, max_tokens=24)
    other = bundled_model.chat_many(paraphrases, max_tokens=24)  # another prefix in between
    again = bundled_model.chat_many(questions, max_tokens=24)
    assert [r.text for r in first] == expected_q
    assert [r.text for r in other] == expected_p
    assert [r.text for r in again] == expected_q

    prompt_tokens = sum(r.stats.prompt_tokens for r in first)
    assert all(r.stats.prompt_tokens > 150 for r in first)  # the logical count is unchanged
    assert _decoded(first) < 0.45 * prompt_tokens  # the few-shot prefix once, then the tails
    assert _decoded(again) < 0.6 * _decoded(first)  # the prefix was kept from the first call
    assert GenerationStats.combine(r.stats for r in again).cached_tokens == sum(r.stats.cached_tokens for r in again)
    totals = bundled_model.totals
    assert totals.prompt_tokens >= 2 * prompt_tokens and 0 < totals.cached_tokens < totals.prompt_tokens

    bundled_model.clear_cache()
    assert _decoded(bundled_model.chat_many(questions[:1], max_tokens=4)) == first[0].stats.prompt_tokens


def test_batched_answers_equal_one_by_one_for_uneven_prompts(bundled_model: LlamaCppModel, plain_model: LlamaCppModel) -> None:
    """Prompts one token apart: llama.cpp would give some a one-token micro-batch, which rounds differently."""
    conversations = [question_prompt(f, a) for f, a in UNEVEN]
    expected = [plain_model.chat(c, max_tokens=24).text for c in conversations]
    for share in (False, True):
        bundled_model.clear_cache()
        bundled_model.options = dataclasses.replace(bundled_model.options, share_prefix=share)
        try:
            assert [r.text for r in bundled_model.chat_many(conversations, max_tokens=24)] == expected
        finally:
            bundled_model.options = TEST_OPTIONS


def test_continued_conversation_reuses_its_prefix(bundled_model: LlamaCppModel) -> None:
    convo = [SYSTEM, {"role": "user", "content": "Name a colour."}]
    first = bundled_model.chat(convo, max_tokens=8)
    convo += [{"role": "assistant", "content": first.text}, {"role": "user", "content": "And another one?"}]
    second = bundled_model.chat(convo, max_tokens=8)
    assert second.stats.cached_tokens >= first.stats.prompt_tokens - 2
    assert second.stats.cached_tokens < second.stats.prompt_tokens


def test_greedy_fast_path_matches_llamacpp_sampler(bundled_model: LlamaCppModel) -> None:
    """The numpy greedy pick applies the repeat penalty exactly as llama.cpp's sampler chain does."""
    prompt = "List of fruits: apple, banana, cherry,"
    fast = bundled_model.complete(prompt, max_tokens=120)  # longer than the 64-token penalty window
    bundled_model._fast_greedy = False
    try:
        chain = bundled_model.complete(prompt, max_tokens=120)
    finally:
        bundled_model._fast_greedy = True
    assert fast.text == chain.text and fast.stats.completion_tokens == chain.stats.completion_tokens


def test_logprobs_of_greedy_tokens(bundled_model: LlamaCppModel) -> None:
    """The memory's confidence comes from these: one log-probability per generated token (and the end
    of the answer), the greedy text unchanged by asking for them, and a batch equal to one by one."""
    from appliance.memory.format import TURN_END, prompt

    prompts = [prompt("What is the capital of France?"), prompt("Name a colour.")]
    plain = bundled_model.complete_many(prompts, max_tokens=16, stop=[TURN_END], special=True)
    scored = bundled_model.complete_many(prompts, max_tokens=16, stop=[TURN_END], special=True, logprobs=True)
    assert [r.text for r in scored] == [r.text for r in plain] and plain[0].token_logprobs is None
    assert plain[0].token_starts is None
    for r in scored:
        lp = r.token_logprobs
        assert lp is not None and all(x <= 1e-6 for x in lp)
        assert len(lp) == r.stats.completion_tokens + (r.finish_reason == "stop")
        starts, n = r.token_starts, len(r.text.encode())  # where each token begins in the text (bytes)
        assert starts is not None and len(starts) == len(lp) and starts[0] == 0
        assert all(a < b for a, b in zip(starts[: r.stats.completion_tokens], starts[1:]))  # every piece has bytes
        assert starts[r.stats.completion_tokens - 1] < n and (r.finish_reason != "stop" or starts[-1] == n)
    alone = bundled_model.complete(prompts[1], max_tokens=16, stop=[TURN_END], special=True, logprobs=True)
    assert alone.token_logprobs == pytest.approx(scored[1].token_logprobs, abs=1e-5)
    with pytest.raises(MemoError, match="greedy"):
        bundled_model.complete(prompts[0], max_tokens=4, temperature=0.7, logprobs=True)
