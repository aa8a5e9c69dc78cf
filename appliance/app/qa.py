"""Questions: through the executive (decompose, ask the memory, synthesise) or straight to the
memory — each answer, and each failure, audited as the asking principal with the door it came by."""

from __future__ import annotations

from typing import Any

from appliance.app.session import Session, use
from appliance.executive.agent import Executive
from appliance.executive.trace import Trace


@use("ask")
def ask(session: Session, executive: Executive, question: str) -> Trace:
    """Answer through ``executive`` (see :func:`appliance.app.serving.open_executive`); audited as
    ``qa.ask`` (or ``qa.failed``) with the session's channel."""
    from appliance.executive.session import ask as run

    return run(session.vault, executive, question, session.principal, channel=session.channel)


@use("ask")
def source_titles(session: Session, doc_ids: list[str]) -> dict[str, str]:
    from appliance.executive.session import source_titles as run

    return run(session.vault, doc_ids)


@use("memory.ask")
def ask_memory(session: Session, question: str, version_id: str | None = None) -> tuple[Any, str]:
    """One atomic question to a memory version directly (no executive); audited as ``memory.ask``.
    Returns the recall (answer, sources, confidence) and the version asked."""
    from appliance.app.serving import open_memory

    memory = open_memory(session, version_id)
    r = memory.ask([question])[0]
    session.vault.audit.append(session.principal, "memory.ask", memory.version, model=memory.identity, question=question,
                               answer=r.answer, sources=r.sources, confidence=r.confidence, channel=session.channel)
    return r, memory.version


@use("endpoint.test")
def test_endpoint(session: Session, name: str) -> dict[str, Any]:
    """Open a policy endpoint as the executive (policy gate, checksums) and get a short reply."""
    import time

    from appliance.executive.session import EXECUTIVE_SENDS
    from appliance.llm.base import user
    from appliance.llm.connect import open_model

    started = time.monotonic()
    model = open_model(session.vault, name, purpose="executive", sends=EXECUTIVE_SENDS)
    opened = time.monotonic() - started
    try:
        result = model.chat([user("Reply with the single word OK.")], max_tokens=8)
    finally:
        close = getattr(model, "close", None)
        if callable(close):
            close()
    return {"endpoint": name, "identity": model.identity, "open_s": round(opened, 2),
            "reply": result.text.strip(), "tokens_per_s": round(result.stats.tokens_per_second, 1),
            "seconds": round(time.monotonic() - started, 2)}
