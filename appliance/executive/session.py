"""Answering a user's question on the appliance: open the models, answer, record it in the audit log.

The CLI, the HTTP API and the console all come through here, so every question is audited the
same way whichever door it came in by.
"""

from __future__ import annotations

import time

from appliance.errors import MemoError
from appliance.executive.agent import Executive, ExecutiveParams
from appliance.executive.trace import Trace
from appliance.llm.connect import DEFAULT_ENDPOINT, open_model
from appliance.vault.store import Vault

# what the executive is shown: the user's question, its own sub-questions, the memory's answers
# (with the ids of the documents cited, which carry no document text)
EXECUTIVE_SENDS = ("questions", "sub_questions", "memory_answers")


def open_executive(vault: Vault, endpoint: str = DEFAULT_ENDPOINT, memory_version: str | None = None,
                   params: ExecutiveParams | None = None) -> Executive:
    """The policy-approved executive and a memory version's GGUF (default: the promoted one)."""
    from appliance.memory.serve import open_memory
    from appliance.memory.versions import promoted

    if memory_version is None:
        current = promoted(vault)
        if current is None:
            raise MemoError("no memory is promoted yet: run `memo train`, then `memo export VERSION --promote`")
        memory_version = current.id
    from appliance.executive.grounding import SourceCheck

    memory = open_memory(vault, memory_version)
    executive = open_model(vault, endpoint, purpose="executive", sends=EXECUTIVE_SENDS)
    return Executive(executive, memory, memory_version, params, grounding=SourceCheck(vault))


def ask(vault: Vault, executive: Executive, question: str, actor: str, channel: str = "cli") -> Trace:
    """Answer and audit: the question and the whole trace go to the (encrypted) audit log.

    A failed answer is audited too, so a question that crashed an executive is not lost to review.
    """
    started = time.monotonic()
    try:
        trace = executive.answer(question)
    except Exception as exc:
        vault.audit.append(actor, "qa.failed", executive.memory_version, channel=channel, question=question[:2000],
                           error=f"{type(exc).__name__}: {exc}"[:500], seconds=round(time.monotonic() - started, 3))
        raise
    vault.audit.append(
        actor, "qa.ask", trace.memory_version, channel=channel, question=trace.question, answer=trace.answer,
        sub_questions=[{"question": s.question, "answer": s.answer, "sources": s.sources, "hop": s.hop,
                        "confidence": s.confidence, "grounded": s.grounded, "cited": s.cited} for s in trace.sub_answers],
        confidence=trace.confidence,
        sources=trace.sources, executive=trace.executive, memory=trace.memory, seconds=trace.seconds,
        timings=trace.timings, tokens=trace.tokens,
    )
    return trace


def source_titles(vault: Vault, doc_ids: list[str]) -> dict[str, str]:
    """Titles of the cited documents, for display (a forgotten document shows as such)."""
    from appliance.corpus.documents import list_documents

    known = {d.id: d.title for d in list_documents(vault, include_forgotten=True)}
    return {d: known.get(d, "(unknown document)") for d in doc_ids}
