"""Continual updates and forgetting: new candidate memories without a full retrain.

``memo update``: the documents that are new or changed since the serving (promoted) memory's
lineage → their reflections (only those still missing are generated) → an adapter trained *from
the serving memory* on them (the task vector) → merged into the serving memory's task vector with
a peft method (appliance.memory.merge) → a **candidate** version, evaluated against the serving
memory (appliance.memory.candidate_eval) with the report stored beside it. Nothing serves until
approved (appliance.approvals).

``memo docs forget ID``: the document's content and reflections are destroyed, and a candidate is
retrained from the base on the remaining reflections (a negated task vector cannot be shown to
remove a fact, so it is not offered); the forgotten document's probes are put to the serving
memory before and to the candidate after, and the report keeps only keyed hashes of them — the
forgotten text itself is not kept anywhere.

A full retrain (``memo update --method retrain``) stays available for comparison and as the
fallback when the serving memory cannot be merged (a full fine-tune).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from appliance.config import TrainParams, current_actor
from appliance.errors import MemoError
from appliance.memory.merge import MERGE_METHODS, MergeSpec
from appliance.memory.train import StepInfo
from appliance.memory.versions import MemoryVersion, chain, get_version, promoted, set_status, update_metrics
from appliance.vault.store import Vault

UPDATE_METHODS = ("sequential", *MERGE_METHODS, "retrain")
DEFAULT_UPDATE_METHOD = "ties"
DEFAULT_REPLAY = 1.0  # old pairs rehearsed per new pair while the task vector is trained


def replay_sample(old_pairs: list, n_new: int, ratio: float, seed: int) -> list:
    """A seeded sample of the serving memory's training pairs, ``ratio`` × the new ones.

    Trained on new facts alone, an adapter started from the serving memory overwrites what it
    knew (measured: retention 0 % on the test model); rehearsing a few old pairs beside the new
    ones keeps it, at a cost proportional to the update, not to the corpus.
    """
    import random

    from appliance.reflect.store import content_order

    k = min(len(old_pairs), round(ratio * n_new))
    if k <= 0:
        return []
    return random.Random(seed).sample(content_order(old_pairs), k)


@dataclass
class UpdateResult:
    candidate: MemoryVersion
    task_vector: MemoryVersion | None
    documents: list[str]
    pairs: int
    report: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"candidate": self.candidate.id, "task_vector": self.task_vector.id if self.task_vector else None,
                "documents": self.documents, "pairs": self.pairs, "seconds": self.seconds,
                "report": {k: v for k, v in self.report.items() if k != "outcomes"}}


# ---------------------------------------------------------------------------------- what changed
def covered_documents(vault: Vault, version_id: str) -> dict[str, tuple[int | None, str]]:
    """Document id → (document version taken in, if recorded; time of the memory version), over the lineage."""
    out: dict[str, tuple[int | None, str]] = {}
    todo = [version_id]
    seen: set[str] = set()
    while todo:
        vid = todo.pop()
        if vid in seen:
            continue
        seen.add(vid)
        v = get_version(vault, vid)
        known = v.lineage.get("document_versions", {})
        for d in v.lineage.get("documents_considered", []) + v.lineage.get("reflections", {}).get("documents", []):
            mine = (known.get(d), v.created_at)
            out[d] = max(out.get(d, mine), mine, key=lambda x: (x[0] or 0, x[1]))
        merge = v.lineage.get("merge") or {}
        todo += list(merge.get("old", [])) + ([merge["task_vector"]] if merge.get("task_vector") else [])
        if v.parent and v.method != "full" and not v.lineage.get("replaces"):
            todo.append(v.parent)
    return out


def document_versions(vault: Vault, doc_ids: Iterable[str]) -> dict[str, int]:
    from appliance.corpus.documents import list_documents

    wanted = set(doc_ids)
    return {d.id: d.version for d in list_documents(vault) if d.id in wanted}


def changed_documents(vault: Vault, version_id: str) -> list[str]:
    """Current, non-duplicate documents the version has not seen, or that changed after it saw them."""
    from appliance.corpus.documents import list_documents

    covered = covered_documents(vault, version_id)
    out = []
    for d in list_documents(vault):
        if d.duplicate_kind == "exact" or d.chunks == 0:
            continue
        seen_version, when = covered.get(d.id, (None, ""))
        if d.id not in covered or (seen_version is not None and d.version > seen_version) or (
                seen_version is None and d.ingested_at > when):
            out.append(d.id)
    return sorted(out)


def version_documents(vault: Vault, version_id: str) -> set[str]:
    """Every document whose reflections are in the version's weights."""
    return set(covered_documents(vault, version_id))


