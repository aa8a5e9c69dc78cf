"""Which documents supersede which: the "value in force now" that a memory must get right.

Two current documents form a family when their titles match once years, versions and quarters are
stripped ("Travel & Expenses Policy (2024)" / "… 2025"). Within a family the newer one — by an
explicit "supersedes/replaces" sentence, else by the year or version in its title — is in force.
Near-identical copies without any year or version are related, not successive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NOISE = re.compile(
    r"\b(19|20)\d{2}\b|\bv(ersion)?\s*\d+(\.\d+)*\b|\bq[1-4]\b|\b(update[sd]?|from|new|old|current|draft|final|rev(ision)?|"
    r"january|february|march|april|may|june|july|august|september|october|november|december|to|the|of|and|copy)\b",
    re.IGNORECASE,
)
_ORDER = re.compile(r"\b((?:19|20)\d{2})\b|\bv(?:ersion)?\s*(\d+)\b", re.IGNORECASE)
_SUPERSEDES = re.compile(r"\b(supersedes|replaces|is replaced by|superseded by|withdrawn)\b", re.IGNORECASE)


@dataclass(frozen=True)
class DocInfo:
    doc_id: str
    title: str
    text: str
    ingested_at: str


@dataclass(frozen=True)
class Supersession:
    old_id: str
    new_id: str
    old_title: str
    new_title: str


def base_title(title: str) -> set[str]:
    return set(re.findall(r"[a-z]+", _NOISE.sub(" ", title.lower()))) - {"s"}


def _order_key(doc: DocInfo) -> tuple[int, int]:
    years = [int(m.group(1)) for m in _ORDER.finditer(doc.title) if m.group(1)]
    versions = [int(m.group(2)) for m in _ORDER.finditer(doc.title) if m.group(2)]
    return (max(years) if years else 0, max(versions) if versions else 0)


def _mentions(text: str, title: str) -> bool:
    words = base_title(title)
    for m in _SUPERSEDES.finditer(text):
        window = text[m.start() : m.end() + 120].lower()
        if words and sum(w in window for w in words) >= max(1, len(words) - 1):
            return True
    return False


def supersessions(docs: list[DocInfo]) -> list[Supersession]:
    out: list[Supersession] = []
    for i, a in enumerate(docs):
        for b in docs[i + 1 :]:
            ta, tb = base_title(a.title), base_title(b.title)
            if not ta or not tb or len(ta & tb) / len(ta | tb) < 0.6:
                continue
            ka, kb = _order_key(a), _order_key(b)
            a_says, b_says = _mentions(a.text, b.title), _mentions(b.text, a.title)
            if b_says and not a_says or (not a_says and not b_says and kb > ka and ka != (0, 0)):
                old, new = a, b
            elif a_says and not b_says or (not a_says and not b_says and ka > kb and kb != (0, 0)):
                old, new = b, a
            else:
                continue
            out.append(Supersession(old.doc_id, new.doc_id, old.title, new.title))
    return out
