"""Reflection generation: the corpus turned into question-answer pairs for the memory model.

The plan is derived from the catalog on every run (current, non-duplicate documents), as units:

* **facts** — a group of a document's atomic facts (:mod:`appliance.reflect.facts`). Each fact
  gets several training wordings: the structural templates of :mod:`appliance.reflect.wordings`,
  and questions the generator writes for it at temperature where ``ReflectParams.generated_wordings``
  asks for them (off by default: a small generator's questions mostly ask for another value). One
  more wording, a paraphrase the generator writes in another prompt and seed, is held out as the
  fact's probe. The answer is the bare value. A document that supersedes another states its value
  together with the one it replaced, and is also asked "… now?" (``current``); a superseded document's facts are asked only
  about that document, so a plain question gets the value in force. An attribute whose value
  names an entity is also asked backwards (``reverse``: "which team has the lead …?").
* **compose** — for an entity that one document gives as a value and another describes (the team
  that owns Routewise → that team's lead), the two hops in one question (``composed``): a model
  fine-tuned on the two facts apart does not compose them (the "two-hop curse").

Every answer's value is checked to occur in its source statement; a pair whose value is not in its
source is rejected. Each unit is one encrypted file, written whole, so a killed run loses one unit
and a re-run skips the rest.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from appliance.config import ReflectParams, current_actor
from appliance.errors import MemoError
from appliance.llm.base import ChatModel, ChatResult
from appliance.reflect import prompts, wordings
from appliance.reflect.facts import ENTITY_KINDS, AtomicFact, atomic_facts, content_words, statements, title_entities
from appliance.reflect.families import DocInfo, Supersession, supersessions
from appliance.reflect.negatives import Negative, negative_questions, negatives
from appliance.reflect.store import (
    FactRecord,
    QAPair,
    ReflectionUnit,
    Rejection,
    UnitStats,
    compute_stats,
    load_units,
    save_unit,
    unit_file,
    unit_ids_on_disk,
)
from appliance.reflect.validate import answer_type_problem, clean_question, dedup_key, normalise, question_problem
from appliance.vault.store import Vault


class ReflectCancelled(MemoError):
    """Cancelled between units; finished units are stored and a re-run continues."""


@dataclass
class DocFacts:
    doc_id: str
    title: str
    chunk_oids: list[str]
    facts: list[AtomicFact]


@dataclass
class PlannedFact:
    """A fact with what the corpus around it decides: how it may be asked and what its answer says."""

    fact: AtomicFact
    plain: bool = True  # may be asked without naming its document
    qualify: str = ""  # a superseded document: every question names it
    replaced: str = ""  # the value this one replaced (a superseding document)
    now: str = ""  # the value now in force (a superseded document)
    current: bool = False  # in a document that superseded another


@dataclass
class Composition:
    first: AtomicFact
    second: AtomicFact
    bridge: str


@dataclass
class UnitPlan:
    unit_id: str
    unit_kind: str
    doc_ids: list[str]
    chunk_oids: list[str]
    facts: list[PlannedFact] = field(default_factory=list)
    compositions: list[Composition] = field(default_factory=list)
    negatives: list[Negative] = field(default_factory=list)
    entity: str | None = None


@dataclass
class ReflectReport:
    planned: int
    generated: int
    skipped_done: int
    pruned: int
    pairs: int
    rejected: int
    completion_tokens: int
    seconds: float

    @property
    def pairs_per_second(self) -> float:
        return self.pairs / self.seconds if self.seconds else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "pairs_per_second": round(self.pairs_per_second, 3),
                "tokens_per_second": round(self.tokens_per_second, 2)}


def _unit_id(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _pair_id(unit_id: str, kind: str, question: str) -> str:
    return hashlib.sha256(f"{unit_id}|{kind}|{question}".encode()).hexdigest()[:16]


def _key(text: str) -> str:
    return normalise(re.sub(r"\([^)]*\)", " ", text))


# ---------------------------------------------------------------------------- corpus
def _load_corpus(vault: Vault) -> tuple[list[DocFacts], list[DocInfo]]:
    """Every current document's atomic facts, read from its whole text (tables and headings intact)."""
    out: list[DocFacts] = []
    docs: list[DocInfo] = []
    with vault.read() as db:
        versions = db.execute(
            "SELECT v.doc_id, v.version, v.title, v.text_oid, v.ingested_at FROM versions v JOIN documents d ON d.id = v.doc_id "
            "WHERE v.status = 'current' AND d.forgotten_at IS NULL AND v.n_chunks > 0 ORDER BY d.source"
        ).fetchall()
        chunks = {
            (r["doc_id"], r["version"]): [c["oid"] for c in db.execute(
                "SELECT oid FROM chunks WHERE doc_id=? AND version=? ORDER BY seq", (r["doc_id"], r["version"]))]
            for r in versions
        }
    for v in versions:
        text = vault.get_object(v["text_oid"]).decode()
        docs.append(DocInfo(v["doc_id"], v["title"], text, v["ingested_at"]))
        seen: set[tuple[str, ...]] = set()
        facts: list[AtomicFact] = []
        for st in statements(text, v["title"]):
            for f in atomic_facts(st, v["doc_id"]):
                k = (f.form, f.subject, f.attribute, f.value, f.text, str(f.reverse))
                if k not in seen:
                    seen.add(k)
                    facts.append(f)
        out.append(DocFacts(v["doc_id"], v["title"], chunks[(v["doc_id"], v["version"])], facts))
    return out, docs


