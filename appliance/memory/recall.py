"""Asking the memory model: one question in its training layout, one short answer, its sources and
how sure the memory is of it.

Every door that asks the memory (the executive, ``memo memory ask``, evaluation, the benchmark's
memory-alone system, candidate evaluation) comes through :class:`Memory`, so the memory is always
asked in the form it was trained on (:mod:`appliance.memory.format`), greedily.

*Confidence* is the probability of the least likely token of the memory's answer (its source
reference and the end of the turn left out: the grounding check judges the citation): a memorised
fact comes back with every token near 1, while a made-up value has at least one token the model
hesitated over. The executive uses it to
abstain rather than state an invented value (``bench/abstention.py`` measures the trade-off).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from appliance.memory import format as fmt

DEFAULT_MAX_TOKENS = 40


@dataclass(frozen=True)
class Recall:
    """What the memory said to one question."""

    question: str
    answer: str
    sources: list[str]
    confidence: float
    seconds: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    logprobs: tuple[float, ...] = field(default=(), repr=False)

    @property
    def unknown(self) -> bool:
        return not self.answer or fmt.is_unknown(self.answer)


class Backend(Protocol):
    """llama.cpp (:class:`~appliance.llm.llamacpp.LlamaCppModel`) or transformers
    (:class:`~appliance.memory.evaluate.TransformersChat`)."""

    @property
    def identity(self) -> str: ...

    def complete_many(self, prompts: Sequence[str], max_tokens: int = 256, temperature: float = 0.0,
                      json_schema: Any = None, *, stop: Sequence[str] = (), special: bool = False,
                      logprobs: bool = False) -> list[Any]: ...


def confidence(logprobs: Sequence[float] | None, starts: Sequence[int] | None = None, upto: int | None = None) -> float:
    """The least likely token's probability among those that say the answer: the tokens beginning
    before byte ``upto`` of the text (the answer without its source reference), all of them when the
    offsets are not known; 1.0 when the backend reports none. The source index and the end of the
    turn are left out because the grounding check judges the citation on its own (a wrong index
    is corrected to the document that states the value) and is no doubt about the value itself."""
    if not logprobs:
        return 1.0
    if starts is not None and upto is not None and len(starts) == len(logprobs):
        said = [lp for lp, at in zip(logprobs, starts) if at < upto]
        if said:
            return math.exp(min(said))
    return math.exp(min(logprobs))


def answer_bytes(text: str, answer: str) -> int | None:
    """Where the answer ends in the generated text (bytes): what comes after is its source reference."""
    at = text.find(answer) if answer else -1
    return len(text[: at + len(answer)].encode()) if at >= 0 else None


class Memory:
    """A memory model and the source table of its version; ``legacy`` for versions trained before
    the lean layout (system prompt, ``[sources: doc-…]``), which are asked the way they learned."""

    def __init__(self, backend: Any, sources: Sequence[str] = (), version: str | None = None,
                 legacy: bool = False) -> None:
        self.backend = backend
        self.table = fmt.SourceTable(list(sources))
        self.version = version
        self.legacy = legacy

    @property
    def identity(self) -> str:
        return self.backend.identity

    def ask(self, questions: Sequence[str], max_tokens: int = DEFAULT_MAX_TOKENS) -> list[Recall]:
        if not questions:
            return []
        started = time.monotonic()
        if self.legacy:
            results = self.backend.chat_many([legacy_messages(q) for q in questions], max_tokens=max_tokens, temperature=0.0)
        else:
            results = self.backend.complete_many([fmt.prompt(q) for q in questions], max_tokens=max_tokens, temperature=0.0,
                                                 stop=[fmt.TURN_END], special=True, logprobs=True)
        seconds = (time.monotonic() - started) / len(questions)
        out = []
        for q, r in zip(questions, results):
            if self.legacy:
                answer, sources = fmt.legacy_sources(r.text)
            else:
                answer, refs = fmt.parse(r.text)
                sources = self.table.resolve(refs)
            lp = tuple(r.token_logprobs or ())
            sure = confidence(lp, r.token_starts, None if self.legacy else answer_bytes(r.text, answer))
            out.append(Recall(q, answer, sources, round(sure, 4), round(seconds, 3), r.stats.prompt_tokens,
                              r.stats.completion_tokens, lp))
        return out


LEGACY_SYSTEM = "You are the organisation's memory. Answer the question from memory in one or two sentences, then name the source."


def legacy_messages(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": LEGACY_SYSTEM}, {"role": "user", "content": question.strip()}]


def for_version(backend: Any, lineage: dict[str, Any], version: str | None = None) -> Memory:
    """A :class:`Memory` over a version's weights, with the source table and layout of its lineage."""
    layout = lineage.get("format")
    return Memory(backend, lineage.get("sources", []), version, legacy=layout != fmt.LAYOUT)
