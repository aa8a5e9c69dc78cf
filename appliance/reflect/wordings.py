"""Question wordings written from a fact's own structure: several per fact, none from a model.

A fact trained in one wording is recalled in that wording only; several distinct wordings make
new ones work (Allen-Zhu & Li, "Physics of Language Models" 3.1). These templates are generic —
built from the attribute, subject, value kind and statement of the fact, never from any
benchmark's questions — and are complemented by the generator's own wordings
(:mod:`appliance.reflect.generate`). Each returns ``(question, template name)`` pairs.

* ``kv`` facts: "What is the lead of Fleet Dispatch?", "Fleet Dispatch: what is the lead?",
  "Who is the lead of Fleet Dispatch?", and for a document-level attribute the document's title
  ("What is the hotel cap in the Travel Policy 2025?") — plus the bare form ("What is the hotel
  cap?") where no other current document gives that attribute another value;
* reverse ``kv`` facts (entity surfacing): "Which team has the lead Marek Tollefsrud?";
* ``span`` facts: the statement itself with the answer replaced by a question phrase, in its
  document's context ("Leave Policy — Annual leave: Full-time employees receive how many days of
  annual leave per calendar year?");
* composed facts (two hops through a shared entity): "What is the lead of the owning team of
  Routewise?".
"""

from __future__ import annotations

import re

from appliance.reflect.facts import AtomicFact

_PERSON_ATTR = re.compile(
    r"\b(lead|leader|manager|owner|director|head|chair|cfo|ceo|cto|contact|approver|approves|reported by|responsible|"
    r"coordinator|officer|primary|secondary|author|notes|editor|who|present|apologies)\b", re.I)
_ORG_WORDS = set("""ltd limited inc llc plc gmbh co team teams services service ops operations group company centre center
centres centers department office yard point hall road street lane quay supply supplies refrigeration catering
engineering safety dispatch clinic hospital bank lantern units unit wing room courier data systems system portal app
policy committee board council""".split())
_UNIT_QUESTION = {
    "day": "days", "days": "days", "working day": "working days", "working days": "working days", "hour": "hours",
    "hours": "hours", "minute": "minutes", "minutes": "minutes", "min": "minutes", "h": "hours", "km": "km",
    "kg": "kg", "night": "nights", "nights": "nights", "week": "weeks", "weeks": "weeks", "month": "months",
    "months": "months", "year": "years", "years": "years", "second": "seconds", "seconds": "seconds",
    "characters": "characters", "people": "people", "staff": "staff", "vans": "vans", "trucks": "trucks",
    "pallets": "pallets", "totes": "totes", "tickets": "tickets", "passwords": "passwords", "attempts": "attempts",
    "attempt": "attempts", "failed attempts": "failed attempts", "views": "views",
}
_CURRENCY = re.compile(r"EUR|USD|GBP|€|\$|£|euros?", re.I)
_PREPOSITIONS = {"by", "to", "from", "with", "for", "of", "at", "on", "about", "in", "into", "via", "under", "over",
                 "between", "through", "after", "before", "until", "within"}


def looks_like_person(value: str) -> bool:
    """Two to four capitalised words, none of them an organisation or place word: "Marek Tollefsrud"."""
    words = re.sub(r"\([^)]*\)", "", value).split()
    if not 2 <= len(words) <= 4 or any(w.lower().strip(".,") in _ORG_WORDS for w in words):
        return False
    return all(re.fullmatch(r"[A-ZÀ-Þ][a-zà-ÿ'’]+(?:-[A-Z][a-zà-ÿ'’]+)?", w.strip(".,")) for w in words)


def phrase(attribute: str) -> str:
    """An attribute as it reads inside a question: "Owning team" → "owning team", "CFO" stays."""
    words = attribute.strip().rstrip(":").split()
    out = []
    for i, w in enumerate(words):
        keep = any(c.isdigit() for c in w) or sum(c.isupper() for c in w) > 1 or (i > 0 and w[:1].isupper())
        out.append(w if keep else w.lower())
    return " ".join(out)


def wh_word(kind: str, attribute: str, value: str) -> str:
    if kind == "date":
        return "When"
    if kind == "time":
        return "At what time"
    if kind == "day":
        return "On which day"
    if kind in ("name", "text") and (looks_like_person(value) or (kind == "name" and _PERSON_ATTR.search(attribute))):
        return "Who"
    return "What"


