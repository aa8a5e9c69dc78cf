"""What an approver signs for, as typed models: a version's evaluation reports and its lineage.

The catalog keeps them as the JSON the pipeline wrote (its SHA-256 is what a signature covers, so
the stored form never changes); these models are how everything above reads them — the gate's
quality rules, the CLI, the console — instead of picking keys out of free dicts. Fields the
pipeline adds later are kept (``extra="allow"``) and shown by ``--json``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from appliance.memory.versions import MemoryVersion


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Accuracy(_Open):
    """Share of probes answered by the serving memory (reference) and by the candidate."""

    reference: float | None = None
    candidate: float | None = None


class DocumentDelta(_Open):
    probes: int = 0
    candidate: float | None = None
    reference: float | None = None
    delta: float | None = None


class CandidateReport(_Open):
    """A candidate against the serving memory on held-out probes (appliance.memory.candidate_eval)."""

    reference: str | None = None
    candidate: str | None = None
    probes: dict[str, int] | int | None = None
    retention: float | None = None
    old_accuracy: Accuracy = Field(default_factory=Accuracy)
    acquisition: float | None = None
    new_accuracy_reference: float | None = None
    superseded: Accuracy = Field(default_factory=Accuracy)
    overall: float | None = None
    per_document: dict[str, DocumentDelta] = Field(default_factory=dict)
    seconds: float | None = None


class ForgottenProbe(_Open):
    id: str
    before: bool
    after: bool


class ForgetReport(_Open):
    """A candidate retrained without a forgotten document: its probes before and after (hashes only)."""

    doc_id: str | None = None
    reference: str | None = None
    forgotten_probes: int = 0
    forgotten_answered_before: float | None = None
    forgotten_answered_after: float | None = None
    still_answered: int | None = None
    probes: list[ForgottenProbe] = Field(default_factory=list)
    retained_probes: int = 0
    retained_accuracy: Accuracy = Field(default_factory=Accuracy)
    retention: float | None = None


class Evaluation(_Open):
    """The evidence stored with a version: a candidate report, a forgetting report, or both."""

    candidate_eval: CandidateReport | None = None
    forget_report: ForgetReport | None = None

    @property
    def empty(self) -> bool:
        """No report at all (the gate then asks for one once a version has served)."""
        return self.candidate_eval is None and self.forget_report is None

    @property
    def retention(self) -> float | None:
        """Retention of the old probes: the candidate report's, else the forgetting report's."""
        if self.candidate_eval is not None and self.candidate_eval.retention is not None:
            return self.candidate_eval.retention
        return self.forget_report.retention if self.forget_report is not None else None

    @property
    def superseded(self) -> float | None:
        return self.candidate_eval.superseded.candidate if self.candidate_eval is not None else None


class ProbeOutcome(_Open):
    question: str
    gold: str = ""
    answer: str = ""
    ok: bool = False
    doc_ids: list[str] = Field(default_factory=list)


class MergeLineage(_Open):
    method: str
    peft_combination_type: str | None = None
    density: float | None = None
    old: list[str] = Field(default_factory=list)
    task_vector: str | None = None


class Lineage(_Open):
    """Where a version comes from: its kind, what it updates or replaces, the documents and merge."""

    kind: str | None = None
    merge: MergeLineage | None = None
    update_of: str | None = None
    update_method: str | None = None
    update_documents: list[str] = Field(default_factory=list)
    replaces: str | None = None
    forgotten: list[str] = Field(default_factory=list)
    documents_considered: list[str] = Field(default_factory=list)
    held_out_probes: int | None = None
    scheduled: str | None = None


class VersionReport(BaseModel):
    """One memory version as an approver reviews it."""

    model_config = ConfigDict(frozen=True)

    id: str
    status: str
    method: str
    parent: str | None
    base_model: str
    created_at: str
    created_by: str
    lineage: Lineage
    evaluation: Evaluation
    outcomes: dict[str, list[ProbeOutcome]] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, version: MemoryVersion) -> "VersionReport":
        m = version.metrics
        return cls(id=version.id, status=version.status, method=version.method, parent=version.parent,
                   base_model=version.base_model, created_at=version.created_at, created_by=version.created_by,
                   lineage=Lineage.model_validate(version.lineage), evaluation=evaluation_of(m),
                   outcomes={k: [ProbeOutcome.model_validate(o) for o in v]
                             for k, v in (m.get("candidate_eval_outcomes") or {}).items()},
                   metrics=m)


def evaluation_of(metrics: dict[str, Any]) -> Evaluation:
    return Evaluation.model_validate({k: metrics[k] for k in ("candidate_eval", "forget_report") if metrics.get(k) is not None})
