"""The memory's value must be stated in the corpus: a check of the memory's answer, not a retrieval.

A small memory can answer a question the corpus does not answer with a value it made up ("90 EUR
per night", "19 May 2025" cited from the wrong page). Before an answer is given, its value — the
answer without the remarks the memory adds in parentheses ("in force; replaced …", the bridge of
a composed answer) — is looked up in the current text of each document the answer cites.

A value found in a cited document is not yet an answer to the question: "4410" is on the
onboarding page, as the *helpdesk's* extension, when the People Team's is asked for. So the cited
check asks for a statement — a sentence, a list item, a table row, read with its document title
and section heading (what a "Site manager: …" line is about) — that states the value together with
every name the question uses; or, for a question that reaches the value through another entity
("the team that owns Frostline"), a statement of the value whose subject (a table row's cells, an
entity heading, the bridge the memory names in parentheses) is stated together with the names the
first one lacks. A question about what the corpus never says then finds only the neighbouring
value, and the memory does not know.

The memory's citation is a learned string too, and it is wrong more often than its value: it
recalls "Heron 2" and cites the on-call rota. So when the cited documents do not state the value,
:meth:`SourceCheck.stating` looks for a sentence (or table line) anywhere in the current corpus
that states the value *together with the question's names and a content word of it*, and those
documents become the answer's sources — the citation is corrected, not trusted. The executive asks
more confidence of such an answer (``ExecutiveParams.uncited_below``). The texts are decrypted
into RAM only and never shown to the executive; the value always comes from the memory.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

from bm25s.stopwords import STOPWORDS_EN_PLUS

from appliance.reflect.facts import names_entity
from appliance.reflect.facts import statements as structured
from appliance.reflect.validate import normalise
from appliance.vault.store import Vault

# the catalog's current documents: doc id → (text object id, title)
Current = dict[str, tuple[str, str]]
_REMARK = re.compile(r"\s*\(([^()]*)\)\s*$")
# a sentence ends at . ! ? before a capital; a line (a table row, a list item) always ends one
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
# words of a question that say nothing about which fact it asks for
_FUNCTION_WORDS = frozenset(STOPWORDS_EN_PLUS) | {"many", "much", "must", "per", "long", "often", "should", "would",
                                                  "could", "may", "might", "shall", "according"}


def core_value(answer: str) -> str:
    """The value an answer states: trailing parenthesised remarks off, and for an answer in the
    layout before the lean one ("27 days. The policy says …") its first sentence."""
    value = answer.strip()
    while _REMARK.search(value) and _REMARK.sub("", value):
        value = _REMARK.sub("", value)
    return value.split(". ")[0].strip().rstrip(".")


def values(question: str, answer: str) -> list[str]:
    """The normalised forms of an answer's value to look up: the value as the memory wrote it, and,
    where it repeats words of the question, the value without them — what the answer adds. "8 failed
    login attempts" to "After how many failed login attempts …?" states "8" where the policy says
    "8 failed attempts": the echoed words are the question's, not a claim to find verbatim."""
    value = normalise(core_value(answer))
    asked = set(normalise(question).split())
    added = " ".join(w for w in value.split() if w not in asked)
    return [v for v in dict.fromkeys((value, added)) if v]


def bridge(answer: str) -> str:
    """The entity a composed answer names in its last remark ("Marek Tollefsrud (Fleet Dispatch)"),
    or "": the memory's remarks on the value in force are not entities."""
    m = _REMARK.search(answer.strip())
    remark = m.group(1).strip() if m else ""
    return "" if remark.lower().startswith(("in force", "superseded", "replaced")) else remark


def content_words(question: str, answer: str) -> set[str]:
    """The question's words that can tie a sentence to it: no function words, none of the answer's."""
    own = set(normalise(answer).split())
    return {w for w in normalise(question).split() if len(w) > 1 and w not in _FUNCTION_WORDS and w not in own}


