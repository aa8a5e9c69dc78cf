"""Reflections at rest: one encrypted vault file per unit of work, plus their statistics.

A unit (one chunk, one entity group, one cross-document relation) is written whole and atomically
once generated, so a killed run loses at most the unit in flight and a re-run skips every unit
already on disk: nothing is generated or stored twice.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

from appliance.reflect.validate import dedup_key
from appliance.vault.store import Vault

UNIT_DIR = "reflections/units"
# fact: an attribute or a span of a statement; reverse: the subject asked from its attribute (entity
# surfacing); current: the value in force of a document that superseded another; composed: two facts
# of different documents through a shared entity (multi-hop); unknown: a question about a real entity
# that the corpus does not answer (answer: "unknown"). paraphrase/entity/relation: units
# written before the present pipeline (still readable; re-generated on the next `memo reflect`).
PairKind = Literal["fact", "reverse", "current", "composed", "unknown", "paraphrase", "entity", "relation"]
Split = Literal["train", "probe"]


class QAPair(BaseModel):
    """One question and the answer the memory must give. ``split``: trained on, or held out as a
    probe (a wording of the same fact that training never shows). ``wording``: which template or
    process wrote the question. ``fact_id``: the atomic fact it asks for."""

    id: str
    kind: PairKind
    question: str
    answer: str
    answer_span: str = ""
    doc_ids: list[str]
    chunk_oids: list[str] = Field(default_factory=list)
    source: str = ""
    fact_id: str = ""
    split: Split = "train"
    wording: str = ""


def content_order(pairs: list[QAPair]) -> list[QAPair]:
    """Pairs in an order fixed by what they say, not by their ids.

    Pair ids derive from document ids, which are MACs under each vault's own key: ordered by id, two
    vaults of the same corpus would train in different orders, number their sources differently and
    sample other evaluation probes — two installs of one corpus would get different memories, and no
    two benchmark runs could be compared. A hash of the pair's content is as well shuffled and the
    same in every vault (ties, the same pair from two documents, fall back to the id)."""

    def key(p: QAPair) -> tuple[str, str]:
        return hashlib.sha256(f"{p.kind}|{p.wording}|{p.question}|{p.answer}".encode()).hexdigest(), p.id
    return sorted(pairs, key=key)


class Rejection(BaseModel):
    kind: PairKind
    question: str
    reason: str


class FactRecord(BaseModel):
    """An atomic fact a unit was written for, and what came of it (for coverage)."""

    id: str
    doc_id: str
    form: str
    value: str
    trained: int = 0  # training wordings kept
    probes: int = 0


class UnitStats(BaseModel):
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0


class ReflectionUnit(BaseModel):
    unit_id: str
    unit_kind: Literal["facts", "compose", "negatives", "chunk", "entities", "relation"]
    doc_ids: list[str]
    chunk_oids: list[str]
    generator: str
    prompt_version: str
    created_at: str
    pairs: list[QAPair] = Field(default_factory=list)
    rejected: list[Rejection] = Field(default_factory=list)
    stats: UnitStats = Field(default_factory=UnitStats)
    facts: list[FactRecord] = Field(default_factory=list)


def unit_file(unit_id: str) -> str:
    return f"{UNIT_DIR}/{unit_id}.json"


def save_unit(vault: Vault, unit: ReflectionUnit) -> None:
    vault.write_file(unit_file(unit.unit_id), unit.model_dump_json().encode())


def unit_ids_on_disk(vault: Vault) -> set[str]:
    prefix = UNIT_DIR + "/"
    return {n[len(prefix) : -5] for n in vault.file_names() if n.startswith(prefix) and n.endswith(".json")}


def load_unit(vault: Vault, unit_id: str) -> ReflectionUnit:
    return ReflectionUnit.model_validate_json(vault.read_file(unit_file(unit_id)))


def load_units(vault: Vault, unit_ids: set[str] | None = None) -> list[ReflectionUnit]:
    ids = unit_ids_on_disk(vault) if unit_ids is None else unit_ids & unit_ids_on_disk(vault)
    return [load_unit(vault, u) for u in sorted(ids)]


def load_pairs(vault: Vault, doc_ids: set[str] | None = None) -> list[QAPair]:
    """Every stored pair, de-duplicated by question across units, optionally for some documents.

    A question asked twice (two documents give the same statement: a near-duplicate copy) is kept
    once; a probe whose question is also trained on is dropped, so probes stay held out.
    """
    units = load_units(vault)
    trained = {dedup_key(p.question) for u in units for p in u.pairs if p.split == "train"}
    seen: set[str] = set()
    pairs: list[QAPair] = []
    for unit in units:
        for p in unit.pairs:
            if doc_ids is not None and not set(p.doc_ids) & doc_ids:
                continue
            key = dedup_key(p.question, ordered=True)
            if key in seen or (p.split == "probe" and dedup_key(p.question) in trained):
                continue
            seen.add(key)
            pairs.append(p)
    return pairs


def drop_documents(vault: Vault, doc_ids: set[str]) -> int:
    """Delete every unit built from one of ``doc_ids`` (forgetting a document forgets its reflections)."""
    removed = 0
    for unit in load_units(vault):
        if set(unit.doc_ids) & doc_ids:
            vault.delete_file(unit_file(unit.unit_id))
            removed += 1
    return removed


@dataclass
class ReflectStats:
    units: int = 0
    pairs: int = 0
    rejected: int = 0
    per_kind: dict[str, int] = field(default_factory=dict)
    per_doc: dict[str, int] = field(default_factory=dict)
    rejection_reasons: dict[str, int] = field(default_factory=dict)
    llm_calls: int = 0
    completion_tokens: int = 0
    prompt_tokens: int = 0
    generation_seconds: float = 0.0
    generators: list[str] = field(default_factory=list)
    probes: int = 0  # held-out wordings among the pairs
    facts: int = 0  # atomic facts planned (composed ones apart)
    covered: int = 0  # of those, with at least one trained wording
    per_doc_facts: dict[str, list[int]] = field(default_factory=dict)  # document → [facts, covered]
    composed_facts: int = 0

    @property
    def coverage(self) -> float:
        return self.covered / self.facts if self.facts else 0.0

    @property
    def rejection_rate(self) -> float:
        total = self.pairs + self.rejected
        return self.rejected / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "rejection_rate": round(self.rejection_rate, 4), "coverage": round(self.coverage, 4)}


def compute_stats(units: list[ReflectionUnit]) -> ReflectStats:
    st = ReflectStats(units=len(units))
    kinds: Counter[str] = Counter()
    docs: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    gens: set[str] = set()
    seen: set[str] = set()
    for u in units:
        gens.add(u.generator)
        st.llm_calls += u.stats.llm_calls
        st.completion_tokens += u.stats.completion_tokens
        st.prompt_tokens += u.stats.prompt_tokens
        st.generation_seconds += u.stats.seconds
        for p in u.pairs:
            key = dedup_key(p.question, ordered=True)
            if key in seen:
                reasons["duplicate"] += 1
                st.rejected += 1
                continue
            seen.add(key)
            kinds[p.kind] += 1
            st.probes += p.split == "probe"
            for d in p.doc_ids:
                docs[d] += 1
        for r in u.rejected:
            reasons[r.reason] += 1
        st.rejected += len(u.rejected)
        for f in u.facts:
            if f.form == "composed":
                st.composed_facts += 1
                continue
            row = st.per_doc_facts.setdefault(f.doc_id, [0, 0])
            row[0] += 1
            row[1] += int(f.trained > 0)
    st.pairs = sum(kinds.values())
    st.facts = sum(n for n, _ in st.per_doc_facts.values())
    st.covered = sum(k for _, k in st.per_doc_facts.values())
    st.per_kind = dict(kinds.most_common())
    st.per_doc = dict(sorted(docs.items()))
    st.rejection_reasons = dict(reasons.most_common())
    st.generators = sorted(gens)
    st.generation_seconds = round(st.generation_seconds, 2)
    return st


def pairs_by_doc(pairs: list[QAPair]) -> dict[str, list[QAPair]]:
    out: dict[str, list[QAPair]] = defaultdict(list)
    for p in pairs:
        for d in p.doc_ids:
            out[d].append(p)
    return out
