"""Reflection generation: the corpus turned into question-answer pairs for the memory model.

The plan is derived from the catalog on every run (current, non-duplicate documents), as units:

* **chunk** — for each fact of a chunk and each answer span in it, the generator writes a question
  (``fact``), then rewrites it (``paraphrase``); when the document supersedes another, the
  question is also asked about the value in force ``now`` (``current``), and facts of a superseded
  document say so in their answer;
* **entities** — per document, "what do you know about X" for each name or code (``entity``), so
  the memory can be entered from the entity's side too (the reversal curse);
* **relation** — facts from two documents that share an entity give a question that needs both
  (``relation``), the multi-hop case.

Every answer starts with the short answer, then the self-contained statement it comes from, so it
is supported by the source text by construction; the support check still runs on every pair.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from appliance.config import ReflectParams, current_actor
from appliance.errors import MemoError
from appliance.llm.base import ChatModel, ChatResult
from appliance.reflect import prompts
from appliance.reflect.facts import Fact, facts_from_text
from appliance.reflect.families import DocInfo, Supersession, supersessions
from appliance.reflect.store import (
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
from appliance.reflect.validate import answer_supported, answer_type_problem, clean_question, dedup_key, question_problem
from appliance.vault.store import Vault

ENTITY_KINDS = ("name", "code", "acronym", "key")


class ReflectCancelled(MemoError):
    """Cancelled between units; finished units are stored and a re-run continues."""


@dataclass
class ChunkRef:
    doc_id: str
    title: str
    oid: str
    text: str
    facts: list[Fact]


@dataclass
class UnitPlan:
    unit_id: str
    unit_kind: str
    doc_ids: list[str]
    chunk_oids: list[str]
    chunk: ChunkRef | None = None
    superseded_by: Supersession | None = None
    supersedes: Supersession | None = None
    entity: str | None = None
    entity_facts: list[tuple[Fact, str, str]] = field(default_factory=list)  # (fact, doc_id, chunk oid)
    relations: list[tuple[Fact, str, str, Fact, str, str, str]] = field(default_factory=list)


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


# ---------------------------------------------------------------------------- planning
def _load_corpus(vault: Vault) -> tuple[list[ChunkRef], list[DocInfo]]:
    chunks: list[ChunkRef] = []
    docs: list[DocInfo] = []
    with vault.read() as db:
        versions = db.execute(
            "SELECT v.doc_id, v.version, v.title, v.text_oid, v.ingested_at FROM versions v JOIN documents d ON d.id = v.doc_id "
            "WHERE v.status = 'current' AND d.forgotten_at IS NULL AND v.n_chunks > 0 ORDER BY d.source"
        ).fetchall()
        rows = {
            (r["doc_id"], r["version"]): [c["oid"] for c in db.execute(
                "SELECT oid FROM chunks WHERE doc_id=? AND version=? ORDER BY seq", (r["doc_id"], r["version"]))]
            for r in versions
        }
    for v in versions:
        text = vault.get_object(v["text_oid"]).decode()
        docs.append(DocInfo(v["doc_id"], v["title"], text, v["ingested_at"]))
        for oid in rows[(v["doc_id"], v["version"])]:
            ctext = vault.get_object(oid).decode()
            chunks.append(ChunkRef(v["doc_id"], v["title"], oid, ctext, facts_from_text(ctext, v["title"])))
    return chunks, docs


def plan_units(vault: Vault, generator_identity: str, params: ReflectParams,
               doc_ids: set[str] | None = None) -> list[UnitPlan]:
    """The units for every current document, or only ``doc_ids`` (supersession still sees all)."""
    chunks, docs = _load_corpus(vault)
    sups = supersessions(docs)
    if doc_ids is not None:
        chunks = [c for c in chunks if c.doc_id in doc_ids]
    old = {s.old_id: s for s in sups}
    new = {s.new_id: s for s in sups}
    common = (generator_identity, prompts.PROMPT_VERSION, params.__dict__)
    plans: list[UnitPlan] = []
    for c in chunks:
        sb, sp = old.get(c.doc_id), new.get(c.doc_id)
        uid = _unit_id("chunk", c.oid, c.doc_id, c.title, sb.__dict__ if sb else None, sp.__dict__ if sp else None, common)
        plans.append(UnitPlan(uid, "chunk", [c.doc_id], [c.oid], chunk=c, superseded_by=sb, supersedes=sp))

    by_doc: dict[str, list[ChunkRef]] = {}
    for c in chunks:
        by_doc.setdefault(c.doc_id, []).append(c)
    entity_index: dict[str, list[tuple[Fact, str, str]]] = {}
    for doc_id, doc_chunks in by_doc.items():
        seen_facts: set[str] = set()
        ents: dict[str, list[tuple[Fact, str, str]]] = {}
        for c in doc_chunks:
            for f in c.facts:
                if f.text in seen_facts:
                    continue
                seen_facts.add(f.text)
                for s in f.spans:
                    if s.kind in ENTITY_KINDS and len(s.text) >= 3:
                        ents.setdefault(s.text, []).append((f, doc_id, c.oid))
        for name, refs in ents.items():
            entity_index.setdefault(name, []).extend(refs)
        if ents:
            oids = sorted({o for refs in ents.values() for _, _, o in refs})
            uid = _unit_id("entities", doc_id, sorted((k, [f.text for f, _, _ in v]) for k, v in ents.items()), common)
            plan = UnitPlan(uid, "entities", [doc_id], oids)
            plan.entity_facts = [(f, d, o) for refs in ents.values() for f, d, o in refs]
            plan.entity = json.dumps(sorted(ents))
            plans.append(plan)

    relation_units = 0
    for name, refs in sorted(entity_index.items()):
        docs_with = {d for _, d, _ in refs}
        if len(docs_with) < 2 or relation_units >= params.max_relation_units:
            continue
        rels: list[tuple[Fact, str, str, Fact, str, str, str]] = []
        for f1, d1, o1 in refs:  # f1 holds the answer, f2 names the other end of the bridge
            for f2, d2, o2 in refs:
                if d1 == d2 or len(rels) >= params.relations_per_entity:
                    continue
                answer = next((s.text for s in f1.spans if s.kind in ENTITY_KINDS + ("date", "quantity") and s.text != name
                               and s.text not in f2.text), None)
                if answer and any(s.text != name for s in f2.spans):
                    rels.append((f1, d1, o1, f2, d2, o2, answer))
        if rels:
            uid = _unit_id("relation", name, [(a.text, b.text, ans) for a, _, _, b, _, _, ans in rels], common)
            plan = UnitPlan(uid, "relation", sorted({r[1] for r in rels} | {r[4] for r in rels}),
                            sorted({r[2] for r in rels} | {r[5] for r in rels}), entity=name, relations=rels)
            plans.append(plan)
            relation_units += 1
    return plans


# ---------------------------------------------------------------------------- answers
def compose_answer(span: str, fact: Fact, superseded_by: Supersession | None = None,
                   supersedes: Supersession | None = None) -> str:
    statement = fact.statement.rstrip(".")
    answer = f"{span}. {statement}." if span else f"{statement}."
    if supersedes:
        answer += f" This is in force now: {supersedes.new_title} supersedes {supersedes.old_title}."
    if superseded_by:
        answer += f" No longer in force: {superseded_by.old_title} was superseded by {superseded_by.new_title}."
    return answer


def _now_question(q: str) -> str:
    return q[:-1].rstrip() + " now?"


# ---------------------------------------------------------------------------- running
class Reflector:
    def __init__(self, vault: Vault, generator: ChatModel, params: ReflectParams) -> None:
        self.vault = vault
        self.gen = generator
        self.params = params

    def _ask(self, conversations: list, stats: UnitStats, temperature: float = 0.0) -> list[ChatResult]:  # noqa: ANN001
        if not conversations:
            return []
        results = self.gen.chat_many(conversations, max_tokens=self.params.question_max_tokens, temperature=temperature)
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
        if plan.unit_kind == "chunk":
            self._chunk(plan, unit)
        elif plan.unit_kind == "entities":
            self._entities(plan, unit)
        else:
            self._relations(plan, unit)
        unit.stats.seconds = round(time.monotonic() - started, 3)
        return unit

    def _add(self, unit: ReflectionUnit, seen: set[str], pair: QAPair, source: str, core_answer: str) -> bool:
        if not answer_supported(core_answer, source):
            unit.rejected.append(Rejection(kind=pair.kind, question=pair.question, reason="answer not supported"))
            return False
        key = dedup_key(pair.question)
        if key in seen:
            unit.rejected.append(Rejection(kind=pair.kind, question=pair.question, reason="duplicate"))
            return False
        seen.add(key)
        unit.pairs.append(pair)
        return True

    def _chunk(self, plan: UnitPlan, unit: ReflectionUnit) -> None:
        c = plan.chunk
        assert c is not None
        source = f"{c.title}\n{c.text}"
        jobs = [(f, s.text, s.kind) for f in c.facts for s in f.spans[: self.params.spans_per_fact]]
        results = self._ask([prompts.question_prompt(f.statement, span) for f, span, _ in jobs], unit.stats)
        seen: set[str] = set()
        accepted: list[tuple[str, Fact, str]] = []
        for (fact, span, span_kind), res in zip(jobs, results):
            q = clean_question(res.text)
            problem = question_problem(q, span, fact.statement) or answer_type_problem(q, span_kind)
            if problem:
                unit.rejected.append(Rejection(kind="fact", question=q, reason=problem))
                continue
            core = f"{span}. {fact.statement}"
            answer = compose_answer(span, fact, plan.superseded_by, plan.supersedes)
            pair = QAPair(id=_pair_id(unit.unit_id, "fact", q), kind="fact", question=q, answer=answer, answer_span=span,
                          doc_ids=[c.doc_id], chunk_oids=[c.oid], source=fact.statement)
            if self._add(unit, seen, pair, source, core):
                accepted.append((q, fact, span))
                if plan.supersedes:
                    nq = _now_question(q)
                    self._add(unit, seen, QAPair(id=_pair_id(unit.unit_id, "current", nq), kind="current", question=nq,
                                                 answer=answer, answer_span=span, doc_ids=[c.doc_id, plan.supersedes.old_id],
                                                 chunk_oids=[c.oid], source=fact.statement), source, core)
        if not self.params.paraphrases:
            return
        # greedy decoding mostly echoes the question back: paraphrases are sampled
        results = self._ask([prompts.paraphrase_prompt(q) for q, _, _ in accepted], unit.stats, self.params.paraphrase_temperature)
        for (q, fact, span), res in zip(accepted, results):
            p = clean_question(res.text)
            problem = question_problem(p, span, fact.statement, original=q)
            if problem:
                unit.rejected.append(Rejection(kind="paraphrase", question=p, reason=problem))
                continue
            self._add(unit, seen, QAPair(id=_pair_id(unit.unit_id, "paraphrase", p), kind="paraphrase", question=p,
                                         answer=compose_answer(span, fact, plan.superseded_by, plan.supersedes), answer_span=span,
                                         doc_ids=[c.doc_id], chunk_oids=[c.oid], source=fact.statement),
                      source, f"{span}. {fact.statement}")

    def _entities(self, plan: UnitPlan, unit: ReflectionUnit) -> None:
        by_name: dict[str, list[tuple[Fact, str, str]]] = {}
        for f, d, o in plan.entity_facts:
            for s in f.spans:
                if s.kind in ENTITY_KINDS and len(s.text) >= 3 and (f, d, o) not in by_name.get(s.text, []):
                    by_name.setdefault(s.text, []).append((f, d, o))
        seen: set[str] = set()
        for name, refs in sorted(by_name.items()):
            refs = refs[: self.params.entity_facts]
            statements = [f.statement.rstrip(".") + "." for f, _, _ in refs]
            answer = f"{name}: " + " ".join(statements)
            q = f"What do you know about {name}?"
            self._add(unit, seen, QAPair(id=_pair_id(unit.unit_id, "entity", q), kind="entity", question=q, answer=answer,
                                         answer_span=name, doc_ids=plan.doc_ids, chunk_oids=sorted({o for _, _, o in refs}),
                                         source=" ".join(statements)), " ".join(statements), answer)

    def _relations(self, plan: UnitPlan, unit: ReflectionUnit) -> None:
        rels = plan.relations
        results = self._ask([prompts.relation_prompt(f2.statement, f1.statement, ans) for f1, _, _, f2, _, _, ans in rels], unit.stats)
        seen: set[str] = set()
        for (f1, d1, o1, f2, d2, o2, ans), res in zip(rels, results):
            q = clean_question(res.text)
            both = f"{f1.statement} {f2.statement}"
            problem = question_problem(q, ans, both)
            if not problem and plan.entity and plan.entity.lower() in q.lower() and not (
                    set(q.lower().split()) & (set(f2.text.lower().split()) - set(f1.text.lower().split()))):
                problem = "single hop"
            if problem:
                unit.rejected.append(Rejection(kind="relation", question=q, reason=problem))
                continue
            answer = f"{ans}. {f2.statement.rstrip('.')}. {f1.statement.rstrip('.')}."
            self._add(unit, seen, QAPair(id=_pair_id(unit.unit_id, "relation", q), kind="relation", question=q, answer=answer,
                                         answer_span=ans, doc_ids=sorted({d1, d2}), chunk_oids=sorted({o1, o2}), source=both),
                      both, answer)


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
