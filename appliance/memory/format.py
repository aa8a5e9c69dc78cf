"""How a question is put to the memory model and how its answer is laid out.

One definition for training, evaluation, export verification and serving: if the chat layout
differed between them, the memory would be asked in a form it never learned.
"""

from __future__ import annotations

import re

MEMORY_SYSTEM = "You are the organisation's memory. Answer the question from memory in one or two sentences, then name the source."
_SOURCES = re.compile(r"\s*\[sources?:\s*([^\]]*)\]\s*$")


def memory_messages(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": MEMORY_SYSTEM}, {"role": "user", "content": question.strip()}]


def training_answer(answer: str, doc_ids: list[str]) -> str:
    """The target text: the answer, then the documents it came from, so the memory can cite them."""
    return f"{answer.strip()} [sources: {', '.join(doc_ids)}]"


def split_sources(text: str) -> tuple[str, list[str]]:
    """Separate a memory answer from the document ids it cites."""
    m = _SOURCES.search(text)
    if not m:
        return text.strip(), []
    ids = [d.strip() for d in m.group(1).split(",") if re.fullmatch(r"doc-[0-9a-f]{12}", d.strip())]
    return text[: m.start()].strip(), ids
