"""Reflections, memory training, continual updates, evaluation and export: each the work of the
modules below, run as the session's principal, with the lineage and the audit entries they write.

There is one way to retrain a candidate from the base (:func:`retrain`): the daemon's retrain
job and ``memo update --method retrain`` both take it, so their candidates carry the same lineage.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from appliance.app.session import Session, use
from appliance.approvals.reports import VersionReport
from appliance.config import TrainParams
from appliance.errors import MemoError
from appliance.memory.update import UpdateResult
from appliance.memory.versions import MemoryVersion


# ---------------------------------------------------------------------------------- reflections
@use("reflect")
def reflect(session: Session, generator: Any = "local", progress: Callable[..., None] | None = None,
            limit_units: int | None = None, doc_ids: set[str] | None = None, cancel: threading.Event | None = None) -> Any:
    """Write the reflections still missing with the policy endpoint ``generator`` (or a generator
    model already opened through the policy gate, :func:`open_generator`); resumable."""
    from appliance.reflect.generate import reflect as run_reflect

    model = open_generator(session, generator) if isinstance(generator, str) else generator
    return run_reflect(session.vault, model, actor=session.principal, progress=progress, cancel=cancel,
                       limit_units=limit_units, doc_ids=doc_ids)


@use("reflect")
def open_generator(session: Session, generator: str = "local") -> Any:
    """The policy endpoint ``generator`` opened as a generator: it is sent document text."""
    from appliance.llm.connect import open_model

    return open_model(session.vault, generator, "generator", sends={"document_text"})


@use("reflect.stats")
def reflect_stats(session: Session) -> Any:
    from appliance.reflect.generate import stats

    return stats(session.vault)


@use("reflect.show")
def pairs(session: Session, doc_ids: set[str] | None = None) -> list[Any]:
    from appliance.reflect.store import load_pairs

    return load_pairs(session.vault, doc_ids)


# ---------------------------------------------------------------------------------- training
def _params(session: Session, method: str | None = None, epochs: int | None = None) -> TrainParams:
    base = session.vault.settings.train
    return replace(base, **{k: v for k, v in (("method", method), ("epochs", epochs)) if v})


@dataclass
class Trained:
    version: MemoryVersion
    train_pairs: int
    probes: int
    processes: int = 1


def training_processes(session: Session, requested: int | str | None = None) -> int:
    """How many training processes: the request (a number, or ``auto``: one per visible GPU), else the
    policy's ``schedules.training.processes``, else ``auto`` — the machine decides."""
    from appliance.memory.launch import auto_processes

    if requested is None:
        sch = session.policy().schedules
        requested = sch.training.processes if sch is not None else None
    if requested in (None, "auto"):
        return auto_processes()
    n = int(requested)
    if n < 1:
        raise MemoError(f"--processes must be at least 1 (or auto), not {n}")
    return n


def _train(session: Session, processes: int, **kwargs: Any) -> MemoryVersion:
    """``train_memory`` in one process, or in ``processes`` ranks (this process is rank 0)."""
    from appliance.memory.launch import train_in_processes

    return train_in_processes(session.vault, processes, **kwargs)


@use("train")
def train(session: Session, method: str | None = None, epochs: int | None = None, doc_ids: set[str] | None = None,
          progress: Callable[..., None] | None = None, on_eval: Callable[..., None] | None = None,
          params: TrainParams | None = None, pairs: list[Any] | None = None, processes: int | str | None = None) -> Trained:
    """Train a memory version on the reflections (of ``doc_ids``, or the ``pairs`` given), with
    their held-out probes deciding when to stop; in ``processes`` ranks (:func:`training_processes`)."""
    from appliance.memory.train import split_probes
    from appliance.reflect.store import load_pairs

    train_pairs, probes = split_probes(pairs if pairs is not None else load_pairs(session.vault, doc_ids))
    n = training_processes(session, processes)
    version = _train(session, n, pairs=train_pairs, params=params or _params(session, method, epochs), actor=session.principal,
                     progress=progress, probes=probes, on_eval=on_eval, lineage_extra={"held_out_probes": len(probes)})
    return Trained(version, len(train_pairs), len(probes), n)


@use("update")
def retrain(session: Session, params: TrainParams | None = None, base_model: str | None = None,
            progress: Callable[..., None] | None = None, message: Callable[[str], None] | None = None,
            scheduled: bool = False, processes: int | str | None = None) -> UpdateResult:
    """A full retrain from the base on every reflection → a candidate (also the very first memory),
    evaluated against the serving memory when there is one; in ``processes`` ranks (:func:`training_processes`)."""
    from appliance.llm.registry import DEFAULT_MODEL
    from appliance.memory.train import split_probes
    from appliance.memory.update import document_versions, evaluate_candidate, version_documents
    from appliance.memory.versions import get_version, promoted, set_status, update_metrics
    from appliance.reflect.store import load_pairs

    vault, say = session.vault, message or (lambda _m: None)
    started = time.monotonic()
    current = promoted(vault)
    all_pairs = load_pairs(vault)
    train_pairs, probes = split_probes(all_pairs)
    if not train_pairs:
        raise MemoError("no reflections to train on: run `memo reflect` first")
    base = current.base_model if current else (base_model or DEFAULT_MODEL)
    docs = sorted({d for p in all_pairs for d in p.doc_ids})
    new_docs = sorted(set(docs) - version_documents(vault, current.id)) if current else docs
    lineage: dict[str, Any] = {"update_method": "retrain", "held_out_probes": len(probes), "documents_considered": docs,
                               "document_versions": document_versions(vault, docs)}
    if current is not None:
        lineage.update(replaces=current.id, update_of=current.id)
    if scheduled:
        lineage["scheduled"] = "retrain"
    say(f"retraining from {base} on {len(train_pairs)} pairs of {len(docs)} document(s)")
    version = _train(session, training_processes(session, processes), pairs=train_pairs, params=params, base_model=base,
                     actor=session.principal, progress=progress, lineage_extra=lineage, probes=probes)
    set_status(vault, version.id, "candidate")
    vault.audit.append(session.principal, "memory.candidate", version.id, update_of=current.id if current else None,
                       method="retrain", documents=docs, task_vector=None)
    timings = {"train": round(time.monotonic() - started, 1)}
    report: dict[str, Any] = {}
    if current is not None:
        t = time.monotonic()
        report = evaluate_candidate(vault, version.id, current.id, set(new_docs), progress=say, actor=session.principal)
        timings["evaluate"] = round(time.monotonic() - t, 1)
    timings["total"] = round(time.monotonic() - started, 1)
    update_metrics(vault, version.id, update_seconds=timings)
    return UpdateResult(get_version(vault, version.id), None, new_docs, len(train_pairs), report, timings)