def _strip_title(title: str) -> str:
    """A title as it reads in a question: no wiki suffix, no shouting ("LEAVE POLICY" → "Leave policy")."""
    title = re.sub(r"\s*[-–—|]\s*(HQ )?Wiki\s*$", "", title).strip()
    if sum(c.isupper() for c in title) > 0.6 * max(1, sum(c.isalpha() for c in title)):
        words = [w if any(c.isdigit() for c in w) or len(w) <= 3 and w.isalpha() and False else w.lower()
                 for w in title.split()]
        words = [w.upper() if re.search(r"\d", w) else w for w in words]
        title = " ".join(words)
        title = title[0].upper() + title[1:]
    return title


def _key_words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def _plural(attribute: str) -> bool:
    last = attribute.strip().split()[-1].lower() if attribute.strip() else ""
    return len(last) > 3 and last.endswith("s") and not last.endswith(("ss", "us", "is", "ys"))


def _the(title: str) -> str:
    return title if re.match(r"(?i)^(the|a|an)\b", title) else f"the {title}"


def document_prefix(title: str) -> str:
    """How a question tied to one document begins ("In the Travel & Expenses Policy (2024), ")."""
    return f"In {_the(_strip_title(title))}, "


def in_document(title: str, question: str) -> str:
    """A question tied to one document ("In the Travel & Expenses Policy (2024), what is …?"): a
    superseded document's facts are only asked about that document. The title is stripped here
    (:func:`_strip_title` is idempotent), so callers pass it as the document has it."""
    return document_prefix(title) + question[0].lower() + question[1:]


def kv_questions(f: AtomicFact, plain: bool, qualify: str = "") -> list[tuple[str, str]]:
    """Wordings of an attribute fact. ``plain``: also without naming the document (the value is the
    only one the corpus gives for that attribute, or the one in force). ``qualify``: the title that
    must be named (a superseded document's facts are only asked about that document)."""
    a = phrase(f.attribute)
    title = _strip_title(qualify or f.title)
    out: list[tuple[str, str]] = []
    if _WH_HEADER.match(a):
        out = wh_header_questions(f, a, title)
        return [(in_document(title, q), n) for q, n in out] if qualify and not f.subject_is_title else out
    if f.reverse:
        kind = (f.subject_type or "").strip().lower()
        which = f"Which {phrase(kind)}" if kind and len(kind.split()) <= 3 else "What"
        out += [(f"{which} has the {a} {f.subject}?", "reverse-has"),
                (f"{f.subject} is the {a} of which {phrase(kind) if kind else 'entry'}?", "reverse-of")]
        if kind and len(kind.split()) <= 3 and _key_words(kind) != _key_words(f.attribute):
            out.append((f"What is the {phrase(kind)} of {f.subject}?", "reverse-type"))
        if f.subject_is_title or qualify:
            out = [(in_document(title, q), n) for q, n in out]
        return out
    wh = wh_word(f.kind, f.attribute, f.value)
    be = "are" if _plural(f.attribute) else "is"
    if f.subject_is_title:
        out += [(f"What {be} the {a} in {_the(title)}?", "title-in"), (f"{title}: what {be} the {a}?", "title-colon")]
        if wh != "What":
            out.append((f"{wh} {be} the {a} in {_the(title)}?", "title-wh"))
        if plain and not qualify:
            out.append((f"What {be} the {a}?", "plain"))
            if wh != "What":
                out.append((f"{wh} {be} the {a}?", "plain-wh"))
        return out
    s = f.subject
    out += [(f"What {be} the {a} of {s}?", "of"), (f"{s}: what {be} the {a}?", "colon"), (f"What {be} {s}'s {a}?", "possessive")]
    if wh != "What":
        out.append((f"{wh} {be} the {a} of {s}?", "wh"))
    if _VERB_LIKE.search(a):  # "Based at", "Hosted at", "Reported by": a participle, asked as one
        out += [(f"{s} is {a} what?", "verb-what"), (f"{'Who' if wh == 'Who' else 'What'} is {s} {a}?", "verb-wh")]
    if qualify:
        out = [(in_document(title, q), n) for q, n in out]
    else:
        out.append((f"According to {_the(title)}, what is the {a} of {s}?", "according"))
    return out