def _frequent_values(corpus: list[DocFacts]) -> set[str]:
    """Entities named all over the corpus (the company's own name): no informative answer."""
    df: Counter[str] = Counter()
    for d in corpus:
        df.update({_key(f.value) for f in d.facts if f.form == "span" and f.kind in ENTITY_KINDS})
    n = len(corpus)
    return {v for v, k in df.items() if k >= 4 and k > 0.4 * n}


def _attribute_key(f: AtomicFact) -> str:
    a = re.sub(r"\b(new|current|old|updated|previous)\b", " ", f.attribute.lower())
    return " ".join(normalise(a).split()) + "|" + ("" if f.subject_is_title else _key(f.subject))


def _masked(f: AtomicFact) -> set[str]:
    return content_words(f.text.replace(f.value, " ")) - content_words(f.value)


def _match(old: AtomicFact, candidates: list[AtomicFact]) -> AtomicFact | None:
    """The fact of the newer document that gives the same thing as ``old`` (its value may differ)."""
    if old.form == "kv":
        same = [c for c in candidates if c.form == "kv" and c.reverse == old.reverse and _attribute_key(c) == _attribute_key(old)]
        return same[0] if same else None
    best, score = None, 0.0
    mine = _masked(old)
    for c in candidates:
        if c.form != "span" or c.kind != old.kind:
            continue
        theirs = _masked(c)
        j = len(mine & theirs) / max(1, len(mine | theirs))
        if j > score:
            best, score = c, j
    return best if score >= 0.5 else None


def _plan_facts(corpus: list[DocFacts], sups: list[Supersession], frequent: set[str]) -> dict[str, list[PlannedFact]]:
    by_doc = {d.doc_id: d for d in corpus}
    old_of = {s.old_id: s for s in sups}
    new_of = {s.new_id: s for s in sups}
    superseded = set(old_of)
    # a document-level attribute may be asked without the document's name only when no other current
    # document gives it another value
    values: dict[str, set[str]] = defaultdict(set)
    for d in corpus:
        if d.doc_id in superseded:
            continue
        for f in d.facts:
            if f.form == "kv" and f.subject_is_title and not f.reverse:
                values[_attribute_key(f)].add(_key(f.value))
    out: dict[str, list[PlannedFact]] = {}
    for d in corpus:
        planned: list[PlannedFact] = []
        sup_old = old_of.get(d.doc_id)  # this document is superseded by sup_old.new_id
        sup_new = new_of.get(d.doc_id)  # this document supersedes sup_new.old_id
        newer = by_doc[sup_old.new_id].facts if sup_old and sup_old.new_id in by_doc else []
        older = by_doc[sup_new.old_id].facts if sup_new and sup_new.old_id in by_doc else []
        replaced: dict[str, str] = {}
        for o in older:
            m = _match(o, d.facts)
            if m is not None and _key(m.value) != _key(o.value):
                replaced.setdefault(m.id, o.value)
        for f in d.facts:
            if f.form == "span" and _key(f.value) in frequent:
                continue
            p = PlannedFact(f)
            if f.form == "kv" and f.subject_is_title and not f.reverse:
                p.plain = len(values.get(_attribute_key(f), ())) <= 1
            if sup_old:
                p.plain, p.qualify = False, d.title
                m = _match(f, newer)
                if m is not None and _key(m.value) != _key(f.value):
                    p.now = m.value
            if sup_new:
                p.current = True
                p.replaced = replaced.get(f.id, "")
            planned.append(p)
        out[d.doc_id] = planned
    return out