@use("update")
def update(session: Session, method: str, density: float | None = None, doc_ids: set[str] | None = None,
           epochs: int | None = None, generator: str | None = "local", progress: Callable[..., None] | None = None,
           message: Callable[[str], None] | None = None, evaluate: bool = True, replay: float = 1.0,
           params: TrainParams | None = None) -> UpdateResult:
    """New or changed documents → their reflections → a candidate memory (served only once approved)."""
    from appliance.memory.update import changed_documents, run_update
    from appliance.memory.versions import promoted

    params = params or _params(session, epochs=epochs)
    if method != "retrain":
        return run_update(session.vault, method, density, doc_ids, params, generator, actor=session.principal,
                          progress=progress, message=message, evaluate=evaluate, replay=replay)
    current = promoted(session.vault)
    if current is None:
        raise MemoError("no memory is promoted yet: train one (`memo train`), approve and promote it first")
    docs = sorted(doc_ids) if doc_ids else changed_documents(session.vault, current.id)
    if not docs:
        raise MemoError(f"no new or changed documents since {current.id}: nothing to update")
    if generator is not None:
        from appliance.llm.connect import open_model
        from appliance.reflect.generate import reflect as run_reflect

        (message or (lambda _m: None))("writing their missing reflections")
        run_reflect(session.vault, open_model(session.vault, generator, "generator"), actor=session.principal, doc_ids=set(docs))
    return retrain(session, params, progress=progress, message=message)


# ---------------------------------------------------------------------------------- evaluation
@dataclass
class Evaluated:
    target: str  # a version id, or "base"
    report: Any  # appliance.memory.evaluate.EvalReport
    diagnosis: Any | None  # appliance.memory.diagnosis.Diagnosis


@use("evaluate")
def evaluate(session: Session, version_id: str | None = None, base: bool = False,
             progress: Callable[[int, int], None] | None = None) -> Evaluated:
    """Held-out probes against a version (default: the promoted one) or the untrained base; the
    result is stored with the version and audited (``memory.eval``)."""
    from appliance.llm.connect import open_model
    from appliance.memory.diagnosis import diagnose
    from appliance.memory.evaluate import evaluate as run_eval
    from appliance.memory.recall import Memory
    from appliance.memory.serve import open_memory
    from appliance.memory.train import split_probes
    from appliance.memory.versions import get_version, promoted, update_metrics
    from appliance.reflect.store import load_pairs

    vault = session.vault
    version = None
    if base:
        model, target = Memory(open_model(vault, "local", "generator")), "base"
    else:
        version = get_version(vault, version_id) if version_id else promoted(vault)
        if version is None:
            raise MemoError("no memory version given and none promoted")
        model, target = open_memory(vault, version.id), version.id
    all_pairs = load_pairs(vault)
    _, probes = split_probes(all_pairs)
    report = run_eval(model, probes, progress)
    diagnosis = diagnose(vault, model, version, all_pairs, report) if version is not None else None
    if version is not None:
        update_metrics(vault, target, eval={k: v for k, v in report.to_dict().items() if k != "per_document"},
                       eval_per_document=report.per_document)
    vault.audit.append(session.principal, "memory.eval", target, probes=report.probes, contains=report.contains,
                       exact=report.exact)
    return Evaluated(target, report, diagnosis)


@use("evaluate")
def evaluate_candidate(session: Session, version_id: str, reference: str | None = None, new_docs: set[str] | None = None,
                       progress: Callable[[str], None] | None = None) -> VersionReport:
    """(Re-)evaluate a candidate against the serving memory; the report is stored with it (audited)."""
    from appliance.memory.update import evaluate_candidate as run
    from appliance.memory.versions import get_version

    run(session.vault, version_id, reference, new_docs, progress=progress, actor=session.principal)
    return VersionReport.of(get_version(session.vault, version_id))


@use("export")
def export(session: Session, version_id: str, types: Sequence[str] | None = None, min_agreement: float = 0.9) -> dict[str, Any]:
    """GGUF files of a version into the vault, each verified against transformers (refused ones named)."""
    from appliance.export.pipeline import DEFAULT_TYPES, export_version

    return export_version(session.vault, version_id, tuple(types) if types else DEFAULT_TYPES, min_agreement,
                          actor=session.principal)


# ---------------------------------------------------------------------------------- versions
@use("memory.list")
def versions(session: Session) -> list[VersionReport]:
    from appliance.memory.versions import list_versions

    return [VersionReport.of(v) for v in list_versions(session.vault)]


@use("memory.list")
def version(session: Session, version_id: str) -> VersionReport:
    from appliance.memory.versions import get_version

    return VersionReport.of(get_version(session.vault, version_id))
