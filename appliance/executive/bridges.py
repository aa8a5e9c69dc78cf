"""Bridge questions of a multi-hop question, read off its syntax.

"Who leads *the team that owns Routewise*?" asks about an entity it only describes: a relative
clause names it ("the team that owns Routewise"). The memory can answer the description as a
question of its own ("Which team owns Routewise?") and the outer question once the description is
replaced by that answer ("Who leads Fleet Dispatch?"). Reading this off the clause works for any
executive, however small; the executive model adds bridges for the questions syntax misses.

The first hop is written in the two shapes the memory is trained on: a wh-question when the
clause starts with its verb ("which team owns Routewise?") and the statement with a question
phrase in place when it starts with its subject ("all hardware is ordered from which vendor?").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DETERMINERS = {"the", "a", "an", "all", "every", "each", "this", "these", "that", "those", "its", "their", "our", "your",
                "his", "her", "any", "some", "new"}
_RELATIVE = re.compile(
    r"\b(?P<det>the|a|an)\s+(?P<head>(?:(?!(?:the|a|an|of|in|to|at|on|for|with|by|from)\b)[\w'-]+\s+){0,3}?"
    r"(?!(?:the|a|an|of)\b)[\w'-]+?)\s+"
    r"(?P<rel>in which|to which|from which|at which|on which|for which|with which|by which|of which|that|which|who|whom|where|whose)"
    r"\s+(?P<clause>[^?]+?)\s*(?=\?|$|,\s*(?:and|or)\b)",
    re.IGNORECASE,
)
_PREP_OF = {"in which": "in", "to which": "to", "from which": "from", "at which": "at", "on which": "on",
            "for which": "for", "with which": "with", "by which": "by", "of which": "of"}
_END_PREP = re.compile(r"\b(to|from|in|at|on|for|with|by|of|into|onto|under)$", re.IGNORECASE)


@dataclass(frozen=True)
class Bridge:
    """``phrase`` (a span of the question) describes what ``question`` asks for."""

    phrase: str
    question: str


def bridges(question: str) -> list[Bridge]:
    """The relative-clause descriptions of a question, innermost first, each as a question of its own."""
    q = " ".join(question.split())
    out: list[Bridge] = []
    for m in _RELATIVE.finditer(q):
        head, rel, clause = m.group("head"), m.group("rel").lower(), m.group("clause").strip().rstrip(".")
        phrase = q[m.start() : m.end()].strip()
        if len(clause.split()) < 2:
            continue
        first = clause.split()[0].lower()
        subject_first = first in _DETERMINERS or clause[:1].isupper() or first in ("i", "we", "you", "they", "he", "she", "it")
        if rel in _PREP_OF:
            ask = f"{clause} {_PREP_OF[rel]} which {head}?"
        elif rel == "where":
            ask = f"{clause} at which {head}?"
        elif rel == "whose":
            ask = f"Whose {clause}?"
        elif rel in ("who", "whom") and not subject_first:
            ask = f"Who {clause}?"
        elif subject_first:
            ask = f"{clause} which {head}?" if _END_PREP.search(clause) else f"{clause} — which {head}?"
            if rel in ("who", "whom"):
                ask = f"{clause} whom?" if _END_PREP.search(clause) else f"Whom {clause}?"
        else:
            ask = f"Which {head} {clause}?"
        ask = ask[0].upper() + ask[1:]
        out.append(Bridge(phrase, ask))
    return out


def substitute(question: str, phrase: str, answer: str) -> str:
    """The outer question with the description replaced by what the memory said it is."""
    value = re.sub(r"\s*\((?:in force|superseded)[^)]*\)\s*$", "", answer).strip().rstrip(".")
    value = re.sub(r"\s*\([^)]*\)\s*$", "", value).strip() or value
    return " ".join(question.split()).replace(phrase, value, 1)
