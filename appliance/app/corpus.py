"""Documents: ingesting them, reading what the vault holds, and forgetting one — its content, its
reflections, the probe texts quoted in stored evaluations and (with a serving memory) a candidate
memory retrained without it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.app.session import Session, use
from appliance.approvals.reports import ForgetReport
from appliance.config import TrainParams
from appliance.corpus import documents as docs
from appliance.corpus.ingest import IngestOutcome, IngestReport
from appliance.corpus.ingest import ingest as run_ingest
from appliance.errors import MemoError


@use("ingest")
def ingest(session: Session, paths: list[Path], progress: Callable[[IngestOutcome, int, int], None] | None = None,
           allow_forgotten: bool = False, confine: Path | None = None,
           on_commit: Callable[[list[IngestOutcome]], None] | None = None,
           cancel: threading.Event | None = None) -> IngestReport:
    """Ingest files and folders (audited file by file as the session's principal)."""
    return run_ingest(session.vault, paths, actor=session.principal, progress=progress, cancel=cancel,
                      allow_forgotten=allow_forgotten, confine=confine, on_commit=on_commit)


@use("docs.list")
def documents(session: Session, include_forgotten: bool = False) -> list[docs.DocumentSummary]:
    return docs.list_documents(session.vault, include_forgotten)


@use("docs.list")
def document(session: Session, doc_id: str) -> docs.DocumentDetail:
    """A document's versions and duplicates (its text: :func:`document_text`)."""
    return docs.show_document(session.vault, doc_id)


@use("docs.text")
def document_text(session: Session, doc_id: str) -> docs.DocumentDetail:
    return docs.show_document(session.vault, doc_id, with_text=True)


@dataclass
class ForgetResult:
    forget: dict[str, Any]  # what the vault destroyed
    evaluation_probes_destroyed: int
    candidate: str | None = None
    report: ForgetReport | None = None
    shown: list[dict[str, Any]] = field(default_factory=list)  # the forgotten questions, for this terminal only


@use("docs.forget")
def forget(session: Session, doc_id: str, candidate: bool | None = None, params: TrainParams | None = None,
           progress: Callable[[Any], None] | None = None, message: Callable[[str], None] | None = None) -> ForgetResult:
    """Forget a document everywhere the appliance keeps what came from it.

    Its probe texts leave every stored evaluation first (signed reports hold only numbers, so
    approvals stay valid), so no crash later in a long retrain can leave them behind; then its
    content and reflections are destroyed, and with ``candidate`` (default: when a memory is
    promoted) a memory is retrained from the base without it, with a before/after probe report.
    """
    from appliance.memory.update import forget_with_candidate, scrub_outcomes
    from appliance.memory.versions import promoted

    vault = session.vault
    detail = docs.show_document(vault, doc_id)  # one line for an unknown id, before anything changes
    if detail.summary.status == "forgotten":
        raise MemoError(f"document {doc_id} was already forgotten")
    serving = promoted(vault)
    if candidate is None:
        candidate = serving is not None
    if candidate and serving is None:
        raise MemoError("no memory is promoted: forget the document without a candidate (--no-candidate)")
    scrubbed = scrub_outcomes(vault, doc_id)
    vault.audit.append(session.principal, "docs.forget.evaluations", doc_id, probe_texts_destroyed=scrubbed)
    if not candidate:
        return ForgetResult(docs.forget_document(vault, doc_id, session.principal), scrubbed)
    res = forget_with_candidate(vault, doc_id, params, actor=session.principal, progress=progress, message=message)
    return ForgetResult(res["forget"], scrubbed, res["candidate"], ForgetReport.model_validate(res["report"]), res["shown"])