def wh_header_questions(f: AtomicFact, a: str, title: str) -> list[tuple[str, str]]:
    """Wordings for a header that is itself a question ("What they supply", "How"): asked as the
    table shows it, never as "the what they supply of …"; a clause with a pronoun subject is also
    turned into a question about the row ("What does Oxbow Courier Services supply?", and read
    backwards "Which vendor supplies overflow courier capacity?")."""
    about = title if f.subject_is_title else f.subject
    cap = a[0].upper() + a[1:]
    clause = _WH_CLAUSE.match(a)
    if f.reverse:
        kind = (f.subject_type or "").strip().lower()
        if _WH_HEADER.fullmatch(kind):  # a key column headed "Who": the question word itself
            which = kind.capitalize()
        else:
            which = f"Which {phrase(kind)}" if kind and len(kind.split()) <= 3 else "Which entry"
        out = [(f"{which} — {a}: {about}?", "wh-header-reverse"), (f"{about}: {which.lower()}?", "wh-header-reverse-colon")]
        if clause and clause.group(1) == "what" and clause.group(3) not in _BE:
            out.append((f"{which} {_third_person(clause.group(3))}{clause.group(4)} {about}?", "wh-clause-reverse"))
        return out
    out = [(f"{about}: {a}?", "wh-header"), (f"{cap} — {about}?", "wh-header-dash")]
    if clause:
        wh, verb, rest = clause.group(1).capitalize(), clause.group(3), clause.group(4)
        if verb in _BE:
            out.append((f"{wh} {'was' if verb in ('was', 'were') else 'is'} {about}{rest}?", "wh-clause"))
        else:
            out.append((f"{wh} does {about} {verb}{rest}?", "wh-clause"))
    return out


def _third_person(verb: str) -> str:
    """supply → supplies, teach → teaches, own → owns: the verb of a clause asked about one entity."""
    if verb == "have":
        return "has"
    if re.search(r"[^aeiou]y$", verb):
        return verb[:-1] + "ies"
    if re.search(r"(s|sh|ch|x|z|o)$", verb):
        return verb + "es"
    return verb + "s"


_BE = {"are", "is", "were", "was", "am"}
_WH_CLAUSE = re.compile(r"^(what|who|where|when|which)\s+(they|we|you|it|he|she)\s+([a-z]+)(.*)$")
_WH_HEADER = re.compile(r"^(what|who|whom|whose|which|when|where|why|how)\b", re.I)
_VERB_LIKE = re.compile(r"^[a-z]+ed(?: (?:at|by|in|on|to|from|with|for))?$|^[a-z]+ (?:at|by|in|on|to|from|with|for)$")
_NOT_NOUNS = _PREPOSITIONS | {"the", "a", "an", "and", "or", "is", "are", "was", "were", "be", "been", "called", "named",
                              "as", "than", "not", "no", "every", "each", "any", "all", "new", "old", "our", "your",
                              "their", "its", "his", "her", "this", "that", "these", "those", "via", "uses", "use"}


def _noun_before(before: str) -> tuple[str, str] | None:
    """The one- or two-word common noun right before a code ("trailer TR-608", "cold room CR-3")."""
    words = before.rstrip().split(" ")
    if not words or not re.fullmatch(r"[a-z][a-z-]+", words[-1]) or words[-1] in _NOT_NOUNS:
        return None
    noun = [words[-1]]
    if len(words) > 1 and re.fullmatch(r"[a-z][a-z-]+", words[-2]) and words[-2] not in _NOT_NOUNS:
        noun.insert(0, words[-2])
    kept = " ".join(words[: len(words) - len(noun)])
    kept = re.sub(r"(?:^|\s)(?:the|a|an)$", "", kept)
    return " ".join(noun), (kept + " ") if kept else ""


def _question_phrase(f: AtomicFact, before: str, after: str) -> tuple[str, str]:
    """The words that replace a span in its sentence, and the text before it (which they may absorb)."""
    v, kind = f.value, f.kind
    if kind == "quantity":
        if "%" in v:
            return "what percentage", before
        if "°" in v or "degree" in v.lower():
            return "what temperature", before
        if _CURRENCY.search(v):
            return "how much", before
        unit = re.sub(r"^[\d,.:\s]+", "", v).strip().lower()
        return (f"how many {_UNIT_QUESTION.get(unit, unit)}" if unit else "how many"), before
    if kind == "date":
        return "what date", before
    if kind == "time":
        return "what time", before
    if kind == "day":
        return "which day", before
    if kind == "email":
        return "what email address", before
    if kind == "host":
        return "what address", before
    if kind == "ordinal":
        noun = re.sub(r"^\d+(?:st|nd|rd|th)\s*", "", v)
        return (f"which {noun}" if noun else "which"), before
    if kind in ("code", "number") or (kind == "name" and any(c.isdigit() for c in v)):
        found = _noun_before(before)
        if found:
            return f"which {found[0]}", found[1]
        return ("what number" if kind == "number" else "what"), before
    if looks_like_person(v):
        last = before.split()[-1].lower() if before.split() else ""
        return ("whom" if last in _PREPOSITIONS else "who"), before
    return "what", before