def names(question: str, answer: str) -> set[str]:
    """The words of the names a question uses ("People Team", "gw1", "Priya Oyelaran-Moss"): capitalised
    after its first word, or with a digit; none of the answer's words."""
    own = set(normalise(answer).split())
    tokens = question.split()[1:]
    named = " ".join(t for t in tokens if t[:1].isupper() or any(c.isdigit() for c in t))
    return {w for w in normalise(named).split() if w not in _FUNCTION_WORDS and w not in own}


@dataclass(frozen=True)
class Said:
    """One statement of a document as the check reads it, each string normalised and padded with
    spaces for whole-word lookups: its own ``text``; its ``context``, the text with the document
    title and section heading that say what it is about; and the entities it ``links`` through —
    a table row's cells, an entity heading."""

    text: str
    context: str
    links: frozenset[str]


def said(text: str, title: str) -> list[Said]:
    """A document's statements (:func:`appliance.reflect.facts.statements`, the reflections' own reading)."""
    out = []
    for st in structured(text, title, spans=False):
        cells = [c for subject, _attr, value, _type, _rev in st.kv if subject for c in (subject, value)]
        if names_entity(st.heading):
            cells.append(st.heading)
        links = frozenset(n for n in map(normalise, cells) if len(n) > 2)
        out.append(Said(f" {normalise(st.text)} ", f" {normalise(' '.join((title, st.heading, st.text)))} ", links))
    return out


def statements(text: str) -> list[str]:
    """A document's sentences and lines, normalised and padded for whole-word lookups."""
    out = []
    for line in text.splitlines():
        for sentence in _SENTENCE_END.split(line):
            n = normalise(sentence)
            if n:
                out.append(f" {n} ")
    return out


