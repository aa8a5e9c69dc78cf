"""The memory's value must be stated in the corpus: a check of the memory's answer, not a retrieval.

A small memory can answer a question the corpus does not answer with a value it made up ("90 EUR
per night", "19 May 2025" cited from the wrong page). Before an answer is given, its value — the
answer without the remarks the memory adds in parentheses ("in force; replaced …", the bridge of
a composed answer) — is looked up in the current text of each document the answer cites.

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

from bm25s.stopwords import STOPWORDS_EN_PLUS

from appliance.reflect.validate import normalise
from appliance.vault.store import Vault

_REMARK = re.compile(r"\s*\([^()]*\)\s*$")
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

    Each text object is decrypted into RAM once (its normalised whole text and its sentences kept)
    and the sentence index is rebuilt from those when the catalog's current documents change, so an
    executive that lives long (the API server, the console) sees a new version at once, and a
    forgotten document states nothing from then on.
    """

    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        self._texts: dict[str, tuple[str, list[str]]] = {}  # text object id → normalised padded text, sentences
        self._indexed: dict[str, str] | None = None  # the current documents the index was built from
        self._statements: list[tuple[str, str]] = []  # (doc id, sentence)
        self._by_word: dict[str, set[int]] = {}

    def _current(self) -> dict[str, str]:
        """Each current, not forgotten document's id → its text object id (one catalog read)."""
        with self.vault.read() as db:
            return {r["doc_id"]: r["text_oid"] for r in db.execute(
                "SELECT v.doc_id, v.text_oid FROM versions v JOIN documents d ON d.id = v.doc_id "
                "WHERE v.status='current' AND d.forgotten_at IS NULL ORDER BY v.doc_id")}

    def _read(self, oid: str) -> tuple[str, list[str]]:
        """A text object's normalised whole text (the cited check) and sentences (the index): one decryption."""
        if oid not in self._texts:
            text = self.vault.get_object(oid).decode()
            self._texts[oid] = (f" {normalise(text)} ", statements(text))
        return self._texts[oid]

    def __call__(self, answer: str, doc_ids: list[str]) -> bool:
        """Whether a cited document states the answer's value."""
        return self._cited(self._current(), answer, doc_ids)

    def stating(self, question: str, answer: str) -> list[str]:
        """Documents with a sentence that states the answer's value, every name the question uses and
        at least one of its other content words: "4410" stated for the helpdesk is not the People
        Team's extension."""
        return self._stating(self._current(), question, answer)

    def verify(self, question: str, answer: str, doc_ids: list[str]) -> tuple[bool, list[str]]:
        """Both checks on one read of the catalog: whether a cited document states the value, and
        else the documents that state it (:meth:`stating`); the cited ones when the citation held."""
        current = self._current()
        if self._cited(current, answer, doc_ids):
            return True, list(doc_ids)
        return False, self._stating(current, question, answer)

    def _cited(self, current: dict[str, str], answer: str, doc_ids: list[str]) -> bool:
        value = normalise(core_value(answer))
        return bool(value) and any(f" {value} " in self._read(current[d])[0] for d in doc_ids if d in current)

    def _index(self, current: dict[str, str]) -> None:
        statements_: list[tuple[str, str]] = []
        by_word: dict[str, set[int]] = defaultdict(set)
        for doc_id, oid in current.items():
            for sentence in self._read(oid)[1]:
                for w in set(sentence.split()):
                    by_word[w].add(len(statements_))
                statements_.append((doc_id, sentence))
        self._statements, self._by_word, self._indexed = statements_, dict(by_word), current

    def _stating(self, current: dict[str, str], question: str, answer: str) -> list[str]:
        value = normalise(core_value(answer))
        words, named = content_words(question, answer), names(question, answer)
        if not value or not words:
            return []
        if current != self._indexed:
            self._index(current)
        candidates = set.intersection(*(self._by_word.get(w, set()) for w in value.split()))
        docs: list[str] = []
        for i in sorted(candidates):
            doc_id, sentence = self._statements[i]
            if (doc_id not in docs and f" {value} " in sentence and any(f" {w} " in sentence for w in words)
                    and all(f" {w} " in sentence for w in named)):
                docs.append(doc_id)
        return docs