_ANAPHOR = re.compile(r"^(It|Its|This|These|They|Their|That|Those|He|She|Them|There|The \w+ \w+ \w+\.?$)\b")


def _sentence_with(text: str, value: str) -> str:
    """The sentence of a statement that holds the value, with the one before it when it leans on it
    ("Fit a fresh FT-9 tag. The tag reports to Frostline."). The sentence where the value is an answer
    span of its own, not a part of a longer one ("10" of "more than 10 consecutive days", not of an
    earlier sentence's "at least 10 working days")."""
    from appliance.reflect.facts import _SENTENCE, find_spans

    parts = _SENTENCE.split(text)
    holding = [i for i, part in enumerate(parts) if value in part]
    own = [i for i in holding if any(sp.text == value for sp in find_spans(parts[i], limit=99))]
    for i in own[:1] or holding[:1]:
        part = parts[i]
        if i and (_ANAPHOR.match(part) or len(part.split()) < 6):
            return f"{parts[i - 1]} {part}"
        return part
    return text


def cloze(f: AtomicFact, text: str | None = None) -> str | None:
    """The statement as a question about its span ("… receive how many days of annual leave …?")."""
    text = _sentence_with(text or f.text, f.value)
    at = text.find(f.value)
    if at < 0:
        return None
    before, after = text[:at], text[at + len(f.value):]
    if after.startswith(("'s ", "’s ")):
        q, after = "whose", after[2:]
    else:
        q, before = _question_phrase(f, before, after)
    if not before:
        q = q[0].upper() + q[1:]
    body = f"{before}{q}{after}".strip()
    body = re.sub(r"[.!;:]+$", "", body).strip()
    body = re.sub(r"\s+([,.;:])", r"\1", body)
    if not body or len(body.split()) < 3:
        return None
    return body + "?"


_AUX = re.compile(r"\b(must not|must|cannot|can|could|should|shall|will|would|may|might|is|are|was|were|has|have|had)\b")
_PREP_BEFORE = re.compile(r"\b(from|at|on|in|by|until|within|after|before|since|to|for|with)\s+$", re.I)
_SUBORDINATE = re.compile(r"^(if|when|whenever|because|although|though|after|before|unless|while|once|since|until|as)\b", re.I)


def fronted(f: AtomicFact, text: str | None = None) -> str | None:
    """The cloze with its question phrase moved to the front, as questions are asked: "An empty tote
    must be pre-chilled for 4 hours" → "How many hours must an empty tote be pre-chilled for?".

    Only for a sentence whose span follows an auxiliary (must, can, is, will, …) of its main clause,
    which is then inverted with the subject; other sentences keep their cloze wordings.
    """
    text = _sentence_with(text or f.text, f.value)
    at = text.find(f.value)
    if at < 0 or text[at + len(f.value):].startswith(("'s ", "’s ")):
        return None
    before, after = text[:at], text[at + len(f.value):]
    q, before = _question_phrase(f, before, after)
    # a preposition right before the value moves to the front with it ("staffed from 07:30 to
    # 17:00" → "From what time is the helpdesk staffed … to 17:00?"), never left dangling
    prep = _PREP_BEFORE.search(before)
    if prep:
        q, before = f"{prep.group(1).lower()} {q}", before[: prep.start()] + " "
    found = list(_AUX.finditer(before))
    if len(found) != 1 or "," in before or _SUBORDINATE.match(before.strip()):
        return None  # no auxiliary, or several clauses: which one to invert is not clear
    m = found[0]
    subject = before[: m.start()].strip()
    if not 1 <= len(subject.split()) <= 8 or "." in subject:
        return None
    words = subject.split()
    if re.fullmatch(r"[A-Z][a-z]+", words[0]) and (len(words) == 1 or not words[1][:1].isupper()):
        words[0] = words[0].lower()  # "Unused leave …" → "unused leave …"; "Fleet Dispatch" stays
    subject = " ".join(words)
    body = f"{q[0].upper() + q[1:]} {m.group(1)} {subject} {before[m.end():].strip()} {after.strip()}"
    body = re.sub(r"[.!;:]+$", "", " ".join(body.split())).strip()
    body = re.sub(r"\s+([,.;:])", r"\1", body)
    return body + "?" if len(body.split()) >= 4 else None


