"""What each scheduled task does. Every task returns a summary dict; ``did`` says whether it
changed anything. A task calls ``ctx.begin(**details)`` once it knows it has work, which audits
``job.start`` (idle runs are recorded in the run table but not audited)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from appliance.config import TrainParams
from appliance.errors import MemoError
from appliance.policy import Policy, Schedules
from appliance.vault.store import Vault

TRAINING_TASKS = frozenset({"update", "retrain", "retention"})  # hold the training lock
REFLECTED_FILE = "scheduler/reflected.json"  # doc id -> version the reflect job covered (encrypted in the vault)


@dataclass
class TaskContext:
    vault: Vault
    policy: Policy
    actor: str
    begin: Callable[..., None]
    progress: Callable[[str], None] = field(default=lambda _t: None)

    @property
    def schedules(self) -> Schedules:
        assert self.policy.schedules is not None
        return self.policy.schedules


def train_params(ctx: TaskContext) -> TrainParams:
    over = {k: v for k, v in ctx.schedules.training.model_dump().items() if v is not None and k != "base_model"}
    return replace(ctx.vault.settings.train, **over)


def _train_progress(ctx: TaskContext) -> Callable[[Any], None]:
    last = [0.0]

    def tick(info: Any) -> None:
        if time.monotonic() - last[0] >= 1.0 or info.step == info.total:
            last[0] = time.monotonic()
            ctx.progress(f"step {info.step}/{info.total} loss {info.loss:.3f}")
    return tick


# ------------------------------------------------------------------------------ ingest
def inbox_path(ctx: TaskContext) -> Path:
    inbox = Path(ctx.schedules.inbox).expanduser()
    home = ctx.vault.home.resolve()
    if inbox.resolve().is_relative_to(home) or home.is_relative_to(inbox.resolve()):
        raise MemoError(f"schedules.inbox {inbox} overlaps MEMO_HOME {home}; choose a folder outside it in "
                        f"{ctx.policy.origin.get('schedules')}")
    return inbox


def inbox_files(inbox: Path, settle: int) -> list[Path]:
    """Regular files of the inbox not yet handled, unchanged for ``settle`` seconds (copies finished)."""
    out = []
    cutoff = time.time() - settle
    for p in sorted(inbox.rglob("*")):
        rel = p.relative_to(inbox).parts
        if rel[0] in ("ingested", "rejected") or any(part.startswith(".") for part in rel):
            continue
        if p.is_file() and not p.is_symlink() and p.stat().st_mtime <= cutoff:
            out.append(p)
    return out


def _move(path: Path, inbox: Path, folder: str) -> None:
    dest = inbox / folder / path.relative_to(inbox)
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if dest.exists():
        dest = dest.with_name(f"{dest.stem}.{int(time.time())}{dest.suffix}")
    os.replace(path, dest)


def ingest_inbox(ctx: TaskContext) -> dict[str, Any]:
    from appliance.corpus.ingest import ingest

    ctx.policy.require(ctx.actor, "ingest")
    inbox = inbox_path(ctx)
    inbox.mkdir(parents=True, exist_ok=True, mode=0o700)
    files = inbox_files(inbox, ctx.schedules.settle)
    if not files:
        return {"did": False}
    ctx.begin(files=len(files), inbox=str(inbox))
    files = [p for p in files if p.exists()]  # another process may have taken one meanwhile
    report = ingest(ctx.vault, files, actor=ctx.actor)
    rejected = 0
    for o in report.outcomes:
        path = Path(o.path)
        if not path.exists():
            continue
        if o.status == "skipped":
            _move(path, inbox, "rejected")  # unreadable or unsupported: out of the way, for a person to look at
            rejected += 1
        elif ctx.schedules.after_ingest == "delete":
            path.unlink()
        else:
            _move(path, inbox, "ingested")
    return {"did": True, **report.summary(), "rejected_to_folder": rejected}


# ------------------------------------------------------------------------------ reflect
def documents_needing_reflection(vault: Vault) -> dict[str, int]:
    """Current documents (doc id → version) some of whose current chunks no reflection unit covers."""
    import json

    from appliance.corpus.documents import list_documents
    from appliance.reflect.store import load_units

    docs = {d.id: d.version for d in list_documents(vault) if d.duplicate_kind != "exact" and d.chunks > 0}
    done = json.loads(vault.read_file(REFLECTED_FILE)) if vault.file_exists(REFLECTED_FILE) else {}
    todo = {d: v for d, v in docs.items() if done.get(d) != v}
    if not todo:
        return {}
    with vault.read() as db:
        rows = db.execute("SELECT c.doc_id, c.oid FROM chunks c JOIN versions v ON v.doc_id=c.doc_id AND v.version=c.version "
                          "WHERE v.status='current'").fetchall()
    current: dict[str, set[str]] = {}
    for r in rows:
        current.setdefault(r["doc_id"], set()).add(r["oid"])
    covered = {oid for u in load_units(vault) for oid in u.chunk_oids}
    return {d: v for d, v in todo.items() if not current.get(d, set()) <= covered or d not in current}


def _mark_reflected(vault: Vault, docs: dict[str, int]) -> None:
    import json

    done = json.loads(vault.read_file(REFLECTED_FILE)) if vault.file_exists(REFLECTED_FILE) else {}
    done.update(docs)
    vault.write_file(REFLECTED_FILE, json.dumps(done, sort_keys=True).encode())


def reflect_new(ctx: TaskContext) -> dict[str, Any]:
    from appliance.llm.connect import open_model
    from appliance.reflect.generate import reflect

    docs = documents_needing_reflection(ctx.vault)
    if not docs:
        return {"did": False}
    ctx.begin(documents=sorted(docs), generator=ctx.schedules.generator)
    generator = open_model(ctx.vault, ctx.schedules.generator, "generator")
    report = reflect(ctx.vault, generator, actor=ctx.actor, doc_ids=set(docs),
                     progress=lambda _u, i, n: ctx.progress(f"unit {i}/{n}"))
    _mark_reflected(ctx.vault, docs)
    return {"did": True, "documents": sorted(docs), **report.to_dict()}


# ------------------------------------------------------------------------------ training
def _pending_for(vault: Vault, current_id: str) -> list[Any]:
    from appliance.approvals.records import pending

    return [v for v in pending(vault) if v.lineage.get("update_of") == current_id or v.lineage.get("replaces") == current_id]


def _with_pairs(vault: Vault, docs: list[str]) -> tuple[list[str], list[str]]:
    from appliance.reflect.store import load_pairs

    have = {d for p in load_pairs(vault, set(docs)) if p.kind != "paraphrase" for d in p.doc_ids}
    return [d for d in docs if d in have], [d for d in docs if d not in have]


def update(ctx: TaskContext) -> dict[str, Any]:
    """New documents → update adapter from the serving memory → merged candidate in the approval queue."""
    from appliance.memory.train import device
    from appliance.memory.update import changed_documents, evaluate_candidate, run_update
    from appliance.memory.versions import promoted

    vault = ctx.vault
    current = promoted(vault)
    if current is None:
        return {"did": False, "reason": "no memory serves yet: the retrain job trains the first one"}
    waiting = _pending_for(vault, current.id)
    resumed = []
    for cand in waiting:  # a run killed between building and evaluating a candidate: finish it
        if "candidate_eval" not in cand.metrics and cand.lineage.get("update_of") == current.id:
            ctx.begin(resume="evaluate", candidate=cand.id)
            evaluate_candidate(vault, cand.id, current.id, actor=ctx.actor, progress=ctx.progress)
            resumed.append(cand.id)
    covered = {d for v in waiting for d in v.lineage.get("update_documents", v.lineage.get("documents_considered", []))}
    changed = [d for d in changed_documents(vault, current.id) if d not in covered]
    if documents_needing_reflection(vault).keys() & set(changed):
        return {"did": bool(resumed), "evaluated": resumed, "reason": "waiting for the reflect job", "documents": changed}
    docs, without = _with_pairs(vault, changed)
    if not docs:
        return {"did": bool(resumed), "evaluated": resumed, "reason": "no new documents with reflections",
                "no_reflections": without}
    method = ctx.schedules.update_method
    from appliance.memory.versions import chain

    if method != "retrain" and any(v.method == "full" for v in chain(vault, current.id)):
        method = "retrain"  # a full fine-tune has no task vector to merge into or train from: retrain instead
    ctx.begin(documents=docs, method=method, serving=current.id, device=device())
    result = run_update(vault, method, doc_ids=set(docs), params=train_params(ctx), generator=None, actor=ctx.actor,
                        progress=_train_progress(ctx), message=ctx.progress)
    return {"did": True, **result.to_dict(), "no_reflections": without}


def retrain(ctx: TaskContext) -> dict[str, Any]:
    """A full retrain from the base on every reflection → a candidate (also the very first memory)."""
    from appliance.llm.registry import DEFAULT_MODEL
    from appliance.memory.train import device, split_probes, train_memory
    from appliance.memory.update import changed_documents, document_versions, evaluate_candidate, version_documents
    from appliance.memory.versions import promoted, set_status
    from appliance.reflect.store import load_pairs

    vault = ctx.vault
    current = promoted(vault)
    from appliance.approvals.records import pending

    if any(v.lineage.get("scheduled") == "retrain" for v in pending(vault)):
        return {"did": False, "reason": "a retrained candidate is waiting for approval"}
    if current is not None and current.parent is None and not changed_documents(vault, current.id):
        return {"did": False, "reason": f"{current.id} is already a full training of the current documents"}
    pairs = load_pairs(vault)
    train_pairs, probes = split_probes(pairs)
    if not train_pairs:
        return {"did": False, "reason": "no reflections yet"}
    base = current.base_model if current else (ctx.schedules.training.base_model or DEFAULT_MODEL)
    docs = sorted({d for p in pairs for d in p.doc_ids})
    ctx.begin(pairs=len(train_pairs), base=base, replaces=current.id if current else None, device=device())
    lineage: dict[str, Any] = {"scheduled": "retrain", "held_out_probes": len(probes), "documents_considered": docs,
                               "document_versions": document_versions(vault, docs)}
    if current is not None:
        lineage["replaces"] = current.id
    version = train_memory(vault, train_pairs, train_params(ctx), base_model=base, actor=ctx.actor,
                           progress=_train_progress(ctx), lineage_extra=lineage)
    set_status(vault, version.id, "candidate")
    vault.audit.append(ctx.actor, "memory.candidate", version.id, update_of=current.id if current else None, method="retrain",
                       documents=docs, task_vector=None)
    report: dict[str, Any] = {}
    if current is not None:
        new_docs = set(docs) - version_documents(vault, current.id)
        report = evaluate_candidate(vault, version.id, current.id, new_docs, actor=ctx.actor, progress=ctx.progress)
    return {"did": True, "candidate": version.id, "pairs": len(train_pairs), "replaces": current.id if current else None,
            "retention": report.get("retention")}


def retention(ctx: TaskContext) -> dict[str, Any]:
    from appliance.scheduler.retention import apply_retention

    return apply_retention(ctx.vault, ctx.policy.retention, ctx.actor, begin=ctx.begin)


TASKS: dict[str, Callable[[TaskContext], dict[str, Any]]] = {
    "ingest": ingest_inbox, "reflect": reflect_new, "update": update, "retrain": retrain, "retention": retention,
}

__all__ = ["TASKS", "TRAINING_TASKS", "TaskContext"]