def _compositions(corpus: list[DocFacts], params: ReflectParams, superseded: set[str]) -> dict[str, list[Composition]]:
    """Bridge entity → (first hop, second hop) pairs across documents."""
    about: dict[str, list[AtomicFact]] = defaultdict(list)
    for d in corpus:
        if d.doc_id in superseded:
            continue
        for f in d.facts:
            if f.form != "kv":
                continue
            if not f.subject_is_title:
                about[_key(f.subject)].append(f)
            else:  # a code in a title names what the document is about ("… cold room CR-3")
                for e in title_entities(f.title):
                    if re.search(r"\d", e):
                        about[_key(e)].append(f)
    out: dict[str, list[Composition]] = defaultdict(list)
    total = 0
    for d in corpus:
        if d.doc_id in superseded:
            continue
        for first in d.facts:
            if first.kind not in ENTITY_KINDS:
                continue
            bridge = _key(first.value)
            seconds = [s for s in about.get(bridge, []) if s.doc_id != first.doc_id]
            if not seconds:  # "Finance Ops (Cosima Varga-Lind)" names Finance Ops
                inner = re.sub(r"\s*\([^)]*\)\s*", " ", first.value).strip()
                seconds = [s for s in about.get(_key(inner), []) if s.doc_id != first.doc_id]
            for second in seconds[: params.compositions_per_fact]:
                if second.value == first.subject or second.reverse and _key(second.value) == _key(first.subject):
                    continue
                if len(out[bridge]) >= params.compositions_per_entity or total >= params.max_compositions:
                    break
                out[bridge].append(Composition(first, second, first.value if first.value in first.text else second.subject))
                total += 1
    return out


def plan_units(vault: Vault, generator_identity: str, params: ReflectParams,
               doc_ids: set[str] | None = None) -> list[UnitPlan]:
    """The units for every current document, or only ``doc_ids`` (supersession and composition still see all)."""
    corpus, docs = _load_corpus(vault)
    sups = supersessions(docs)
    frequent = _frequent_values(corpus)
    planned = _plan_facts(corpus, sups, frequent)
    common = (generator_identity, prompts.PROMPT_VERSION, ANSWER_LAYOUT, params.__dict__)
    plans: list[UnitPlan] = []
    for d in corpus:
        if doc_ids is not None and d.doc_id not in doc_ids:
            continue
        facts = planned[d.doc_id]
        for start in range(0, len(facts), params.facts_per_unit):
            group = facts[start : start + params.facts_per_unit]
            uid = _unit_id("facts", d.doc_id, d.title, [(p.fact.id, p.plain, p.qualify, p.replaced, p.now, p.current) for p in group],
                           common)
            plans.append(UnitPlan(uid, "facts", [d.doc_id], d.chunk_oids, facts=group))
    chunks_of = {d.doc_id: d.chunk_oids for d in corpus}
    current_facts = [f for d in corpus if d.doc_id not in {s.old_id for s in sups} for f in d.facts]
    n_facts = sum(len(v) for v in planned.values())
    negs = [n for n in negatives(current_facts, params.negatives_per_entity, round(params.negatives_ratio * n_facts))
            if doc_ids is None or n.doc_id in doc_ids]
    if negs:
        docs_in = sorted({n.doc_id for n in negs})
        uid = _unit_id("negatives", [(n.subject, n.attribute, n.doc_id) for n in negs], common)
        plans.append(UnitPlan(uid, "negatives", docs_in, sorted({o for d in docs_in for o in chunks_of.get(d, [])}), negatives=negs))
    for bridge, comps in sorted(_compositions(corpus, params, {s.old_id for s in sups}).items()):
        if doc_ids is not None:
            comps = [c for c in comps if {c.first.doc_id, c.second.doc_id} <= doc_ids]
            if not comps:
                continue
        docs_in = sorted({c.first.doc_id for c in comps} | {c.second.doc_id for c in comps})
        uid = _unit_id("compose", bridge, [(c.first.id, c.second.id) for c in comps], common)
        plans.append(UnitPlan(uid, "compose", docs_in, sorted({o for d in docs_in for o in chunks_of.get(d, [])}),
                              compositions=comps, entity=bridge))
    return plans


