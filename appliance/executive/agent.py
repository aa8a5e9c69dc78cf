"""Decompose → ask the memory → (follow up) → synthesise.

The memory model was trained on short, self-contained questions, so it answers best when asked
exactly that; the executive's job is to turn a user's question into such questions and the
memory's answers back into one reply. The original question is always asked too: for a
single-fact question it is already atomic, and a weak executive's decomposition must never make
the appliance answer worse than the memory alone would.

Cost is bounded: one decomposition call, one batched memory call per hop (llama.cpp shares the
system-prompt prefix across the batch), at most ``max_hops`` follow-ups, one synthesis call.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from appliance.errors import MemoError
from appliance.executive.trace import SubAnswer, Trace
from appliance.llm.base import ChatModel, ChatResult, Message, system, user
from appliance.memory.format import memory_messages, split_sources

DECOMPOSE_SYSTEM = (
    "You break a question about an organisation into simple questions. Each simple question asks "
    "for one fact, names the person, system or document it is about, and makes sense on its own."
)
# one worked example: a small executive follows a shown pattern far better than a described one
DECOMPOSE_EXAMPLE = (
    "Where is the office of the person who approves hotel bookings?",
    ["Who approves hotel bookings?", "Where is the office of the person who approves hotel bookings?"],
)
FOLLOW_UP_EXAMPLE = (
    "Where is the office of the person who approves hotel bookings?",
    "- Q: Who approves hotel bookings?\n  A: Hotel bookings are approved by Ada Lindqvist, travel coordinator.",
    "Where is Ada Lindqvist's office?",
)
FOLLOW_UP_SYSTEM = (
    "You decide whether one more simple question is needed to answer a question, given what is "
    "already known. If the known answers name a person, system or value that must be looked up "
    "further, write that follow-up question; otherwise write an empty string."
)
SYNTHESIS_SYSTEM = (
    "You answer questions about an organisation using only the notes from its memory. Answer in "
    "one or two sentences. Copy names, numbers, amounts and dates exactly as the notes give them. "
    "If the notes disagree, prefer the most recent or current value. If the notes do not contain "
    "the answer, say that the memory does not know."
)
MAX_QUESTION_CHARS = 2000


@dataclass(frozen=True)
class ExecutiveParams:
    """Knobs of the query protocol; the defaults fit a small local executive on two cores."""

    max_sub_questions: int = 3
    max_hops: int = 1
    memory_max_tokens: int = 96
    plan_max_tokens: int = 160
    answer_max_tokens: int = 128


def _decompose_schema(n: int) -> dict:
    return {
        "type": "object",
        "properties": {"sub_questions": {"type": "array", "items": {"type": "string", "maxLength": 200}, "minItems": 1, "maxItems": n}},
        "required": ["sub_questions"],
    }


FOLLOW_UP_SCHEMA = {"type": "object", "properties": {"next_question": {"type": "string", "maxLength": 200}}, "required": ["next_question"]}


def _words(q: str) -> set[str]:
    return set(re.sub(r"[^a-z0-9]+", " ", q.lower()).split())


def _near(a: set[str], b: set[str]) -> bool:
    """Same question in other words: a small executive often 'decomposes' by rephrasing."""
    return len(a & b) / max(len(a | b), 1) >= 0.75


def clean_questions(candidates: Sequence[object], asked: Sequence[str], limit: int) -> list[str]:
    """Keep well-formed, new questions only: an executive's JSON is checked, never trusted."""
    seen = [_words(q) for q in asked]
    kept: list[str] = []
    for c in candidates:
        if not isinstance(c, str):
            continue
        q = " ".join(c.split())
        # a question, not a statement or an echo of the notes
        if not q.endswith("?") or len(q) > 300 or len(q.split()) < 3:
            continue
        key = _words(q)
        if any(_near(key, s) for s in seen):
            continue
        seen.append(key)
        kept.append(q)
        if len(kept) == limit:
            break
    return kept


def _notes(subs: Sequence[SubAnswer]) -> str:
    return "\n".join(f"- Q: {s.question}\n  A: {s.answer}" for s in subs)


