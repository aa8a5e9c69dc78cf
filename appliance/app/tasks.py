"""What each scheduled job does, in use cases of the application layer run as the job's session
(the daemon's principal, or the person who ran the job): so a job may do exactly what that
principal may. Every task returns a summary dict; ``did`` says whether it changed anything. A task
calls ``ctx.begin(**details)`` once it knows it has work, which audits ``job.start`` (idle runs are
recorded in the run table but not audited)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from appliance.app.session import Session
from appliance.config import TrainParams
from appliance.errors import MemoError
from appliance.policy import Policy, Schedules
from appliance.vault.store import Vault

TRAINING_TASKS = frozenset({"update", "retrain", "retention"})  # hold the training lock
REFLECTED_FILE = "scheduler/reflected.json"  # doc id -> version the reflect job covered (encrypted in the vault)


@dataclass
class TaskContext:
    session: Session
    policy: Policy
    begin: Callable[..., None]
    progress: Callable[[str], None] = field(default=lambda _t: None)

    @property
    def vault(self) -> Vault:
        return self.session.vault

    @property
    def actor(self) -> str:
        return self.session.principal

    @property
    def schedules(self) -> Schedules:
        assert self.policy.schedules is not None
        return self.policy.schedules


def train_params(ctx: TaskContext) -> TrainParams:
    over = {k: v for k, v in ctx.schedules.training.model_dump().items() if v is not None and k not in ("base_model", "processes")}
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
    """Entries of the inbox not yet handled, unchanged for ``settle`` seconds (copies finished).

    Not only regular files: a symlink, FIFO, socket or device dropped in is listed too, so that
    ingest refuses it and it goes to ``rejected/`` instead of sitting in the inbox for ever.
    Links to folders are never followed.
    """
    out = []
    cutoff = time.time() - settle
    for dirpath, dirnames, filenames in os.walk(inbox, followlinks=False):
        here = Path(dirpath)
        handled = ("ingested", "rejected") if here == inbox else ()
        linked = [d for d in dirnames if (here / d).is_symlink()]
        dirnames[:] = sorted(d for d in dirnames if d not in linked and not d.startswith(".") and d not in handled)
        for name in sorted(filenames + linked):
            p = here / name
            if name.startswith(".") or name in handled:
                continue
            try:
                if p.lstat().st_mtime <= cutoff:
                    out.append(p)
            except FileNotFoundError:
                continue  # taken by another process meanwhile
    return sorted(out)


def _move(path: Path, inbox: Path, folder: str) -> None:
    dest = inbox / folder / path.relative_to(inbox)
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if os.path.lexists(dest):
        dest = dest.with_name(f"{dest.stem}.{time.time_ns()}{dest.suffix}")
    os.replace(path, dest)


def _settle(outcomes: list[Any], inbox: Path, after: str, tally: dict[str, Any]) -> None:
    """Take each file the run has settled out of the inbox: refused ones to ``rejected/`` for a
    person to look at, the rest (now in the vault) deleted or moved to ``ingested/``."""
    for o in outcomes:
        path = o.file
        if path is None or not os.path.lexists(path):
            continue
        try:
            if o.status == "skipped":
                _move(path, inbox, "rejected")
                tally["rejected"] += 1
            elif after == "delete":
                path.unlink()
            else:
                _move(path, inbox, "ingested")
        except OSError as exc:  # left for the next run; the others go on
            tally["left"].append(f"{o.path}: {exc.strerror}")


def ingest_inbox(ctx: TaskContext) -> dict[str, Any]:
    from appliance.app.corpus import ingest

    ctx.session.require("ingest")
    inbox = inbox_path(ctx)
    inbox.mkdir(parents=True, exist_ok=True, mode=0o700)
    files = inbox_files(inbox, ctx.schedules.settle)
    if not files:
        return {"did": False}
    ctx.begin(files=len(files), inbox=str(inbox))
    tally: dict[str, Any] = {"rejected": 0, "left": []}
    report = ingest(ctx.session, files, confine=inbox,
                    on_commit=lambda done: _settle(done, inbox, ctx.schedules.after_ingest, tally))
    summary: dict[str, Any] = {"did": True, **report.summary(), "rejected_to_folder": tally["rejected"]}
    if tally["left"]:
        summary["not_moved"] = tally["left"][:20]
    return summary


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
    from appliance.app.memory import reflect

    ctx.session.require("reflect")
    docs = documents_needing_reflection(ctx.vault)
    if not docs:
        return {"did": False}
    ctx.begin(documents=sorted(docs), generator=ctx.schedules.generator)
    report = reflect(ctx.session, ctx.schedules.generator, doc_ids=set(docs),
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
    from appliance.app.memory import evaluate_candidate
    from appliance.app.memory import update as run_update
    from appliance.memory.train import device
    from appliance.memory.update import changed_documents
    from appliance.memory.versions import promoted

    ctx.session.require("update")
    vault = ctx.vault
    current = promoted(vault)
    if current is None:
        return {"did": False, "reason": "no memory serves yet: the retrain job trains the first one"}
    waiting = _pending_for(vault, current.id)
    resumed = []
    for cand in waiting:  # a run killed between building and evaluating a candidate: finish it
        if "candidate_eval" not in cand.metrics and cand.lineage.get("update_of") == current.id:
            ctx.begin(resume="evaluate", candidate=cand.id)
            evaluate_candidate(ctx.session, cand.id, current.id, progress=ctx.progress)
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
    result = run_update(ctx.session, method, doc_ids=set(docs), params=train_params(ctx), generator=None,
                        progress=_train_progress(ctx), message=ctx.progress)
    return {"did": True, **result.to_dict(), "no_reflections": without}


def retrain(ctx: TaskContext) -> dict[str, Any]:
    """A full retrain from the base on every reflection → a candidate (also the very first memory)."""
    from appliance.app.memory import retrain as run_retrain
    from appliance.approvals.records import pending
    from appliance.memory.train import device, split_probes
    from appliance.memory.update import changed_documents
    from appliance.memory.versions import promoted
    from appliance.reflect.store import load_pairs

    ctx.session.require("update")
    vault = ctx.vault
    current = promoted(vault)
    if any(v.lineage.get("scheduled") == "retrain" for v in pending(vault)):
        return {"did": False, "reason": "a retrained candidate is waiting for approval"}
    if current is not None and current.parent is None and not changed_documents(vault, current.id):
        return {"did": False, "reason": f"{current.id} is already a full training of the current documents"}
    pairs, _ = split_probes(load_pairs(vault))
    if not pairs:
        return {"did": False, "reason": "no reflections yet"}
    ctx.begin(pairs=len(pairs), replaces=current.id if current else None, device=device())
    result = run_retrain(ctx.session, train_params(ctx), ctx.schedules.training.base_model, progress=_train_progress(ctx),
                         processes=ctx.schedules.training.processes,
                         message=ctx.progress, scheduled=True)
    return {"did": True, "candidate": result.candidate.id, "pairs": result.pairs, "replaces": current.id if current else None,
            "retention": result.report.get("retention")}


def retention(ctx: TaskContext) -> dict[str, Any]:
    from appliance.scheduler.retention import apply_retention

    ctx.session.require("jobs.run")
    return apply_retention(ctx.vault, ctx.policy.retention, ctx.actor, begin=ctx.begin)


TASKS: dict[str, Callable[[TaskContext], dict[str, Any]]] = {
    "ingest": ingest_inbox, "reflect": reflect_new, "update": update, "retrain": retrain, "retention": retention,
}

__all__ = ["TASKS", "TRAINING_TASKS", "TaskContext"]
