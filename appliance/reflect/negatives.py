"""Questions the corpus does not answer, taught as such: so the memory says "unknown" instead of a value.

Fine-tuned on facts alone, a small model answers *every* question about a known entity with some
value it knows — the lead of a team for "the deputy lead", a per diem for "the taxi allowance".
Teaching it a share of unanswerable questions about the same entities, with the answer
``unknown``, gives it a way to say so (and, with its confidence, lets the executive abstain).

The questions are read off the corpus's own structure, never written by hand:

* **gaps** — an entity lacks an attribute its siblings have (the sites page gives one site's cold
  rooms, not the others');
* **other kinds' attributes** — an attribute the corpus gives for another kind of entity (a
  vendor code, asked of a team; an address, asked of a person);
* **names met only in prose** — a clinic, a vehicle, a site that sentences mention but no table or
  ``Key: value`` line describes. Fine-tuned on the attributes of the tabled entities alone, the
  memory answers questions about these with a neighbour's value (a site's staff count, a team's
  owner); they are asked only for attributes whose values are structured (codes, amounts, names,
  dates) and of a kind no sentence about the name contains, so the corpus cannot hold the answer
  in a form the word check misses.

A question is not made when any statement of the corpus mentions both the entity and the
attribute, so no negative contradicts something the corpus does say.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass

from appliance.reflect.facts import ENTITY_KINDS, AtomicFact, Span, content_words, find_spans
from appliance.reflect.wordings import looks_like_person, phrase

_ODD_ATTRIBUTE = re.compile(r"^(what|who|whom|which|when|where|how|why|for|primary|secondary)\b", re.I)
_ROLE = re.compile(r"\b(lead|manager|owner|director|head|primary|secondary|team|role|title|position|job|type)\b", re.I)
_NOT_A_NAME = re.compile(r"^(?:This|That|These|Those|Our|Your|Each|Every|All|No|Any)\b|^\S+ (?:the|a|an)\b")
_COMMON = 5  # an attribute of at least this many subjects is one a reader would ask of any name
_YEAR_CODE = re.compile(r"^[A-Z]{1,3}(?:19|20)\d\d$")  # FY2025: a year, not a thing


def _entity(text: str, keyed: bool = False) -> bool:
    """A name or a code, not a date, amount or phrase. ``keyed``: the key of a table row, where one
    capitalised word or acronym names an entity too ("Frostline", "TERN" in a systems table)."""
    if keyed and re.fullmatch(r"[A-Z][A-Za-z]+|[A-Z][A-Z0-9]{2,}", text.strip()):
        return True
    spans = find_spans(text, limit=1)
    return bool(spans) and spans[0].kind in ENTITY_KINDS and len(spans[0].text) >= 0.8 * len(text.strip())


@dataclass(frozen=True)
class Negative:
    subject: str
    attribute: str
    doc_id: str  # the document that names the subject (forgetting it forgets the negative)
    reason: str  # gap | other kind | prose

    @property
    def id(self) -> str:
        return hashlib.sha256(f"neg|{self.subject}|{self.attribute}".encode()).hexdigest()[:16]


def _rank(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def _close(a: str, attrs: set[str]) -> bool:
    """An attribute that shares a content word with one the entity has ("lead" / "team lead")."""
    mine = content_words(a)
    return any(mine & content_words(b) for b in attrs)


def negatives(facts: list[AtomicFact], per_entity: int = 2, limit: int = 200) -> list[Negative]:
    """Unanswerable (entity, attribute) questions, at most ``per_entity`` of the other-kind sort each."""
    kinds: dict[tuple[str, str], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    home: dict[str, str] = {}
    people: dict[str, str] = {}
    texts = [f.statement.lower() for f in facts]
    values: dict[str, set[str]] = defaultdict(set)  # entity → the entities its attributes name
    for f in facts:
        if f.form != "kv" or f.reverse or f.subject_is_title or not _entity(f.subject, bool(f.subject_type)) or _ODD_ATTRIBUTE.match(f.attribute):
            continue
        kind = (f.doc_id, f.subject_type or "heading")
        kinds[kind][f.subject].add(f.attribute)
        home.setdefault(f.subject, f.doc_id)
        values[f.subject].add(re.sub(r"\s*\([^)]*\)", "", f.value).strip())
        if looks_like_person(f.value):
            people.setdefault(re.sub(r"\s*\([^)]*\)", "", f.value).strip(), f.doc_id)
    said = {(f.subject.lower(), f.attribute.lower()) for f in facts if f.form == "kv"}
    attrs_of = {e: set().union(*(m[e] for m in kinds.values() if e in m)) for e in home}

    def reachable(subject: str) -> set[str]:
        """Attributes two hops away ("the lead of Routewise": the lead of the team that owns it)."""
        return {a for v in values.get(subject, ()) for a in attrs_of.get(v, ())}

    def mentioned(subject: str, attribute: str) -> bool:
        s, words = subject.lower(), content_words(attribute)
        return ((s, attribute.lower()) in said or any(s in t and words <= content_words(t) for t in texts)
                or _close(attribute, reachable(subject)))

    out: dict[str, Negative] = {}
    attrs_of_kind = {k: set().union(*members.values()) for k, members in kinds.items()}
    for kind, members in kinds.items():
        for subject, attrs in members.items():
            for a in sorted(attrs_of_kind[kind] - attrs):
                if not mentioned(subject, a):
                    n = Negative(subject, a, home[subject], "gap")
                    out.setdefault(n.id, n)
    foreign: dict[tuple[str, str], list[str]] = {}
    for kind in kinds:
        foreign[kind] = sorted({a for k, attrs in attrs_of_kind.items() if k != kind for a in attrs
                                if not _close(a, attrs_of_kind[kind])})
    for kind, members in kinds.items():
        for subject in members:
            picks = sorted(foreign[kind], key=lambda a: _rank(subject, a))
            taken = 0
            for a in picks:
                if taken >= per_entity:
                    break
                if not mentioned(subject, a):
                    n = Negative(subject, a, home[subject], "other kind")
                    out.setdefault(n.id, n)
                    taken += 1
    every = sorted({a for attrs in attrs_of_kind.values() for a in attrs})
    for person, doc_id in sorted(people.items()):
        taken = 0
        for a in sorted(every, key=lambda a: _rank(person, a)):
            if taken >= per_entity:
                break
            if _ROLE.search(a) or mentioned(person, a):
                continue  # a person is somebody's lead: only attributes no person has
            n = Negative(person, a, doc_id, "other kind")
            out.setdefault(n.id, n)
            taken += 1
    for n in _prose_negatives(facts, set(home) | set(people), per_entity):
        out.setdefault(n.id, n)
    ranked = sorted(out.values(), key=lambda n: (n.reason != "gap", _rank(n.subject, n.attribute)))
    return ranked[:limit]


def _bare(name: str) -> str:
    return re.sub(r"^the\s+", "", name.strip().lower())


def prose_entities(facts: list[AtomicFact], known: set[str]) -> dict[str, str]:
    """Names and codes that sentences mention but no attribute line describes: name → its first document.

    A name is a multi-word proper name or a code with a digit (VX-31, CR-3); acronyms, sentence
    fragments ("This SOP", "Ring the …"), year codes and the shorter form of a longer name are not."""
    found: dict[str, str] = {}
    for f in facts:
        if f.form != "span":
            continue
        for sp in find_spans(f.text, limit=8):
            name = sp.text.strip()
            ok = (sp.kind == "name" and " " in name) or (sp.kind == "code" and re.search(r"\d", name) and not _YEAR_CODE.match(name))
            if ok and not _NOT_A_NAME.match(name):
                found.setdefault(name, f.doc_id)
    bare = {n: _bare(n) for n in found}
    known_bare = {_bare(k) for k in known}
    everything = known_bare | set(bare.values())
    titles = {_bare(f.title) for f in facts}  # a document's own subject has its title-level facts
    return {n: d for n, d in found.items()
            if bare[n] not in known_bare and not any(bare[n] != o and bare[n] in o for o in everything)
            and not any(bare[n] in t for t in titles)}


def _prose_negatives(facts: list[AtomicFact], known: set[str], per_entity: int) -> list[Negative]:
    """At most ``per_entity`` attributes for each name met only in prose, each with structured values of
    a kind that no statement naming it contains, and sharing no word with those statements."""
    value_kinds: dict[str, set[str]] = defaultdict(set)
    holders: dict[str, set[str]] = defaultdict(set)
    for f in facts:
        if f.form == "kv" and not f.reverse and not f.subject_is_title and not _ODD_ATTRIBUTE.match(f.attribute):
            value_kinds[f.attribute].add(f.kind)
            holders[f.attribute].add(f.subject)
    structured = sorted(a for a, k in value_kinds.items() if "text" not in k)
    statements = [(t, t.lower()) for t in sorted({f.statement for f in facts})]  # lowered once, not per name
    spans: dict[str, list[Span]] = {}  # a statement's spans, found once however many names it mentions
    out: list[Negative] = []
    for name, doc_id in sorted(prose_entities(facts, known).items()):
        about = [t for t, low in statements if name.lower() in low]
        words = set().union(*(content_words(t) for t in about)) if about else set()
        for t in about:
            if t not in spans:
                spans[t] = find_spans(t, limit=12)
        kinds = {sp.kind for t in about for sp in spans[t] if sp.text.strip() != name}
        person = looks_like_person(name)
        taken = 0
        # attributes many things have first (a vendor code, an owning team), not one table's column
        for a in sorted(structured, key=lambda a: (len(holders[a]) < _COMMON, _rank(name, a))):
            if taken >= per_entity:
                break
            if value_kinds[a] & kinds or content_words(a) & words or (person and _ROLE.search(a)):
                continue
            out.append(Negative(name, a, doc_id, "prose"))
            taken += 1
    return out


def negative_questions(n: Negative) -> list[tuple[str, str]]:
    a = phrase(n.attribute)
    out = [(f"What is the {a} of {n.subject}?", "negative-of"), (f"{n.subject}: what is the {a}?", "negative-colon")]
    if re.search(r"\b(lead|manager|owner|director|head|contact|approver)\b", a, re.I):
        out.append((f"Who is the {a} of {n.subject}?", "negative-wh"))
    return out