# ---------------------------------------------------------------------------------- evaluation
class VersionModels:
    """Several LoRA memory versions on one base model load (loading the base is the slow part).

    Each version's lineage adapters are summed exactly into one adapter named after it; any of
    them can then answer through :meth:`chat`, or be merged (appliance.memory.merge).
    """

    def __init__(self, vault: Vault, base_model: str) -> None:
        from appliance.memory.merge import TaskVectorModel
        from appliance.memory.model_io import load_base

        self.vault = vault
        loaded = load_base(vault, base_model)
        self.tokenizer = loaded.tokenizer
        self.tv = TaskVectorModel(loaded.model)

    def add_version(self, version_id: str) -> str:
        from appliance.memory.merge import load_adapter

        parts = chain(self.vault, version_id)
        if any(v.method == "full" for v in parts):
            raise MemoError(f"{version_id} is a full fine-tune: it has no task vector (use --method retrain)")
        names = []
        for v in parts:
            if v.id not in self.tv.adapters:
                self.tv.add(load_adapter(self.vault, v.id))
            names.append(v.id)
        if len(names) == 1:
            return names[0]
        whole = f"{version_id}__all"
        if whole not in self.tv.adapters:
            self.tv.combine(names, whole)
        return whole

    def chat(self, adapter: str, identity: str):  # noqa: ANN201
        from appliance.memory.evaluate import TransformersChat

        self.tv.activate(adapter)
        return TransformersChat(_Active(self.tv, adapter), self.tokenizer, identity)


class _Active:
    """The peft model with one adapter switched on for every call (several may share the model)."""

    def __init__(self, tv, adapter: str) -> None:  # noqa: ANN001
        self.tv, self.adapter = tv, adapter

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        return self.tv.activate(self.adapter).generate(*args, **kwargs)

    def parameters(self):  # noqa: ANN201
        return self.tv.peft.parameters()


def _store_report(vault: Vault, candidate_id: str, report: dict[str, Any], actor: str) -> None:
    """The report (what approvers sign) and, apart, the probe texts (scrubbed when a document is forgotten)."""
    outcomes = report.pop("outcomes", {})
    update_metrics(vault, candidate_id, candidate_eval=report, candidate_eval_outcomes=outcomes)
    vault.audit.append(actor, "memory.evaluate", candidate_id, reference=report.get("reference"), probes=report["probes"],
                       retention=report["retention"], acquisition=report["acquisition"], superseded=report["superseded"])


def evaluate_candidate(vault: Vault, candidate_id: str, reference_id: str | None = None,
                       new_docs: set[str] | None = None, progress: Callable[[str], None] | None = None,
                       actor: str | None = None, models: VersionModels | None = None) -> dict[str, Any]:
    """Evaluate a candidate against the serving memory (default) in transformers; store the report."""
    actor = actor or current_actor()
    candidate = get_version(vault, candidate_id)
    if reference_id is None:
        current = promoted(vault)
        reference_id = current.id if current and current.id != candidate_id else None
    if new_docs is None:
        new_docs = set(candidate.lineage.get("update_documents", []))
    from appliance.memory.candidate_eval import compare, probe_sets
    from appliance.reflect.store import load_pairs

    models = models or VersionModels(vault, candidate.base_model)
    # probes of what either memory was trained on: documents neither has seen say nothing about the change
    scope = version_documents(vault, candidate_id) | new_docs | (version_documents(vault, reference_id) if reference_id else set())
    sets = probe_sets([p for p in load_pairs(vault) if set(p.doc_ids) <= scope], new_docs)
    ref_chat = _chat_for(vault, models, reference_id) if reference_id else None
    report = compare(_chat_for(vault, models, candidate_id), ref_chat, sets, progress=progress)
    report["reference"] = reference_id
    _store_report(vault, candidate_id, report, actor)
    return report