# ---------------------------------------------------------------------------- answers
# how answers are written (part of every unit's id: a change re-generates)
ANSWER_LAYOUT = "2"


def answer_text(p: PlannedFact) -> str:
    """The bare value; a value in force says what it replaced, a superseded one only that it is.

    Each pair of values is taught in one order only — the value in force first. (Layout 1 also
    wrote the superseded value first, "110 EUR (superseded; now 125 EUR)": a memory trained on
    both orders answered plain questions with the old value "in force; replaced" the new one.)
    """
    v = p.fact.value
    if p.replaced:
        return f"{v} (in force; replaced {p.replaced})"
    if p.now:
        return f"{v} (superseded)"
    return v


def _generated_ok(q: str, f: AtomicFact, statement: str) -> str | None:
    """Extra checks for a question the generator wrote: it must name what the fact is about."""
    if f.form == "kv" and not f.subject_is_title:
        subject = content_words(f.subject)
        if subject and len(subject & content_words(q)) < max(1, len(subject) // 2):
            return "subject missing"
    own = content_words(f"{f.text} {f.subject} {f.attribute}") - content_words(f.value)
    if len(content_words(q) & own) < 2:
        return "too vague"
    return None


# ---------------------------------------------------------------------------- running
class Reflector:
    def __init__(self, vault: Vault, generator: ChatModel, params: ReflectParams) -> None:
        self.vault = vault
        self.gen = generator
        self.params = params

    def _ask(self, conversations: list, stats: UnitStats, temperature: float = 0.0, seed: int | None = None) -> list[ChatResult]:  # noqa: ANN001
        if not conversations:
            return []
        kwargs: dict[str, Any] = {}
        if temperature > 0 and seed is not None and _takes_seed(self.gen):
            kwargs["seed"] = seed
        results = self.gen.chat_many(conversations, max_tokens=self.params.question_max_tokens, temperature=temperature, **kwargs)
        stats.llm_calls += len(results)
        stats.prompt_tokens += sum(r.stats.prompt_tokens for r in results)
        stats.completion_tokens += sum(r.stats.completion_tokens for r in results)
        return results

    def run(self, plan: UnitPlan) -> ReflectionUnit:
        started = time.monotonic()
        unit = ReflectionUnit(
            unit_id=plan.unit_id, unit_kind=plan.unit_kind, doc_ids=plan.doc_ids, chunk_oids=plan.chunk_oids,
            generator=self.gen.identity, prompt_version=prompts.PROMPT_VERSION,
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        if plan.unit_kind == "facts":
            self._facts(plan, unit)
        elif plan.unit_kind == "negatives":
            self._negatives(plan, unit)
        else:
            self._compose(plan, unit)
        unit.stats.seconds = round(time.monotonic() - started, 3)
        return unit

    def _keep(self, unit: ReflectionUnit, seen: set[str], kind: str, q: str, value: str, statement: str,
              original: str | None = None, template: bool = False) -> bool:
        problem = question_problem(q, value, statement, original=original, template=template)
        if problem:
            unit.rejected.append(Rejection(kind=kind, question=q, reason=problem))  # type: ignore[arg-type]
            return False
        # a template wording is a duplicate only of the same words in the same order (its fronted form
        # reorders its cloze on purpose); a sampled question or a probe of the same words in any order
        key, loose = dedup_key(q, ordered=True), dedup_key(q)
        if (key if template else loose) in seen:
            unit.rejected.append(Rejection(kind=kind, question=q, reason="duplicate"))  # type: ignore[arg-type]
            return False
        seen.update((key, loose))
        return True

    def _facts(self, plan: UnitPlan, unit: ReflectionUnit) -> None:
        prm = self.params
        facts = [p for p in plan.facts if _value_in_source(p.fact.value, p.fact.statement)]
        for p in plan.facts:
            if p not in facts:
                unit.rejected.append(Rejection(kind="fact", question=p.fact.value, reason="value not in source"))
        # the generator writes wordings of each fact (sampled: greedy repeats itself), then paraphrases one
        asks = [prompts.question_prompt(p.fact.statement, p.fact.value) for p in facts]
        samples: list[list[str]] = [[] for _ in facts]
        for k in range(prm.generated_wordings):
            for i, r in enumerate(self._ask(asks, unit.stats, prm.question_temperature, prm.seed + k)):
                samples[i].append(clean_question(r.text))
        seen: set[str] = set()
        kept: list[list[tuple[str, str]]] = []
        for p, gen in zip(facts, samples):
            f = p.fact
            kind = "reverse" if f.reverse else "fact"
            mine: list[tuple[str, str]] = []
            templates = (wordings.kv_questions(f, p.plain, p.qualify) if f.form == "kv"
                         else wordings.span_questions(f, p.plain, p.qualify))
            for q, name in templates:
                if self._keep(unit, seen, kind, q, f.value, f.statement, template=True):
                    mine.append((q, name))
            for q in gen:
                if p.qualify and q and not q.lower().startswith("in the"):
                    q = wordings.in_document(p.qualify, q)
                problem = answer_type_problem(q, f.kind) or _generated_ok(q, f, f.statement) if q else "empty"
                if problem:
                    unit.rejected.append(Rejection(kind=kind, question=q, reason=problem))  # type: ignore[arg-type]
                elif self._keep(unit, seen, kind, q, f.value, f.statement):
                    mine.append((q, "generator"))
            if p.current and p.replaced:
                for q, name in wordings.now_questions(f):
                    if self._keep(unit, seen, "current", q, f.value, f.statement, template=True):
                        mine.append((q, name))
            kept.append(mine)
        # probes: another process (the paraphrase prompt, another seed) rewrites one training wording
        probes: dict[int, str] = {}
        for attempt in range(prm.probe_attempts):
            # the paraphrased wording: a generator one (natural) first, then the templates in turn; a
            # superseded document's wordings are paraphrased without the document's name, then given it back
            sources = {i: _unqualified(_probe_source(mine, attempt), facts[i].qualify)
                       for i, mine in enumerate(kept) if i not in probes and mine}
            todo = [i for i, q in sources.items() if q]
            results = self._ask([prompts.paraphrase_prompt(sources[i]) for i in todo], unit.stats, prm.paraphrase_temperature,
                                prm.seed + 101 + attempt)
            for i, r in zip(todo, results):
                q = clean_question(r.text)
                f = facts[i].fact
                if not q or not self._keep(unit, seen, "fact", q, f.value, f.statement, original=sources[i]):
                    continue
                problem = _probe_problem(q, f)
                if problem:
                    unit.rejected.append(Rejection(kind="fact", question=q, reason=problem))
                    continue
                if facts[i].qualify:
                    q = wordings.in_document(facts[i].qualify, q)
                if not _near_any(q, kept[i]):
                    probes[i] = q
        for i, (p, mine) in enumerate(zip(facts, kept)):
            f = p.fact
            answer = answer_text(p)
            base_kind = "reverse" if f.reverse else ("current" if p.current and p.replaced else "fact")
            for q, name in mine:
                kind = "current" if name in ("now", "current") else base_kind
                unit.pairs.append(QAPair(id=_pair_id(unit.unit_id, kind, q), kind=kind, question=q, answer=answer,  # type: ignore[arg-type]
                                         answer_span=f.value, doc_ids=[f.doc_id], chunk_oids=plan.chunk_oids, source=f.statement,
                                         fact_id=f.id, wording=name))
            if i in probes:
                q = probes[i]
                unit.pairs.append(QAPair(id=_pair_id(unit.unit_id, "probe", q), kind=base_kind, question=q, answer=answer,  # type: ignore[arg-type]
                                         answer_span=f.value, doc_ids=[f.doc_id], chunk_oids=plan.chunk_oids, source=f.statement,
                                         fact_id=f.id, split="probe", wording="paraphrase"))
            unit.facts.append(FactRecord(id=f.id, doc_id=f.doc_id, form=f.form, value=f.value, trained=len(mine),
                                         probes=int(i in probes)))

    def _compose(self, plan: UnitPlan, unit: ReflectionUnit) -> None:
        prm = self.params
        comps = [c for c in plan.compositions if _value_in_source(c.second.value, c.second.statement)]
        asks = [prompts.relation_prompt(c.first.statement, c.second.statement, c.second.value) for c in comps]
        samples: list[list[str]] = [[] for _ in comps]
        for k in range(prm.composed_generated_wordings):
            for i, r in enumerate(self._ask(asks, unit.stats, prm.question_temperature, prm.seed + 7 + k)):
                samples[i].append(clean_question(r.text))
        seen: set[str] = set()
        pending: list[tuple[str, str, list[str], str, Composition, list[tuple[str, str]]]] = []
        for c, gen in zip(comps, samples):
            both = f"{c.first.statement} {c.second.statement}"
            fid = hashlib.sha256(f"{c.first.id}|{c.second.id}".encode()).hexdigest()[:16]
            mine: list[tuple[str, str]] = []
            for q, name in wordings.composed_questions(c.first, c.second, c.bridge):
                if self._keep(unit, seen, "composed", q, c.second.value, both, template=True):
                    mine.append((q, name))
            for q in gen:
                # a composed question must not name the bridge (that is a one-hop question) but must
                # say something of the first hop
                if not q:
                    continue
                if normalise(c.bridge) and f" {normalise(c.bridge)} " in f" {normalise(q)} ":
                    unit.rejected.append(Rejection(kind="composed", question=q, reason="names the bridge"))
                    continue
                first_words = content_words(c.first.text) - content_words(c.bridge) - content_words(c.second.statement)
                if first_words and not content_words(q) & first_words:
                    unit.rejected.append(Rejection(kind="composed", question=q, reason="single hop"))
                    continue
                if self._keep(unit, seen, "composed", q, c.second.value, both):
                    mine.append((q, "generator"))
            answer = f"{c.second.value} ({c.bridge})" if _key(c.bridge) not in _key(c.second.value) else c.second.value
            docs = sorted({c.first.doc_id, c.second.doc_id})
            for q, name in mine:
                unit.pairs.append(QAPair(id=_pair_id(unit.unit_id, "composed", q), kind="composed", question=q, answer=answer,
                                         answer_span=c.second.value, doc_ids=docs, chunk_oids=plan.chunk_oids, source=both,
                                         fact_id=fid, wording=name))
            unit.facts.append(FactRecord(id=fid, doc_id=docs[0], form="composed", value=c.second.value, trained=len(mine)))
            pending.append((fid, answer, docs, both, c, mine))
        # probes: the paraphrase prompt rewrites one trained wording of each composition (another process)
        done: set[str] = set()
        for attempt in range(prm.probe_attempts):
            todo = [x for x in pending if x[5] and x[0] not in done]
            sources = [_probe_source(x[5], attempt) for x in todo]
            results = self._ask([prompts.paraphrase_prompt(q) for q in sources], unit.stats, prm.paraphrase_temperature,
                                prm.seed + 103 + attempt)
            for (fid, answer, docs, both, c, mine), source, r in zip(todo, sources, results):
                q = clean_question(r.text)
                if not q or not self._keep(unit, seen, "composed", q, c.second.value, both, original=source) or _near_any(q, mine):
                    continue
                unit.pairs.append(QAPair(id=_pair_id(unit.unit_id, "probe", q), kind="composed", question=q, answer=answer,
                                         answer_span=c.second.value, doc_ids=docs, chunk_oids=plan.chunk_oids, source=both,
                                         fact_id=fid, split="probe", wording="paraphrase"))
                next(f for f in unit.facts if f.id == fid).probes = 1
                done.add(fid)


    def _negatives(self, plan: UnitPlan, unit: ReflectionUnit) -> None:
        """Unanswerable questions about real entities: trained to "unknown"; one in five held out."""
        from appliance.memory.format import UNKNOWN

        seen: set[str] = set()
        for n in plan.negatives:
            probe = int(n.id[:8], 16) % 5 == 0
            for i, (q, name) in enumerate(negative_questions(n)):
                if dedup_key(q) in seen:
                    continue
                seen.add(dedup_key(q))
                split = "probe" if probe and i == 1 else "train"
                unit.pairs.append(QAPair(id=_pair_id(unit.unit_id, "unknown", q), kind="unknown", question=q, answer=UNKNOWN,
                                         answer_span=UNKNOWN, doc_ids=[n.doc_id], chunk_oids=plan.chunk_oids,
                                         source=f"{n.subject}: no {n.attribute} ({n.reason})", fact_id=n.id, split=split,
                                         wording=name))


def _stem(word: str) -> str:
    for suffix in ("ership", "ing", "ed", "es", "s", "er"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _stems(text: str) -> set[str]:
    return {_stem(w) for w in content_words(text)}


def _probe_problem(q: str, f: AtomicFact) -> str | None:
    """A probe must still ask for the same thing: the subject and every word of the attribute kept
    (a paraphrase of "based at" into "basis" asks something else)."""
    if f.form != "kv":
        return None
    mine = _stems(q)
    wanted = _stems(f.attribute) | (set() if f.subject_is_title else _stems(f.subject))
    missing = wanted - mine
    return f"probe lost {sorted(missing)[0]!r}" if missing else None


def _unqualified(q: str, title: str) -> str:
    if not title:
        return q
    prefix = wordings.document_prefix(title)
    if q.startswith(prefix):
        rest = q[len(prefix):]
        return rest[0].upper() + rest[1:] if rest else rest
    return q


def _probe_source(mine: list[tuple[str, str]], attempt: int) -> str:
    ordered = [q for q, n in mine if n == "generator"] + [q for q, n in mine if n != "generator"]
    return ordered[attempt % len(ordered)] if ordered else ""


def _takes_seed(model: Any) -> bool:
    import inspect

    try:
        return "seed" in inspect.signature(model.chat_many).parameters
    except (TypeError, ValueError):
        return False


def _value_in_source(value: str, source: str) -> bool:
    v = normalise(value)
    return bool(v) and f" {v} " in f" {normalise(source)} "


def _near_any(q: str, kept: list[tuple[str, str]]) -> bool:
    """A probe must be a wording training does not show: not nearly one of the trained ones."""
    mine = set(normalise(q).split())
    for k, _ in kept:
        theirs = set(normalise(k).split())
        if len(mine & theirs) / max(1, len(mine | theirs)) >= 0.8:
            return True
    return False


def reflect(
    vault: Vault,
    generator: ChatModel,
    params: ReflectParams | None = None,
    actor: str | None = None,
    progress: Callable[[ReflectionUnit, int, int], None] | None = None,
    cancel: threading.Event | None = None,
    limit_units: int | None = None,
    doc_ids: set[str] | None = None,
) -> ReflectReport:
    """Generate every planned unit not yet on disk; prune units no longer planned when complete."""
    params = params or vault.settings.reflect
    actor = actor or current_actor()
    started = time.monotonic()
    plan = plan_units(vault, generator.identity, params, doc_ids)
    on_disk = unit_ids_on_disk(vault)
    todo = [u for u in plan if u.unit_id not in on_disk]
    if limit_units is not None:
        todo = todo[:limit_units]
    vault.audit.append(actor, "reflect.start", None, generator=generator.identity, planned=len(plan), todo=len(todo),
                       prompt_version=prompts.PROMPT_VERSION)
    reflector = Reflector(vault, generator, params)
    pairs = rejected = tokens = 0
    done = 0
    try:
        for i, u in enumerate(todo, start=1):
            if cancel is not None and cancel.is_set():
                raise ReflectCancelled(f"reflection cancelled after {i - 1} of {len(todo)} units; re-run to continue")
            unit = reflector.run(u)
            save_unit(vault, unit)
            done += 1
            pairs += len(unit.pairs)
            rejected += len(unit.rejected)
            tokens += unit.stats.completion_tokens
            if progress:
                progress(unit, i, len(todo))
    finally:
        seconds = time.monotonic() - started
        vault.audit.append(actor, "reflect.finish" if done == len(todo) else "reflect.interrupted", None,
                           generator=generator.identity, units=done, pairs=pairs, rejected=rejected,
                           completion_tokens=tokens, seconds=round(seconds, 2))
    pruned = 0
    if limit_units is None and doc_ids is None:
        stale = unit_ids_on_disk(vault) - {u.unit_id for u in plan}
        for uid in stale:
            vault.delete_file(unit_file(uid))
        pruned = len(stale)
        if pruned:
            vault.audit.append(actor, "reflect.prune", None, units=pruned)
    return ReflectReport(planned=len(plan), generated=done, skipped_done=len(on_disk & {u.unit_id for u in plan}),
                         pruned=pruned, pairs=pairs, rejected=rejected, completion_tokens=tokens, seconds=round(seconds, 3))


def stats(vault: Vault):  # noqa: ANN201
    return compute_stats(load_units(vault))
