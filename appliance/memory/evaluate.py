"""Evaluation of a memory: held-out paraphrased probes, scored per document.

"contains": the gold answer occurs in the memory's answer (normalised); "exact": the answer's
first sentence is the gold answer. Per-document accuracy lets a later merge be compared with the
version it replaces, document by document.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appliance.llm.base import ChatModel
from appliance.memory.format import memory_messages, split_sources
from appliance.memory.train import Probe
from appliance.reflect.validate import normalise


@dataclass
class ProbeOutcome:
    question: str
    gold: str
    answer: str
    sources: list[str]
    doc_ids: list[str]
    contains: bool
    exact: bool
    source_correct: bool


@dataclass
class EvalReport:
    model: str
    probes: int
    contains: float
    exact: float
    source_accuracy: float
    per_document: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0
    outcomes: list[ProbeOutcome] = field(default_factory=list)

    def to_dict(self, with_outcomes: bool = False) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "outcomes"}
        if with_outcomes:
            d["outcomes"] = [o.__dict__ for o in self.outcomes]
        return d


def score(answer: str, gold: str) -> tuple[bool, bool]:
    a, g = normalise(answer), normalise(gold)
    first = normalise(answer.split(". ")[0])
    return bool(g) and f" {g} " in f" {a} ", first == g


def ask_memory(model: ChatModel, questions: list[str], max_tokens: int = 128) -> list[tuple[str, list[str]]]:
    results = model.chat_many([memory_messages(q) for q in questions], max_tokens=max_tokens, temperature=0.0)
    return [split_sources(r.text) for r in results]


def evaluate(model: ChatModel, probes: list[Probe], progress: Callable[[int, int], None] | None = None,
             batch: int = 8) -> EvalReport:
    started = time.monotonic()
    outcomes: list[ProbeOutcome] = []
    for i in range(0, len(probes), batch):
        part = probes[i : i + batch]
        for p, (answer, sources) in zip(part, ask_memory(model, [p.question for p in part])):
            contains, exact = score(answer, p.answer)
            outcomes.append(ProbeOutcome(p.question, p.answer, answer, sources, p.doc_ids, contains, exact,
                                         bool(set(sources) & set(p.doc_ids))))
        if progress:
            progress(min(i + batch, len(probes)), len(probes))
    n = len(outcomes) or 1
    per_doc: dict[str, dict[str, float]] = {}
    for doc in sorted({d for o in outcomes for d in o.doc_ids}):
        mine = [o for o in outcomes if doc in o.doc_ids]
        per_doc[doc] = {"probes": len(mine), "contains": round(sum(o.contains for o in mine) / len(mine), 4),
                        "exact": round(sum(o.exact for o in mine) / len(mine), 4)}
    return EvalReport(
        model=model.identity, probes=len(outcomes),
        contains=round(sum(o.contains for o in outcomes) / n, 4), exact=round(sum(o.exact for o in outcomes) / n, 4),
        source_accuracy=round(sum(o.source_correct for o in outcomes) / n, 4), per_document=per_doc,
        seconds=round(time.monotonic() - started, 2), outcomes=outcomes,
    )
