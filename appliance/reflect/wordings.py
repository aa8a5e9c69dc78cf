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
    earlier sentence's "at least 10 working days"); of a compound sentence, the clause that holds it
    (:func:`_clause_with`)."""
    from appliance.reflect.facts import _SENTENCE, find_spans

    parts = _SENTENCE.split(text)
    holding = [i for i, part in enumerate(parts) if value in part]
    own = [i for i in holding if any(sp.text == value for sp in find_spans(parts[i], limit=99))]
    for i in own[:1] or holding[:1]:
        part = parts[i]
        if i and (_ANAPHOR.match(part) or len(part.split()) < 6):
            return f"{parts[i - 1]} {part}"
        return _clause_with(part, value)
    return text


# a coordinated clause with a subject of its own: ", and the tote was …", "; the customer was …"
_COORDINATED = re.compile(r"(?:,?\s+(?:and|but|while|whereas)|\s*;)\s+(?=(?:[Tt]he|[Aa]n?|[Ee]ach|[Ee]very|[Nn]o)\s)")


def _clause_with(sentence: str, value: str) -> str:
    """The clause of a compound sentence that holds the value: "The highest reading was 11.4 °C and
    the tote was above 8 °C for 52 minutes." → "The tote was above 8 °C for 52 minutes." for "52
    minutes". Each clause states a fact of its own (the facts are atomic); asked in the whole sentence,
    a question carries another fact's value and reads like no question anyone asks. Only where every
    part is a clause — a new subject led by a determiner and a verb (an auxiliary) on both sides — and
    the value is in one of them; anything else stays whole ("leaves Gannet Point at 17:15 and Little
    Osier at 17:30", "can be carried over and must be used by 31 March")."""
    parts = [p.strip().rstrip(",") for p in _COORDINATED.split(sentence)]
    if len(parts) < 2 or not all(_AUX.search(p) and len(p.split()) >= 3 for p in parts):
        return sentence
    holding = [i for i, p in enumerate(parts) if value in p]
    if len(holding) != 1:
        return sentence
    clause = parts[holding[0]]
    if holding[0] < len(parts) - 1 and not clause.endswith((".", "!", "?")):
        clause += "."
    return clause[0].upper() + clause[1:]


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
    if len(found) != 1 or "," in before or _SUBORDINATE.match(before.strip()) or _CLAUSE_WORDS.search(before):
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


_NOT_VERBS = {"the", "a", "an", "all", "any", "each", "every", "this", "these", "that", "those", "our", "your", "its",
              "their", "his", "her", "it", "they", "we", "you", "he", "she", "only", "most", "some", "both", "no", "not",
              "once", "if", "when", "after", "before", "during", "since", "until", "while", "for", "from", "in", "on",
              "at", "by", "with", "without", "under", "over", "between", "per", "like", "unlike", "of", "to", "into",
              "there", "here", "new", "old", "questions", "problems", "note", "see", "also", "then", "and", "or", "but"}
_IMPERATIVE = re.compile(r"^(?:(?:Please|Always|Also|Then|First|Now)\s+)?([A-Z][a-z]+(?:-[a-z]+)?)"
                         r"((?:\s+(?:up|back|out|off|down|over|in|on))?)\s+(?=(?:the|a|an|your|all|any|every|each|it|them|"
                         r"this|these|its|their|our)\b)")
_QUALIFIED_PREP = re.compile(r"\b(from|at|on|in|into|by|until|within|after|before|since|to|for|with|via|through)"
                             r"((?:\s+(?:at least|at most|up to|no more than|no later than|more than|less than))?)\s+$", re.I)
_DETERMINER_END = re.compile(r"\b(?:the|a|an|your|its|their|our)\s+((?:[a-z][a-z-]+\s+)?)$")
_PARTICIPLE = r"(?![a-z-]{3,}(?:ed|ing)\b|(?:sent|made|done|given|taken|kept|held|paid|built|shown|known)\b)"
_FOLLOWING_NOUN = re.compile(rf"^\s+((?:{_PARTICIPLE}[a-z][a-z-]+\s+){{0,2}}{_PARTICIPLE}[a-z][a-z-]+)"
                             r"(?=\s*(?:[,.;:]|$)|\s+(?:and|or|to|in|on|at|for|with|from|by|into|via)\b)")
_CLAUSE_WORDS = re.compile(r"\b(if|when|whenever|unless|because|while|until|once|so that|where|which|who)\b")
_DETERMINER_SUBJECT = re.compile(r"^(?:The|A|An|This|Each|Every|Our|Your|Its|Their)\s")
_NAME_TOKEN = re.compile(r"^(?:[A-Z0-9][\w/'’.-]*|&|of|de|van|von)$")
_PRONOUNS = {"It", "He", "She", "They", "We", "You", "I", "This", "That", "These", "Those", "There"}


def _inside_name(before: str, after: str) -> bool:
    """The value is a part of a longer name or code: "the Q4 2024 on-call rota", "IT Password Policy v1"."""
    prev = before.split()[-1] if before.split() else ""
    nxt = after.split()[0] if after.split() else ""
    if re.fullmatch(r"[a-z-]{3,}(?:ing|ed)", prev):
        return True  # after a participle ("the total amount including VAT"): a phrase of its own
    return bool(re.match(r"[A-Z0-9]", prev) and not before.rstrip().endswith((",", ":", ";"))) or bool(re.match(r"[A-Z0-9]", nxt))


def _modifies_a_noun(f: AtomicFact, after: str, noun: re.Match[str] | None) -> bool:
    """A name followed by a noun phrase no "which …" could take ("SMS codes sent to your phone"): asking
    "what" there would ask for something else than the value."""
    first = after.split()[0] if after.split() else ""
    return (f.kind in ("name", "code", "word", "acronym") and noun is None and re.fullmatch(r"[a-z][a-z-]*", first) is not None
            and first not in _PREPOSITIONS | {"and", "or", "if", "when", "so", "as"})


def _own_sentence(f: AtomicFact, text: str | None) -> str:
    """The value's own sentence, never the one before it that _sentence_with adds for context."""
    from appliance.reflect.facts import _SENTENCE

    return next((part for part in reversed(_SENTENCE.split(_sentence_with(text or f.text, f.value))) if f.value in part), "")


def _asked_first(f: AtomicFact, obj: str, after: str) -> tuple[str, str, str] | None:
    """The question phrase that replaces the value, moved to the front of a clause: (phrase, the words
    between the verb and the value left in place, the words after it), or None where the clause does
    not allow one. "the Keyhaven authenticator app" → "which authenticator app"; "in cold room CR-3" →
    "in which cold room"; "for at least 4 hours" → "for at least how many hours"."""
    if _inside_name(obj, after):
        return None
    if _CLAUSE_WORDS.search(obj) or re.search(r"[,;(]", obj) or re.search(r"\b(?:and|or)\s*$", obj) \
            or re.match(r"^\s+(?:and|or)\b", after):
        return None  # inside a condition, a relative clause, an aside or a coordination ("between 2 °C and 8 °C")
    after = re.split(r",|;|\s(?:or|and)\s|\.\s|\.$", after, maxsplit=1)[0]  # another step or clause: left out
    noun = _FOLLOWING_NOUN.match(after) if f.kind in ("name", "code", "word", "acronym") else None
    if noun and set(noun.group(1).split()) & (_PREPOSITIONS | _NOT_VERBS | {"who", "whose", "which", "that"}):
        noun = None
    if _modifies_a_noun(f, after, noun):
        return None
    if noun:
        q, after = f"which {noun.group(1)}", after[noun.end():]
    else:
        q, obj = _question_phrase(f, obj, after)
    if q.startswith("which "):  # the determiner (and an adjective) before it goes with it: "which mandatory course"
        det = _DETERMINER_END.search(obj)
        if det:
            q, obj = f"which {det.group(1)}{q[6:]}", obj[: det.start()]
    elif q == "what":
        obj = re.sub(r"\b(?:the|a|an)\s+$", "", obj)
    prep = _QUALIFIED_PREP.search(obj)
    if prep:
        q, obj = f"{prep.group(1).lower()}{prep.group(2).lower()} {q}", obj[: prep.start()]
    # "14 days of your start date", "27 days of annual leave per calendar year": the "of" phrase is
    # a part of what is asked and goes to the front with it
    of = re.match(r"^\s+(of\s+(?:[a-z-]+\s+){0,3}?[a-z-]+)(?=\s*$|\s+(?:per|in|on|at|for|from|to|by|with|within|plus)\b)", after)
    if of:
        q, after = f"{q} {of.group(1)}", after[of.end():]
    if re.search(r"\b(?:the|a|an|your|of)\s*$", obj):
        return None  # a dangling determiner, or the value completes a noun ("every employee of …")
    return q, obj, after


def _question(q: str, inverted: str, obj: str, after: str) -> str | None:
    body = " ".join(f"{q[0].upper() + q[1:]} {inverted} {obj} {after}".split())
    body = re.sub(r"\s+([,.;:])", r"\1", body).rstrip(" .,;:")
    return body + "?" if len(body.split()) >= 4 else None


def imperative(f: AtomicFact, text: str | None = None) -> str | None:
    """An instruction asked as a question, question phrase first: "Pre-chill the empty tote in cold
    room CR-3 for at least 4 hours." → "For at least how many hours should you pre-chill the empty tote
    in cold room CR-3?"; "Install the Gatepost VPN client, version 3.2 or newer." → "Which client
    should you install?". Procedures (SOPs, checklists, how-tos) are written as instructions; the
    cloze keeps their word order ("Pre-chill … for at least how many hours?"), which is not how anyone
    asks. Only for a sentence that opens with a verb and its object (``_IMPERATIVE``) and a value in
    its main clause; the rest of the sentence after a comma, "or", "and" or ";" (another step) is left
    out.
    """
    text = _own_sentence(f, text)
    m = _IMPERATIVE.match(text)
    if not m or m.group(1).lower() in _NOT_VERBS or text.startswith(("Do not", "Don't", "Never")):
        return None
    at = text.find(f.value, m.end())
    if at < 0 or text[at + len(f.value):].startswith(("'s ", "’s ")):
        return None
    asked = _asked_first(f, text[m.end():at], text[at + len(f.value):])
    if asked is None:
        return None
    q, obj, after = asked
    return _question(q, f"should you {(m.group(1).lower() + m.group(2)).strip()}", obj, after)


def _base_form(verb: str) -> str:
    """keeps → keep, supplies → supply, reaches → reach, goes → go, has → have (a present-tense verb's base)."""
    if verb in ("has", "does"):
        return {"has": "have", "does": "do"}[verb]
    if verb.endswith("ies") and len(verb) > 4:
        return verb[:-3] + "y"
    if re.search(r"(?:ss|sh|ch|x|z|o)es$", verb):
        return verb[:-2]
    return verb[:-1]


def do_support(f: AtomicFact, text: str | None = None) -> str | None:
    """A statement without an auxiliary asked the way questions are, with "does": "The tag reports to
    Frostline." → "To what does the tag report?"; "Multi-factor authentication uses the Keyhaven
    authenticator app." → "Which authenticator app does multi-factor authentication use?".

    Only for a present-tense verb (``-s``) after a subject that is either led by a determiner or a
    name (capitalised words, codes), or a short phrase of a capitalised word and a singular noun whose
    verb is followed by an article, a preposition, a number or a name (so that "Empty totes come back"
    does not read "totes" as the verb), and a value after the verb in the same clause. A plural
    subject takes "do" (:func:`_plural_verb_at`): "Full-time employees receive 27 days of annual
    leave" → "How many days of annual leave do full-time employees receive?"."""
    text = _own_sentence(f, text)
    words = text.split()
    verb_at = None
    for i, w in enumerate(words[1:7], start=1):
        if not re.fullmatch(r"[a-z]{3,}s", w) or w.endswith(("ss", "us", "is")) or w in ("was", "has been"):
            continue
        subject, nxt = words[:i], words[i + 1] if i + 1 < len(words) else ""
        if _DETERMINER_SUBJECT.match(text) and i >= 2:
            verb_at = i
        elif (all(_NAME_TOKEN.match(t) for t in subject) and subject[0][:1].isupper()
              and (len(subject) >= 2 or any(c.isdigit() for c in subject[0])) and subject[0] not in _PRONOUNS):
            verb_at = i  # a name of two words or more, or a code: "FY2025/26 runs", not "Empty totes come"
        elif (2 <= len(subject) <= 3 and subject[0][:1].isupper() and not subject[-1].endswith("s")
              and subject[0] not in _PRONOUNS and not set(subject[1:]) & _NOT_VERBS  # "They return the keys"
              and (nxt in _OBJECT_START or nxt[:1].isupper() or nxt[:1].isdigit())):
            verb_at = i
        break  # only the first -s word can be the verb
    base = None
    if verb_at is None:
        verb_at = _plural_verb_at(words)
        base = words[verb_at] if verb_at is not None else None
    if verb_at is None or "," in " ".join(words[:verb_at]) or _SUBORDINATE.match(text):
        return None
    head = " ".join(words[: verb_at + 1])
    at = text.find(f.value, len(head))
    if at < 0 or text[at + len(f.value):].startswith(("'s ", "’s ")):
        return None
    asked = _asked_first(f, text[len(head):at], text[at + len(f.value):])
    if asked is None:
        return None
    q, obj, after = asked
    subject = words[:verb_at]
    if re.fullmatch(r"[A-Z][a-z]*(?:-[a-z]+)?", subject[0]) and (len(subject) == 1 or not subject[1][:1].isupper()):
        subject = [subject[0].lower(), *subject[1:]]  # "The tag" → "the tag"; "Fleet Dispatch" stays
    if base is not None:
        return _question(q, f"do {' '.join(subject)} {base}", obj, after)
    return _question(q, f"does {' '.join(subject)} {_base_form(words[verb_at])}", obj, after)


# what may follow a verb before its object: an article or a preposition ("reports to …"); a plural
# subject's verb also a particle or another determiner ("come back via …", "receive all …")
_OBJECT_START = {"the", "a", "an", "to", "from", "with", "for", "via", "into", "on", "in", "at"}
_AFTER_VERB = _OBJECT_START | {"by", "up", "back", "out", "off", "over", "down", "all", "every", "each", "their", "your", "our"}


def _plural_verb_at(words: list[str]) -> int | None:
    """Where the verb of a plural subject is: "Full-time employees receive 27 days …" → 2 (asked "do
    full-time employees receive"). A subject of one to four plain words (no code, no digit) that opens
    the sentence and ends in a plural noun (``-s``), then a lowercase word that is no auxiliary, no ``-s``, ``-ed``
    or ``-ing`` form and no function word, followed by an article, a preposition, a particle, a number
    or a name — the shape of a verb and its object, so that "Totes older than …" is not read as one."""
    for i in range(1, min(5, len(words) - 1)):
        noun, verb, nxt = words[i - 1], words[i], words[i + 1]
        if any(not re.fullmatch(r"[A-Za-z][a-z-]*", w) for w in words[:i]) or words[0] in _PRONOUNS:
            return None  # a code or a pronoun in the subject: the singular rules' business
        if not (re.fullmatch(r"[a-z-]{3,}s", noun.lower()) and not noun.endswith(("ss", "us", "is", "'s"))):
            continue
        if (not re.fullmatch(r"[a-z]{2,}", verb) or verb.endswith(("s", "ed", "ing", "ly")) or _AUX.fullmatch(verb)
                or verb in _NOT_VERBS or verb in _PREPOSITIONS or verb in ("do", "did", "than", "who", "which", "that")):
            return None
        if nxt in _AFTER_VERB or nxt in _PREPOSITIONS or nxt[:1].isupper() or nxt[:1].isdigit():
            return i
        return None
    return None


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
    for make in (fronted, imperative, do_support):  # at most one: they read the sentence in exclusive ways
        front = make(f)
        if front is not None:
            out.append((in_document(title, front) if qualify else front, make.__name__.replace("_", "-")))
            break
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
