"""Checks every generated pair must pass; each rejection has a named reason for the stats."""

from __future__ import annotations

import re
import unicodedata

from appliance.reflect.facts import content_words

_QUESTION_START = re.compile(
    r"^(what|who|whom|whose|when|where|which|why|how|is|are|was|were|do|does|did|can|could|should|must|may|will|"
    r"would|has|have|had|in|on|at|for|by|to|from|under|according|if|name|list|after|before|during|with)\b",
    re.IGNORECASE,
)
_BAD = re.compile(r"\b(answer to this question|the given answer|the fact|this fact|quiz|the text)\b", re.IGNORECASE)


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return re.sub(r"[^a-z0-9à-ÿ]+", " ", text).strip()


def clean_question(raw: str) -> str:
    """First line of the model's reply, without quotes or a 'Question:' label."""
    line = next((ln for ln in raw.strip().splitlines() if ln.strip()), "").strip()
    line = re.sub(r"^(question|q|new question|rewritten question)\s*[:.-]\s*", "", line, flags=re.IGNORECASE)
    line = line.strip().strip('"“”\'`').strip()
    if "?" in line:
        line = line[: line.index("?") + 1]
    return line


def question_problem(question: str, answer_span: str, source: str, original: str | None = None,
                     template: bool = False) -> str | None:
    """Why a question is unusable, or None if it is fine. ``template``: written by a template, whose
    shape is known ("Kestrel Yard: what is the role?"), so only its content is checked."""
    words = question.split()
    if not question.endswith("?"):
        return "not a question"
    if not 3 <= len(words) <= (60 if template else 30):
        return "question length"
    if not template and not _QUESTION_START.match(question):
        return "not a question"
    if _BAD.search(question):
        return "meta question"
    if answer_span and normalise(answer_span) and f" {normalise(answer_span)} " in f" {normalise(question)} ":
        return "answer in question"
    if not content_words(question) & content_words(source):
        return "not grounded in source"
    if original is not None:
        if normalise(question) == normalise(original):
            return "paraphrase identical"
        keep = {w for w in re.findall(r"\b[A-Z][\w-]*[A-Z0-9][\w-]*\b|\b[A-Z][a-z]+\b", original[1:])}
        if keep and not all(k.lower() in question.lower() for k in keep):
            return "paraphrase lost a name"
        mine, theirs = content_words(question), content_words(original)
        if theirs and len(mine & theirs) / len(theirs) < 0.6:
            return "paraphrase drifted"
        if len(mine - theirs - content_words(source)) > 2:
            return "paraphrase adds content"
    return None


def answer_supported(answer: str, source: str) -> bool:
    """Every number of the answer, and nearly all its content words, occur in the source text."""
    src = normalise(source)
    src_words = set(src.split())
    numbers = re.findall(r"\d+(?:[.,]\d+)?", answer)
    if any(n.replace(",", " ").replace(".", " ") not in src.replace(",", " ").replace(".", " ") for n in numbers):
        return False
    words = [w for w in normalise(answer).split() if len(w) > 2]
    if not words:
        return True
    return sum(w in src_words for w in words) / len(words) >= 0.9


def dedup_key(question: str, ordered: bool = False) -> str:
    """Two questions that are one: the same words in any order (``ordered=False``: a probe must not be
    a training question reordered), or the same words in the same order (``ordered=True``: training
    wordings, where a reordering is the point — the cloze "The tote must be pre-chilled for how many
    hours?" and its fronted form "For how many hours must the tote be pre-chilled?" are two wordings)."""
    words = normalise(question).split()
    return " ".join(words) if ordered else " ".join(sorted(set(words)))


_ASKS_AMOUNT = re.compile(r"\bhow (many|much|long|often|far|old)\b|\bwhat (is the )?(number|amount|rate|limit|cap|price|cost)\b", re.I)
_ASKS_PERSON_PLACE = re.compile(r"^(who|whom|whose|where)\b|\bwhich (team|person|site|system|vendor|company)\b", re.I)
_ASKS_TIME = re.compile(r"^when\b|\b(what|which) (date|day|time|year|month)\b", re.I)


def answer_type_problem(question: str, span_kind: str) -> str | None:
    """A question must ask for the kind of thing its answer is (a number is no team)."""
    if span_kind in ("number", "quantity", "date", "time") and _ASKS_PERSON_PLACE.search(question):
        return "answer type mismatch"
    if span_kind in ("name", "key", "cell", "code", "acronym", "word", "email") and (_ASKS_AMOUNT.search(question) or _ASKS_TIME.search(question)):
        return "answer type mismatch"
    if span_kind in ("date", "time") and _ASKS_AMOUNT.search(question) and "long" not in question.lower():
        return "answer type mismatch"
    return None