# ---------------------------------------------------------------------------------- update
def merge_version(vault: Vault, old_id: str, task_vector_id: str, spec: MergeSpec, actor: str,
                  extra: dict[str, Any] | None = None, models: VersionModels | None = None) -> MemoryVersion:
    """Merge the old memory's adapters with a task vector into a new version (method ``merge``)."""
    from appliance.memory.model_io import save_adapter
    from appliance.memory.versions import create_version

    old_chain = chain(vault, old_id)
    if any(v.method == "full" for v in old_chain):
        raise MemoError(f"{old_id} is a full fine-tune: it has no task vector to merge into; use --method retrain or sequential")
    tv = get_version(vault, task_vector_id)
    if tv.parent != old_id:
        raise MemoError(f"{task_vector_id} was not trained from {old_id}: it is not a task vector for it")
    models = models or VersionModels(vault, tv.base_model)
    old_name = models.add_version(old_id)
    from appliance.memory.merge import load_adapter

    if task_vector_id not in models.tv.adapters:
        models.tv.add(load_adapter(vault, task_vector_id))
    out = f"merged-{spec.method}-{task_vector_id}"
    models.tv.merge([old_name], task_vector_id, spec, out)
    merged = models.tv.export(out)
    lineage = {**tv.lineage, "kind": "merge", "parent": old_id, "merge": {**spec.to_dict(), "old": [v.id for v in old_chain],
                                                           "task_vector": task_vector_id, "rank": merged.rank}, **(extra or {})}
    version = create_version(vault, old_id, tv.base_model, "merge", actor, lineage)
    save_adapter(vault, version.id, merged.state, merged.config)
    vault.audit.append(actor, "memory.merge", version.id, old=[v.id for v in old_chain], task_vector=task_vector_id,
                       **{k: v for k, v in spec.to_dict().items() if k != "weights"})
    models.tv.combine([out], version.id)  # the stored version, under its own name, for evaluation
    return version


def run_update(vault: Vault, method: str = DEFAULT_UPDATE_METHOD, density: float | None = None,
               doc_ids: set[str] | None = None, params: TrainParams | None = None, generator: str | None = "local",
               actor: str | None = None, progress: Callable[[StepInfo], None] | None = None,
               message: Callable[[str], None] | None = None, evaluate: bool = True,
               replay: float = DEFAULT_REPLAY) -> UpdateResult:
    """New or changed documents since the promoted memory → a candidate version (not served)."""
    from appliance.memory.train import split_probes, train_memory
    from appliance.reflect.store import load_pairs

    actor = actor or current_actor()
    say = message or (lambda _m: None)
    if method not in UPDATE_METHODS:
        raise MemoError(f"unknown update method {method!r}: use one of {', '.join(UPDATE_METHODS)}")
    current = promoted(vault)
    if current is None:
        raise MemoError("no memory is promoted yet: train one (`memo train`), approve and promote it first")
    docs = sorted(doc_ids) if doc_ids else changed_documents(vault, current.id)
    if not docs:
        raise MemoError(f"no new or changed documents since {current.id}: nothing to update")
    timings: dict[str, float] = {}
    started = time.monotonic()
    say(f"{len(docs)} new or changed document(s) since {current.id}")
    if generator is not None:  # None: use the reflections already in the vault
        from appliance.llm.connect import open_model
        from appliance.reflect.generate import reflect

        say("writing their missing reflections")
        reflect(vault, open_model(vault, generator, "generator"), doc_ids=set(docs))
    timings["reflect"] = round(time.monotonic() - started, 1)
    models: VersionModels | None = None
    extra = {"update_documents": docs, "documents_considered": docs, "document_versions": document_versions(vault, docs),
             "update_of": current.id, "update_method": method}
    if method == "retrain":
        pairs = load_pairs(vault)
        train_pairs, probes = split_probes(pairs)
        t = time.monotonic()
        candidate = train_memory(vault, train_pairs, params, base_model=current.base_model, actor=actor, progress=progress,
                                 probes=probes,
                                 lineage_extra={**extra, "held_out_probes": len(probes), "replaces": current.id,
                                                "documents_considered": sorted(version_documents(vault, current.id) | set(docs)),
                                                "document_versions": document_versions(vault, version_documents(vault, current.id) | set(docs))})
        timings["train"] = round(time.monotonic() - t, 1)
        task_vector, n_pairs = None, len(train_pairs)
    else:
        pairs = load_pairs(vault, set(docs))
        train_pairs, probes = split_probes(pairs)
        if not train_pairs:
            raise MemoError(f"the new documents gave no reflections to train on ({', '.join(docs)}); see `memo reflect stats`")
        known = version_documents(vault, current.id) - set(docs)
        old_train, old_probes = split_probes([p for p in load_pairs(vault, known) if not set(p.doc_ids) & set(docs)])
        rehearse = replay_sample(old_train, len(train_pairs), replay, (params or vault.settings.train).seed)
        if rehearse:
            say(f"rehearsing {len(rehearse)} of the serving memory's {len(old_train)} pairs beside {len(train_pairs)} new ones")
        t = time.monotonic()
        # training stops on the new documents' probes *and* the old ones': stopped on the new alone, an
        # update reached its target before it had re-learned what it rehearsed (it then answered old
        # questions with the new facts)
        task_vector = train_memory(vault, train_pairs + rehearse, params, parent=current.id, actor=actor, progress=progress,
                                   probes=probes + old_probes,
                                   lineage_extra={**extra, "kind": "task_vector", "held_out_probes": len(probes),
                                                  "replay": {"ratio": replay, "pairs": len(rehearse)}})
        timings["train"] = round(time.monotonic() - t, 1)
        n_pairs = len(train_pairs)
        if method == "sequential":
            candidate = task_vector
        else:
            t = time.monotonic()
            say(f"merging {task_vector.id} into {current.id} ({method})")
            models = VersionModels(vault, current.base_model)
            candidate = merge_version(vault, current.id, task_vector.id, MergeSpec(method, density), actor, extra, models)
            timings["merge"] = round(time.monotonic() - t, 1)
    set_status(vault, candidate.id, "candidate")
    vault.audit.append(actor, "memory.candidate", candidate.id, update_of=current.id, method=method, documents=docs,
                       task_vector=task_vector.id if task_vector else None)
    report: dict[str, Any] = {}
    if evaluate:
        t = time.monotonic()
        report = evaluate_candidate(vault, candidate.id, current.id, set(docs), progress=say, actor=actor, models=models)
        timings["evaluate"] = round(time.monotonic() - t, 1)
    timings["total"] = round(time.monotonic() - started, 1)
    update_metrics(vault, candidate.id, update_seconds=timings)
    return UpdateResult(get_version(vault, candidate.id), task_vector, docs, n_pairs, report, timings)