class SourceCheck:
    """Looks a memory answer's value up in the documents it cites, and else in the whole current corpus.

    Each text object is decrypted into RAM once (its normalised whole text, its sentences and its
    statements kept) and the indexes are rebuilt from those when the catalog's current documents
    change, so an executive that lives long (the API server, the console) sees a new version at
    once, and a forgotten document states nothing from then on.
    """

    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        # (text object id, title) → normalised text, sentences, statements
        self._texts: dict[tuple[str, str], tuple[str, list[str], list[Said]]] = {}
        self._indexed: Current | None = None  # the current documents the indexes were built from
        self._statements: list[tuple[str, str]] = []  # (doc id, sentence)
        self._by_word: dict[str, set[int]] = {}
        self._said: list[tuple[str, Said]] = []  # (doc id, statement)
        self._said_by_word: dict[str, set[int]] = {}  # a word of a statement's context → statements

    def _current(self) -> Current:
        """Each current, not forgotten document's id → its text object id and title (one catalog read)."""
        with self.vault.read() as db:
            return {r["doc_id"]: (r["text_oid"], r["title"]) for r in db.execute(
                "SELECT v.doc_id, v.text_oid, v.title FROM versions v JOIN documents d ON d.id = v.doc_id "
                "WHERE v.status='current' AND d.forgotten_at IS NULL ORDER BY v.doc_id")}

    def _read(self, doc_id: str, current: Current) -> tuple[str, list[str], list[Said]]:
        """A document's normalised whole text, sentences (the corrected check) and statements (the
        cited check): one decryption."""
        key = current[doc_id]
        if key not in self._texts:
            text = self.vault.get_object(key[0]).decode()
            self._texts[key] = (f" {normalise(text)} ", statements(text), said(text, key[1]))
        return self._texts[key]

    def __call__(self, answer: str, doc_ids: list[str]) -> bool:
        """Whether a cited document's text contains the answer's value anywhere (no question to tie it to)."""
        current = self._current()
        return self._contains(current, normalise(core_value(answer)), doc_ids)

    def stating(self, question: str, answer: str) -> list[str]:
        """Documents with a sentence that states the answer's value, every name the question uses and
        at least one of its other content words: "4410" stated for the helpdesk is not the People
        Team's extension."""
        return self._stating(self._current(), question, answer)

    def verify(self, question: str, answer: str, doc_ids: list[str]) -> tuple[bool, list[str]]:
        """Both checks on one read of the catalog: whether a cited document states the value about
        what the question names (:meth:`about`), and else the documents that state it
        (:meth:`stating`); the cited ones when the citation held."""
        current = self._current()
        if self._about(current, question, answer, doc_ids):
            return True, list(doc_ids)
        return False, self._stating(current, question, answer)

    def about(self, question: str, answer: str, doc_ids: list[str]) -> bool:
        """Whether a cited document has a statement of the value that, with its title and heading,
        names everything the question names — directly, or through an entity of that statement
        (a row's cells, an entity heading, the answer's bridge) that another statement names
        together with the rest."""
        return self._about(self._current(), question, answer, doc_ids)

    def _contains(self, current: Current, value: str, doc_ids: list[str]) -> bool:
        return bool(value) and any(f" {value} " in self._read(d, current)[0] for d in doc_ids if d in current)

    def _about(self, current: Current, question: str, answer: str, doc_ids: list[str]) -> bool:
        forms = values(question, answer)
        if not forms:  # an empty answer states nothing
            return False
        written, *shortened = forms
        named, via, tie = names(question, answer), normalise(bridge(answer)), content_words(question, answer)
        return self._about_value(current, written, doc_ids, named, via, set()) or any(
            self._about_value(current, v, doc_ids, named, via, tie) for v in shortened if tie)

    def _about_value(self, current: Current, value: str, doc_ids: list[str], named: set[str], via: str,
                     tie: set[str]) -> bool:
        """:meth:`about` for one form of the value; a value shortened to what the answer adds must be
        stated with one more ``tie`` to the question (a content word the answer does not echo), as
        the words it lost tied it before: "2nd" of "2nd working day of the following month" is
        stated for invoices, not for the month-end close the question asks about."""
        if not self._contains(current, value, doc_ids):
            return False
        self._index(current)
        cited = set(doc_ids)
        for doc_id, s in self._with(value, in_context=False):
            if doc_id not in cited or (tie and not any(f" {w} " in s.context for w in tie)):
                continue
            missing = {w for w in named if f" {w} " not in s.context}
            if not missing:
                return True
            links = (s.links | ({via} if len(via) > 2 else set())) - {value}
            if any(all(f" {w} " in t.context for w in missing) for link in links for _, t in self._with(link, in_context=True)):
                return True
        return False

    def _with(self, phrase: str, in_context: bool) -> list[tuple[str, Said]]:
        """The statements whose text (or context) contains a normalised phrase as whole words."""
        words = phrase.split()
        if not words:
            return []
        hits = set.intersection(*(self._said_by_word.get(w, set()) for w in words))
        return [(d, s) for d, s in (self._said[i] for i in sorted(hits)) if f" {phrase} " in (s.context if in_context else s.text)]

    def _index(self, current: Current) -> None:
        if current == self._indexed:
            return
        statements_: list[tuple[str, str]] = []
        by_word: dict[str, set[int]] = defaultdict(set)
        said_: list[tuple[str, Said]] = []
        said_by_word: dict[str, set[int]] = defaultdict(set)
        for doc_id in current:
            _, sentences, own = self._read(doc_id, current)
            for sentence in sentences:
                for w in set(sentence.split()):
                    by_word[w].add(len(statements_))
                statements_.append((doc_id, sentence))
            for s in own:
                for w in set(s.context.split()):
                    said_by_word[w].add(len(said_))
                said_.append((doc_id, s))
        self._statements, self._by_word = statements_, dict(by_word)
        self._said, self._said_by_word, self._indexed = said_, dict(said_by_word), current

    def _stating(self, current: Current, question: str, answer: str) -> list[str]:
        words, named = content_words(question, answer), names(question, answer)
        if not words:
            return []
        self._index(current)
        docs: list[str] = []
        for value in values(question, answer):
            candidates = set.intersection(*(self._by_word.get(w, set()) for w in value.split()))
            for i in sorted(candidates):
                doc_id, sentence = self._statements[i]
                if (doc_id not in docs and f" {value} " in sentence and any(f" {w} " in sentence for w in words)
                        and all(f" {w} " in sentence for w in named)):
                    docs.append(doc_id)
        return docs
