"""Ask the memory → (bridge hops) → answer or abstain: a query protocol that never loses the memory's answer.

The memory model was trained on short questions with bare answers, and reports how sure it is
(:mod:`appliance.memory.recall`). So:

1. the question goes to the memory **as it is**, in its training form: a single-fact question is
   already atomic, and a composed (multi-hop) question may have been trained as such;
2. when the memory is not sure, the question is split at its **bridges** — descriptions of an
   entity it does not name ("the team that owns Routewise"): each is asked as a question of its
   own, and the outer question again with the description replaced by the answer ("Who leads
   Fleet Dispatch?"). Bridges come from the question's syntax (:mod:`appliance.executive.bridges`)
   and, where syntax finds none, from the executive model (JSON constrained by a schema, checked);
3. the answer is the memory's most confident one whose value a document it cites states about
   what the question names (the entity in a sentence, its row or its section heading, or linked
   to it through one other statement) — or,
   where its citation is wrong, a sentence of the corpus states together with the question's own
   words; then those documents are cited instead, and more confidence is asked of it
   (:mod:`appliance.executive.grounding`). When none is, the appliance says **the memory does
   not know** rather than state an invented value — as it does when the memory itself answers
   "unknown" (it was taught to for questions the corpus does not answer);
4. the executive phrases the chosen answer in a sentence — and the value must survive verbatim,
   or the memory's own words are given instead.

The executive sees the question, its sub-questions and the memory's answers, never document text.
Cost is bounded: one memory call when the memory is sure, else one decomposition, two batched
memory calls and one phrasing call.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from appliance.errors import MemoError
from appliance.executive.bridges import Bridge, bridges, substitute
from appliance.executive.trace import SubAnswer, Trace
from appliance.llm.base import ChatModel, ChatResult, Message, system, user
from appliance.memory.recall import Memory, Recall

if TYPE_CHECKING:
    from appliance.executive.grounding import SourceCheck

UNKNOWN_ANSWER = "The memory does not know."
DECOMPOSE_SYSTEM = (
    "A question may describe a thing instead of naming it. Copy that description exactly as it is written in the "
    "question, and write the simple question that asks which thing it is."
)
# one worked example: a small executive follows a shown pattern far better than a described one
DECOMPOSE_EXAMPLE = (
    "Where is the office of the person who approves hotel bookings?",
    {"description": "the person who approves hotel bookings", "question": "Who approves hotel bookings?"},
)
PHRASE_SYSTEM = (
    "You turn a short answer from the organisation's memory into one sentence that answers the question. "
    "Copy the answer's names, numbers, amounts and dates exactly. Add nothing else."
)
MAX_QUESTION_CHARS = 2000
DECOMPOSE_SCHEMA = {
    "type": "object",
    "properties": {"description": {"type": "string", "maxLength": 200}, "question": {"type": "string", "maxLength": 200}},
    "required": ["description", "question"],
}


@dataclass(frozen=True)
class ExecutiveParams:
    """Knobs of the query protocol; the defaults fit a small local executive on two cores.

    ``confident``: a memory answer at least this sure is taken as it is; ``abstain_below``: the best
    answer found must be at least this sure, else the memory does not know; ``uncited_below``: the
    same for an answer whose own citation did not state its value (the corpus did, elsewhere).
    ``max_hops``: bridge rounds (0: ask the memory once). ``phrase``: let the executive put the
    answer in a sentence. The two thresholds are read off ``bench/abstention.py``'s curve (held-out
    probes and a calibration set of unanswerable questions, not the development set).
    """

    max_hops: int = 1
    max_bridges: int = 2
    confident: float = 0.8
    abstain_below: float = 0.4
    uncited_below: float = 0.5
    memory_max_tokens: int = 40
    plan_max_tokens: int = 96
    answer_max_tokens: int = 64
    phrase: bool = True
    # kept for callers of the earlier protocol; bridges replaced free decomposition
    max_sub_questions: int = 2


def clean_questions(candidates: Sequence[object], asked: Sequence[str], limit: int) -> list[str]:
    """Keep well-formed, new questions only: an executive's JSON is checked, never trusted."""
    seen = [_words(q) for q in asked]
    kept: list[str] = []
    for c in candidates:
        if not isinstance(c, str):
            continue
        q = " ".join(c.split())
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


