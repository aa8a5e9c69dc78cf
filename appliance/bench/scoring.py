"""Whether a prediction answers a question: normalised containment of any gold answer or alias.

The rule, applied identically to every system:

1. Both texts are normalised: Unicode NFKC, lower case; a thousands separator between digits is
   dropped (``1,500``, or with a no-break space, → ``1500``); every character that is not a letter, a digit or a
   decimal point/colon *between two digits* becomes a space (so ``11.4 °C`` → ``11.4 c``,
   ``V-3050`` → ``v 3050``, ``08:00`` stays ``08:00``, ``gw2.halq.example`` → ``gw2 halq example``);
   runs of whitespace become one space.
2. The prediction is correct when some normalised gold answer (the ``answers`` list: the gold and
   its aliases) occurs in the normalised prediction *as whole words* (``" " + gold + " "`` inside
   ``" " + prediction + " "``): ``5`` matches "carry over 5 days" but not "15 days" or "5.5".
3. An empty prediction, or a gold answer that normalises to nothing, never matches.
4. A bare-number alias (``52`` for ``52 minutes``) does not match the number followed by another
   unit (``52 hours``): the alias lets "52" or "52 min" count, never a wrong quantity
   (:data:`_UNITS` lists the units told apart).

Containment rewards answers that name several candidates or ramble on, so the harness also records
every prediction's length in words and a stricter score, ``first_sentence``: the same rule applied
to the prediction's first sentence only (the text before the first line break, or before the first
``.``, ``!`` or ``?`` that is followed by whitespace).
No number words are converted (``five`` ≠ ``5``) and no synonyms are applied beyond the aliases
the questions file lists.

Questions of kind ``none`` ask for something the corpus does not say: their answer is correct when
it abstains (:func:`abstains`: "does not know", "do not know", "not in the notes", …) and names no
value; any other answer to them is an invented one.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

_THOUSANDS = re.compile(r"(?<=\d)[,\u00a0\u202f](?=\d{3}(?!\d))")
_KEEP_BETWEEN_DIGITS = re.compile(r"(?<=\d)[.:](?=\d)")
_NOT_WORD = re.compile(r"[^\w\u0001\u0002]+|_")


def normalise(text: str) -> str:
    """The comparison form of an answer (see the module docstring for the rule)."""
    t = unicodedata.normalize("NFKC", text or "").lower()
    t = _THOUSANDS.sub("", t)
    t = _KEEP_BETWEEN_DIGITS.sub(lambda m: "\u0001" if m.group() == "." else "\u0002", t)
    t = _NOT_WORD.sub(" ", t)
    t = t.replace("\u0001", ".").replace("\u0002", ":")
    return " ".join(t.split())


# a unit word as normalised text has it, and what it means: "52 hours" is no "52 minutes"
_UNITS = {
    **dict.fromkeys(("second", "seconds", "sec", "secs", "s"), "second"),
    **dict.fromkeys(("minute", "minutes", "min", "mins"), "minute"),
    **dict.fromkeys(("hour", "hours", "h", "hr", "hrs"), "hour"),
    **dict.fromkeys(("day", "days"), "day"), **dict.fromkeys(("week", "weeks"), "week"),
    **dict.fromkeys(("month", "months"), "month"), **dict.fromkeys(("year", "years"), "year"),
    **dict.fromkeys(("night", "nights"), "night"),
    **dict.fromkeys(("km", "kilometre", "kilometres", "kilometer", "kilometers"), "km"),
    **dict.fromkeys(("m", "metre", "metres", "meter", "meters"), "m"), **dict.fromkeys(("mile", "miles"), "mile"),
    **dict.fromkeys(("kg", "kilogram", "kilograms", "kilo", "kilos"), "kg"),
    **dict.fromkeys(("eur", "euro", "euros"), "eur"), **dict.fromkeys(("usd", "dollar", "dollars"), "usd"),
    **dict.fromkeys(("gbp", "pound", "pounds"), "gbp"), "c": "c", "f": "f",
}
_NUMBER = re.compile(r"^\d[\d.:]*$")


def _unit_after(text: str, number: str) -> str | None:
    m = re.search(rf"(?:^| ){re.escape(number)} (\S+)", text)
    return _UNITS.get(m.group(1)) if m else None


def _contains(padded: str, gold: str, unit: str | None) -> bool:
    """Whole-word containment; a bare number only where no other unit than ``unit`` follows it."""
    if f" {gold} " not in padded:
        return False
    if unit is None or not _NUMBER.match(gold):
        return True
    starts = [m.end() for m in re.finditer(rf"(?<= ){re.escape(gold)}(?= )", padded)]
    return any(_UNITS.get((padded[at:].split() or [""])[0], unit) == unit for at in starts)


def matches(prediction: str, answers: Iterable[str]) -> bool:
    """True when some gold answer or alias occurs, as whole words, in the normalised prediction, a
    bare-number alias not with another unit than the gold's (rule 4)."""
    p = normalise(prediction)
    if not p:
        return False
    padded = f" {p} "
    golds = [normalise(a) for a in answers]
    first = golds[0] if golds else ""
    unit = next((u for g in golds[1:] if _NUMBER.match(g) for u in [_unit_after(first, g)] if u), None)
    return any(g and _contains(padded, g, unit) for g in golds)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n")


def first_sentence(prediction: str) -> str:
    """The prediction up to its first sentence end or line break (leading blank lines skipped)."""
    for piece in _SENTENCE_END.split((prediction or "").strip()):
        if piece.strip():
            return piece.strip()
    return ""


def word_count(prediction: str) -> int:
    return len((prediction or "").split())


_ABSTAIN = re.compile(
    r"\b(?:does not|doesn't|do not|don't|did not|cannot|can't|could not|couldn't) (?:know|say|find|contain|mention|give|"
    r"include|have)\b|\bno (?:information|answer|record|mention)\b|\bnot (?:known|stated|given|mentioned|specified|"
    r"available|found)\b|\bunknown\b|\bi am not sure\b",
    re.IGNORECASE,
)


def abstains(prediction: str) -> bool:
    """Whether an answer says it does not know (rather than stating a value)."""
    return bool(_ABSTAIN.search(prediction or ""))


def correct(prediction: str, answers: Iterable[str], kind: str = "") -> bool:
    """The rule for one question: abstention for kind ``none``, gold containment otherwise."""
    if kind == "none":
        return abstains(prediction)
    return matches(prediction, answers)