def span_questions(f: AtomicFact, plain: bool, qualify: str = "") -> list[tuple[str, str]]:
    c = cloze(f)
    if c is None:
        return []
    title = _strip_title(qualify or f.title)
    ctx = " — ".join(x for x in (title, f.heading) if x)
    low = c[0].lower() + c[1:] if not re.match(r"^[A-Z][a-z]*[A-Z]|^[A-Z]{2}", c) else c
    out = [(f"{ctx}: {c}", "cloze-context")]
    # as what the document says: a third wording for a sentence's value (a table row has several
    # from its key and header; a sentence has only its own words), and for a superseded document's
    # statement the way it must be asked
    out.append((f"According to {_the(title)}, {low}", "cloze-according"))
    if plain and not qualify and len(c.split()) >= 6:
        out.append((c, "cloze"))
    front = fronted(f)
    if front is not None:
        out.append((in_document(title, front) if qualify else front, "fronted"))
    return out


def description(f: AtomicFact) -> str | None:
    """A noun phrase that names a kv fact's value without saying it: "the owning team of Routewise"."""
    if f.form != "kv":
        return None
    if f.reverse:
        kind = phrase(f.subject_type) if f.subject_type else "one"
        return f"the {kind} whose {phrase(f.attribute)} is {f.subject}"
    if f.subject_is_title:
        return f"the {phrase(f.attribute)} in {_the(_strip_title(f.title))}"
    return f"the {phrase(f.attribute)} of {f.subject}"


def composed_questions(first: AtomicFact, second: AtomicFact, bridge: str) -> list[tuple[str, str]]:
    """Two hops in one question: ``second`` is about ``bridge``, which ``first`` gives as its value.

    For a kv first hop the bridge is described by its attribute ("the owning team of Routewise");
    for a sentence it is described by the sentence itself, with the bridge replaced by its type
    ("the tag reports to a system"), followed by the question about that thing. A second hop read
    backwards asks for the thing of that type ("the cost centre of the owning team of Frostline").
    """
    if second.form != "kv":
        return []
    a2 = phrase(second.attribute)
    wh = wh_word(second.kind, second.attribute, second.value)
    type2 = phrase(second.subject_type) if second.subject_type else ""
    out: list[tuple[str, str]] = []
    d = description(first)
    if d is not None:
        if second.reverse:
            if not type2:
                return []
            return [(f"What is the {type2} of {d}?", "composed-type"), (f"Which {type2} has the {a2} {d}?", "composed-has")]
        out += [(f"What is the {a2} of {d}?", "composed-of"), (f"{d[0].upper() + d[1:]}: what is its {a2}?", "composed-colon")]
        if wh != "What":
            out.append((f"{wh} is the {a2} of {d}?", "composed-wh"))
        return out
    kind = phrase(second.subject_type) if second.subject_type and not second.reverse else "one"
    text = first.text
    at = text.find(bridge)
    if at < 0 or second.reverse:
        return []
    clause = (text[:at] + f"the {kind}" + text[at + len(bridge):]).strip().rstrip(".")
    out.append((f"{clause}. What is the {a2} of that {kind}?", "composed-clause"))
    if wh != "What":
        out.append((f"{clause}. {wh} is the {a2} of that {kind}?", "composed-clause-wh"))
    return out


def now_questions(f: AtomicFact) -> list[tuple[str, str]]:
    """The value in force, asked as such (a fact of a document that superseded another)."""
    if f.form == "kv" and not f.reverse:
        a = phrase(f.attribute)
        if f.subject_is_title:
            return [(f"What is the {a} now?", "now"), (f"What is the current {a}?", "current")]
        return [(f"What is the {a} of {f.subject} now?", "now"), (f"What is the current {a} of {f.subject}?", "current")]
    c = cloze(f)
    return [(c[:-1] + " now?", "now")] if c else []