# ---------------------------------------------------------------------------------- forgetting
def scrub_outcomes(vault: Vault, doc_id: str) -> int:
    """Drop a forgotten document's probe texts from every stored evaluation; returns how many.

    Only the texts go: the signed reports hold numbers and document ids, so approvals stay valid.
    """
    import json

    dropped = 0
    with vault.transaction() as db:
        for r in db.execute("SELECT id, metrics FROM memory_versions").fetchall():
            metrics = json.loads(r["metrics"])
            outcomes = metrics.get("candidate_eval_outcomes")
            if not outcomes:
                continue
            kept = {k: [o for o in v if doc_id not in o.get("doc_ids", [])] for k, v in outcomes.items()}
            n = sum(map(len, outcomes.values())) - sum(map(len, kept.values()))
            if n:
                dropped += n
                metrics["candidate_eval_outcomes"] = kept
                db.execute("UPDATE memory_versions SET metrics=? WHERE id=?", (json.dumps(metrics), r["id"]))
    return dropped


def _answered(chat: Any, probes: list) -> list[bool]:
    from appliance.memory.candidate_eval import _outcomes

    return [o.contains for o in _outcomes(chat, probes, 8)]


def _chat_for(vault: Vault, models: VersionModels, version_id: str) -> Any:
    """A chat over the version: an adapter on the shared base, or (a full fine-tune) its own load."""
    from appliance.memory.evaluate import TransformersChat
    from appliance.memory.model_io import load_version
    from appliance.memory.recall import for_version

    lineage = get_version(vault, version_id).lineage
    if any(v.method == "full" for v in chain(vault, version_id)):
        loaded = load_version(vault, version_id)
        return for_version(TransformersChat(loaded.model, loaded.tokenizer, version_id), lineage, version_id)
    return for_version(models.chat(models.add_version(version_id), version_id), lineage, version_id)


