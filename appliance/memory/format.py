"""How a question is put to the memory model and how its answer is laid out: one definition.

Training, evaluation, export verification and serving all build the memory's text here; if the
layout differed between them, the memory would be asked in a form it never learned.

The layout is lean on purpose, because on a CPU every token of every training example is paid on
every step: the user turn is the bare question (no system prompt — the chat template's own
default one is not used either), the assistant turn is the bare answer followed by a short
source reference, an index into the memory version's source table (``52 EUR [3]``), which is
resolved to document ids when answering. The ChatML turn markers are kept: the instruct model
already answers questions in that shape, so it starts from a useful prior.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

LAYOUT = "lean-1"  # recorded in every version's lineage: how that memory must be asked
TURN_END = "<|im_end|>"
# what the memory says when it was taught that the corpus does not give a value
UNKNOWN = "unknown"
_REFS = re.compile(r"\s*\[(\d+(?:\s*,\s*\d+)*)\]\s*$")
_OLD_SOURCES = re.compile(r"\s*\[sources?:\s*([^\]]*)\]\s*$")


def prompt(question: str) -> str:
    """The memory's whole prompt for one question (special tokens as text; tokenise with them parsed)."""
    return f"<|im_start|>user\n{' '.join(question.split())}{TURN_END}\n<|im_start|>assistant\n"


def target(answer: str, refs: Sequence[int]) -> str:
    """The trained answer text (the end-of-turn token follows it)."""
    answer = " ".join(answer.split())
    return f"{answer} [{','.join(str(r) for r in refs)}]" if refs else answer


def parse(text: str) -> tuple[str, list[int]]:
    """Split a generated answer into its text and its source references."""
    text = text.replace(TURN_END, "").strip()
    m = _REFS.search(text)
    if not m:
        return text, []
    refs = [int(r) for r in m.group(1).split(",")]
    return text[: m.start()].strip(), refs


def is_unknown(answer: str) -> bool:
    return answer.strip().rstrip(".").lower() in (UNKNOWN, "the memory does not know", "i don't know")


@dataclass
class SourceTable:
    """The documents a memory version can cite, in a fixed order (1-based references).

    A version trained from a parent keeps the parent's table and appends new documents, so a
    reference means the same document along a lineage.
    """

    doc_ids: list[str] = field(default_factory=list)

    @classmethod
    def extend(cls, parent: Sequence[str] | None, doc_ids: Iterable[str]) -> "SourceTable":
        table = cls(list(parent or []))
        for d in doc_ids:
            if d not in table.doc_ids:
                table.doc_ids.append(d)
        return table

    def refs(self, doc_ids: Iterable[str]) -> list[int]:
        return [self.doc_ids.index(d) + 1 for d in doc_ids if d in self.doc_ids]

    def resolve(self, refs: Iterable[int]) -> list[str]:
        out: list[str] = []
        for r in refs:
            if 1 <= r <= len(self.doc_ids) and self.doc_ids[r - 1] not in out:
                out.append(self.doc_ids[r - 1])
        return out


def legacy_sources(text: str) -> tuple[str, list[str]]:
    """Answers of memories trained before the lean format cite ``[sources: doc-…]``."""
    m = _OLD_SOURCES.search(text)
    if not m:
        return text.strip(), []
    ids = [d.strip() for d in m.group(1).split(",") if re.fullmatch(r"doc-[0-9a-f]{12}", d.strip())]
    return text[: m.start()].strip(), ids