def _words(q: str) -> set[str]:
    return set(re.sub(r"[^a-z0-9]+", " ", q.lower()).split())


def _near(a: set[str], b: set[str]) -> bool:
    """Same question in other words: a small executive often 'decomposes' by rephrasing."""
    return len(a & b) / max(len(a | b), 1) >= 0.75


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w.:]+", " ", text.lower()).split())


class Executive:
    """One executive model and one memory, answering questions; not thread-safe (callers lock)."""

    def __init__(self, executive_model: ChatModel, memory: Memory, memory_version: str,
                 params: ExecutiveParams | None = None,
                 grounding: SourceCheck | None = None) -> None:
        self.executive_model = executive_model
        # a bare model (a test, a base model) is asked in the memory's own layout
        self.memory_model = memory if isinstance(memory, Memory) else Memory(memory, version=memory_version)
        self.memory_version = memory_version
        self.params = params or ExecutiveParams()
        self.grounding = grounding  # checks the value against the cited documents, else the current corpus
        self._tokens: dict[str, int] = {}

    def _count(self, who: str, prompt: int, completion: int) -> None:
        self._tokens[f"{who}_prompt"] = self._tokens.get(f"{who}_prompt", 0) + prompt
        self._tokens[f"{who}_completion"] = self._tokens.get(f"{who}_completion", 0) + completion

    def _executive(self, messages: list[Message], max_tokens: int, schema: dict | None = None) -> ChatResult:
        result = self.executive_model.chat(messages, max_tokens=max_tokens, temperature=0.0, json_schema=schema)
        self._count("executive", result.stats.prompt_tokens, result.stats.completion_tokens)
        return result

    def ask_memory(self, questions: Sequence[str], hop: int) -> list[SubAnswer]:
        if not questions:
            return []
        recalls = self.memory_model.ask(list(questions), self.params.memory_max_tokens)
        for r in recalls:
            self._count("memory", r.prompt_tokens, r.completion_tokens)
        return [checked(r, self.grounding, hop) for r in recalls]

    def decompose(self, question: str) -> list[Bridge]:
        """Bridges of the question: from its syntax, else proposed by the executive (and checked)."""
        found = bridges(question)
        if found:
            return found[: self.params.max_bridges]
        ask = "Question: "
        example_q, example = DECOMPOSE_EXAMPLE
        messages = [system(DECOMPOSE_SYSTEM), user(ask + example_q), {"role": "assistant", "content": json.dumps(example)},
                    user(ask + question)]
        try:
            plan = self._executive(messages, self.params.plan_max_tokens, DECOMPOSE_SCHEMA).json()
        except (MemoError, AttributeError):
            return []
        if not isinstance(plan, dict):
            return []
        phrase, sub = str(plan.get("description", "")).strip(), str(plan.get("question", "")).strip()
        # the description must be a real part of the question, shorter than it; the sub-question new
        if not phrase or phrase not in question or len(phrase) >= len(question) - 3 or len(phrase.split()) < 2:
            return []
        kept = clean_questions([sub], [question], 1)
        return [Bridge(phrase, kept[0])] if kept else []

    def phrase_answer(self, question: str, value: str) -> str:
        """One sentence around the memory's value; the value itself is never lost."""
        if not self.params.phrase:
            return value
        messages = [system(PHRASE_SYSTEM), user(f"Question: {question}\nMemory's answer: {value}\n\nSentence:")]
        text = " ".join(self._executive(messages, self.params.answer_max_tokens).text.split())
        core = re.sub(r"\s*\([^)]*\)\s*$", "", value).strip()
        if not text or _norm(core) not in _norm(text) or len(text) > 4 * len(value) + 120:
            return value
        if core != value and _norm(value) not in _norm(text):
            text = f"{text.rstrip('.')} ({value[len(core):].strip(' ()')})."
        return text

    def answer(self, question: str) -> Trace:
        question = " ".join(question.split())
        if not question:
            raise MemoError("the question is empty: ask something, e.g. memo ask \"Who approves travel over 2,000 EUR?\"")
        if len(question) > MAX_QUESTION_CHARS:
            raise MemoError(f"the question is {len(question)} characters long; keep it under {MAX_QUESTION_CHARS}")
        p = self.params
        self._tokens = {}
        started = time.monotonic()
        timings: dict[str, float] = {}

        t = time.monotonic()
        subs = self.ask_memory([question], hop=0)
        timings["memory_s"] = time.monotonic() - t
        best = subs[0]
        chosen: SubAnswer | None = best if sure(best, p, p.confident) else None

        t = time.monotonic()
        hop_s = 0.0
        if chosen is None and p.max_hops > 0:
            plan = self.decompose(question)
            timings["decompose_s"] = time.monotonic() - t
            t = time.monotonic()
            firsts = self.ask_memory([b.question for b in plan], hop=1)
            subs += firsts
            outer = [(b, f) for b, f in zip(plan, firsts) if sure(f, p)]
            seconds = self.ask_memory([substitute(question, b.phrase, f.answer) for b, f in outer], hop=2)
            subs += seconds
            # a chain is as sure as its weaker link
            chains = [(min(f.confidence, s.confidence), s, f) for (b, f), s in zip(outer, seconds) if sure(s, p)]
            if chains:
                conf, s, f = max(chains, key=lambda c: c[0])
                if conf >= (best.confidence if _usable(best) else 0.0):
                    chosen = SubAnswer(s.question, s.answer, list(dict.fromkeys(s.sources + f.sources)), s.seconds, s.hop, conf,
                                       s.grounded, False if False in (s.cited, f.cited) else s.cited)
            hop_s = time.monotonic() - t
        else:
            timings["decompose_s"] = 0.0
        timings["hops_s"] = hop_s
        if chosen is None and sure(best, p):
            chosen = best

        t = time.monotonic()
        answer = self.phrase_answer(question, chosen.answer) if chosen is not None else UNKNOWN_ANSWER
        timings["phrase_s"] = time.monotonic() - t

        sources = list(chosen.sources) if chosen is not None else []
        total = time.monotonic() - started
        return Trace(
            question=question, answer=answer, sub_answers=subs, sources=sources, memory_version=self.memory_version,
            executive=self.executive_model.identity, memory=self.memory_model.identity, seconds=round(total, 3),
            timings={k: round(v, 3) for k, v in timings.items()}, tokens=dict(self._tokens),
            confidence=round(chosen.confidence, 4) if chosen is not None else 0.0,
        )


def _usable(s: SubAnswer) -> bool:
    """An answer that states a value, and — where values are checked — one the corpus states."""
    from appliance.memory.format import is_unknown

    return bool(s.answer) and not is_unknown(s.answer) and s.grounded is not False


def checked(r: Recall, grounding: SourceCheck | None, hop: int = 0) -> SubAnswer:
    """The memory's answer with its value checked: against what it cites, else the corpus (sources corrected)."""
    if grounding is None or r.unknown:
        return SubAnswer(r.question, r.answer, r.sources, r.seconds, hop, r.confidence)
    cited, stating = grounding.verify(r.question, r.answer, r.sources)
    return SubAnswer(r.question, r.answer, stating or r.sources, r.seconds, hop, r.confidence, bool(stating), cited)


def sure(s: SubAnswer, p: ExecutiveParams, at_least: float = 0.0) -> bool:
    """Usable and sure enough: an answer its own citation did not back needs ``uncited_below`` too."""
    need = max(at_least, p.abstain_below, p.uncited_below if s.cited is False else 0.0)
    return _usable(s) and s.confidence >= need