def forget_probes(pairs: list, doc_id: str) -> list:
    """Every question the memory was taught or tested on whose answer only this document holds.

    Pairs that also cite another document (a relation, a superseding policy's "now" value) are
    destroyed with the document but not probed: the other document may still teach the answer.
    """
    from appliance.memory.probes import Probe

    seen: set[str] = set()
    out = []
    for p in pairs:
        if p.doc_ids == [doc_id] and p.answer_span and p.question not in seen:
            seen.add(p.question)
            out.append(Probe(p.question, p.answer_span, p.doc_ids, p.kind))
    return out


def forget_with_candidate(vault: Vault, doc_id: str, params: TrainParams | None = None, actor: str | None = None,
                          progress: Callable[[StepInfo], None] | None = None,
                          message: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Forget a document and retrain a candidate memory without it, with a before/after probe report.

    The report holds keyed hashes of the forgotten probes, never their text.
    """
    import gc

    from appliance.corpus.documents import forget_document
    from appliance.memory.train import split_probes, train_memory
    from appliance.reflect.store import load_pairs

    actor = actor or current_actor()
    say = message or (lambda _m: None)
    current = promoted(vault)
    if current is None:
        raise MemoError("no memory is promoted: forget the document without a candidate (--no-candidate)")
    forgotten_pairs = load_pairs(vault, {doc_id})
    probes = forget_probes(forgotten_pairs, doc_id)
    known = version_documents(vault, current.id)
    retained_probes = [p for p in split_probes(load_pairs(vault))[1] if doc_id not in p.doc_ids and set(p.doc_ids) <= known]
    say(f"asking the serving memory {current.id} {len(probes)} question(s) about {doc_id} and {len(retained_probes)} about the rest")
    models = VersionModels(vault, current.base_model)
    reference = _chat_for(vault, models, current.id)
    before = _answered(reference, probes)
    kept_before = _answered(reference, retained_probes)
    del reference
    questions_shown = [(p.question, p.answer) for p in probes]  # returned to the caller's terminal only

    result = forget_document(vault, doc_id, actor)
    remaining = load_pairs(vault)
    train_pairs, held_out = split_probes(remaining)
    if not train_pairs:
        raise MemoError(f"{doc_id} is forgotten, but no other reflections remain to retrain a memory on")
    say(f"retraining from the base on the {len(train_pairs)} remaining pairs")
    docs_left = sorted(version_documents(vault, current.id) - {doc_id})
    candidate = train_memory(vault, train_pairs, params, base_model=current.base_model, actor=actor, progress=progress,
                             probes=held_out, lineage_extra={"replaces": current.id, "forgotten": [doc_id], "held_out_probes": len(held_out),
                                            "documents_considered": docs_left,
                                            "document_versions": document_versions(vault, docs_left)})
    set_status(vault, candidate.id, "candidate")
    cand_chat = _chat_for(vault, models, candidate.id)
    after = _answered(cand_chat, probes)
    kept_after = _answered(cand_chat, retained_probes)
    del cand_chat, models
    gc.collect()
    n = len(probes) or 1
    answered_before = [i for i, ok in enumerate(kept_before) if ok]
    report = {
        "doc_id": doc_id,
        "reference": current.id,
        "forgotten_probes": len(probes),
        "forgotten_answered_before": round(sum(before) / n, 4),
        "forgotten_answered_after": round(sum(after) / n, 4),
        "still_answered": sum(after),
        "probes": [{"id": vault.mac(q.encode(), "forgotten-probe")[:16], "before": b, "after": a}
                   for (q, _), b, a in zip(questions_shown, before, after)],
        "retained_probes": len(retained_probes),
        "retained_accuracy": {"reference": round(sum(kept_before) / len(kept_before), 4) if kept_before else None,
                              "candidate": round(sum(kept_after) / len(kept_after), 4) if kept_after else None},
        "retention": round(sum(kept_after[i] for i in answered_before) / len(answered_before), 4) if answered_before else None,
    }
    update_metrics(vault, candidate.id, forget_report=report)
    vault.audit.append(actor, "memory.forget.candidate", candidate.id, doc_id=doc_id, reference=current.id,
                       forgotten_probes=len(probes), answered_before=report["forgotten_answered_before"],
                       answered_after=report["forgotten_answered_after"], retention=report["retention"])
    return {"forget": result, "candidate": candidate.id, "report": report,
            "shown": [{"question": q, "answer": a, "before": b, "after": x} for (q, a), b, x in zip(questions_shown, before, after)]}