class Executive:
    """One executive model and one memory model, answering questions; not thread-safe (callers lock)."""

    def __init__(self, executive_model: ChatModel, memory_model: ChatModel, memory_version: str,
                 params: ExecutiveParams | None = None) -> None:
        self.executive_model = executive_model
        self.memory_model = memory_model
        self.memory_version = memory_version
        self.params = params or ExecutiveParams()
        self._tokens: dict[str, int] = {}

    def _count(self, who: str, results: Sequence[ChatResult]) -> None:
        for r in results:
            self._tokens[f"{who}_prompt"] = self._tokens.get(f"{who}_prompt", 0) + r.stats.prompt_tokens
            self._tokens[f"{who}_completion"] = self._tokens.get(f"{who}_completion", 0) + r.stats.completion_tokens

    def _executive(self, messages: list[Message], max_tokens: int, schema: dict | None = None) -> ChatResult:
        result = self.executive_model.chat(messages, max_tokens=max_tokens, temperature=0.0, json_schema=schema)
        self._count("executive", [result])
        return result

    def _json_list(self, messages: list[Message], key: str, schema: dict) -> list[object]:
        """A schema-constrained call; a malformed reply (cut off, say) counts as 'nothing proposed'."""
        try:
            value = self._executive(messages, self.params.plan_max_tokens, schema).json().get(key)
        except (MemoError, AttributeError):
            return []
        return value if isinstance(value, list) else [value]

    def ask_memory(self, questions: Sequence[str], hop: int) -> list[SubAnswer]:
        if not questions:
            return []
        started = time.monotonic()
        results = self.memory_model.chat_many([memory_messages(q) for q in questions],  # type: ignore[misc]
                                              max_tokens=self.params.memory_max_tokens, temperature=0.0)
        self._count("memory", results)
        seconds = (time.monotonic() - started) / len(questions)
        subs = []
        for q, r in zip(questions, results):
            answer, sources = split_sources(r.text)
            subs.append(SubAnswer(q, answer, sources, round(seconds, 3), hop))
        return subs

    def decompose(self, question: str) -> list[str]:
        n = self.params.max_sub_questions
        if n <= 0:
            return []
        ask = "Break this question into simple questions, one fact each:\n"
        example_q, example_subs = DECOMPOSE_EXAMPLE
        messages = [system(DECOMPOSE_SYSTEM), user(ask + example_q),
                    {"role": "assistant", "content": json.dumps({"sub_questions": example_subs})}, user(ask + question)]
        return clean_questions(self._json_list(messages, "sub_questions", _decompose_schema(n)), [question], n)

    def follow_up(self, question: str, subs: Sequence[SubAnswer]) -> list[str]:
        def prompt(q: str, notes: str) -> Message:
            return user(f"Question: {q}\n\nKnown so far:\n{notes}\n\nWrite the follow-up question, or an empty string.")

        example_q, example_notes, example_next = FOLLOW_UP_EXAMPLE
        messages = [system(FOLLOW_UP_SYSTEM), prompt(example_q, example_notes),
                    {"role": "assistant", "content": json.dumps({"next_question": example_next})},
                    prompt(question, _notes(subs))]
        return clean_questions(self._json_list(messages, "next_question", FOLLOW_UP_SCHEMA), [s.question for s in subs], 1)

    def synthesise(self, question: str, subs: Sequence[SubAnswer]) -> str:
        messages = [system(SYNTHESIS_SYSTEM), user(f"Notes from the memory:\n{_notes(subs)}\n\nQuestion: {question}")]
        text = self._executive(messages, self.params.answer_max_tokens).text.strip()
        return text or "The memory does not know."

    def answer(self, question: str) -> Trace:
        question = " ".join(question.split())
        if not question:
            raise MemoError("the question is empty: ask something, e.g. memo ask \"Who approves travel over 2,000 EUR?\"")
        if len(question) > MAX_QUESTION_CHARS:
            raise MemoError(f"the question is {len(question)} characters long; keep it under {MAX_QUESTION_CHARS}")
        self._tokens = {}
        started = time.monotonic()
        timings: dict[str, float] = {}

        t = time.monotonic()
        planned = self.decompose(question)
        timings["decompose_s"] = time.monotonic() - t

        t = time.monotonic()
        subs = self.ask_memory([question, *planned], hop=0)
        timings["memory_s"] = time.monotonic() - t

        follow_s = 0.0
        for hop in range(1, self.params.max_hops + 1):
            t = time.monotonic()
            nxt = self.follow_up(question, subs)
            if nxt:
                subs += self.ask_memory(nxt, hop=hop)
            follow_s += time.monotonic() - t
            if not nxt:
                break
        timings["follow_up_s"] = follow_s

        t = time.monotonic()
        answer = self.synthesise(question, subs)
        timings["synthesise_s"] = time.monotonic() - t

        sources: list[str] = []
        for s in subs:
            sources += [d for d in s.sources if d not in sources]
        total = time.monotonic() - started
        return Trace(
            question=question, answer=answer, sub_answers=subs, sources=sources, memory_version=self.memory_version,
            executive=self.executive_model.identity, memory=self.memory_model.identity, seconds=round(total, 3),
            timings={k: round(v, 3) for k, v in timings.items()}, tokens=dict(self._tokens),
        )
