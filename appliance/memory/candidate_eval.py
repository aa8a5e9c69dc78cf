"""Evaluation of a candidate memory against the version it would replace.

* **retention** — held-out probes of documents the serving memory already knew: of the probes the
  serving memory answered, the share the candidate still answers (and both accuracies);
* **acquisition** — held-out probes of the new or changed documents: the candidate's accuracy;
* **superseded values** — the "… now?" questions of a document that supersedes another: a changed
  policy must answer its new value;
* **per-document deltas** — accuracy per document, candidate minus serving memory.

The report is plain JSON stored with the candidate; its SHA-256 (:func:`report_digest`) is what an
approver signs, so a report changed after approval invalidates the approval.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from appliance.memory.evaluate import ProbeOutcome, evaluate
from appliance.memory.recall import Memory
from appliance.memory.probes import Probe, split_probes
from appliance.reflect.store import QAPair

EVAL_MAX_TOKENS = 64  # the gold span leads the answer; sources may be cut, accuracy is not


@dataclass
class ProbeSets:
    old: list[Probe]
    new: list[Probe]
    superseded: list[Probe]

    def counts(self) -> dict[str, int]:
        return {"old": len(self.old), "new": len(self.new), "superseded": len(self.superseded)}


def probe_sets(pairs: Iterable[QAPair], new_docs: set[str]) -> ProbeSets:
    """Held-out probes split by whether they touch a new document, plus the value-in-force
    questions (``current`` pairs) of the new documents."""
    pairs = list(pairs)
    _, probes = split_probes(pairs)
    old = [p for p in probes if not set(p.doc_ids) & new_docs]
    new = [p for p in probes if set(p.doc_ids) & new_docs]
    superseded = [Probe(p.question, p.answer_span, p.doc_ids, p.kind) for p in pairs
                  if p.kind == "current" and p.answer_span and p.doc_ids and p.doc_ids[0] in new_docs]
    return ProbeSets(old, new, superseded)


def _acc(outcomes: list[ProbeOutcome]) -> float | None:
    return round(sum(o.contains for o in outcomes) / len(outcomes), 4) if outcomes else None


def _per_doc(outcomes: list[ProbeOutcome]) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for o in outcomes:
        for d in o.doc_ids:
            n, k = out.get(d, (0, 0))
            out[d] = (n + 1, k + int(o.contains))
    return out


def _outcomes(model: Memory, probes: list[Probe], batch: int) -> list[ProbeOutcome]:
    return evaluate(model, probes, batch=batch, max_tokens=EVAL_MAX_TOKENS).outcomes if probes else []


def compare(candidate: Memory, reference: Memory | None, sets: ProbeSets, batch: int = 8,
            progress: Callable[[str], None] | None = None, reference_outcomes: dict[str, list[ProbeOutcome]] | None = None
            ) -> dict[str, Any]:
    """The candidate report. ``reference`` is the serving memory (None: nothing served yet)."""
    started = time.monotonic()
    cand: dict[str, list[ProbeOutcome]] = {}
    ref: dict[str, list[ProbeOutcome]] = dict(reference_outcomes or {})
    for name in ("old", "new", "superseded"):
        probes = getattr(sets, name)
        if progress:
            progress(f"candidate: {len(probes)} {name} probes")
        cand[name] = _outcomes(candidate, probes, batch)
        if reference is not None and name not in ref:
            if progress:
                progress(f"serving memory: {len(probes)} {name} probes")
            ref[name] = _outcomes(reference, probes, batch)
    kept = None
    if ref.get("old"):
        answered = [i for i, o in enumerate(ref["old"]) if o.contains]
        kept = round(sum(cand["old"][i].contains for i in answered) / len(answered), 4) if answered else None
    cand_docs = _per_doc(cand["old"] + cand["new"])
    ref_docs = _per_doc(ref.get("old", []) + ref.get("new", []))
    per_document = {}
    for d in sorted(cand_docs):
        n, k = cand_docs[d]
        rn, rk = ref_docs.get(d, (0, 0))
        c_acc, r_acc = round(k / n, 4), (round(rk / rn, 4) if rn else None)
        per_document[d] = {"probes": n, "candidate": c_acc, "reference": r_acc,
                           "delta": round(c_acc - r_acc, 4) if r_acc is not None else None}
    return {
        "candidate": candidate.identity,
        "reference": reference.identity if reference is not None else None,
        "probes": sets.counts(),
        "retention": kept,  # share of the old probes the serving memory answered that the candidate still answers
        "old_accuracy": {"reference": _acc(ref.get("old", [])), "candidate": _acc(cand["old"])},
        "acquisition": _acc(cand["new"]),
        "new_accuracy_reference": _acc(ref.get("new", [])),
        "superseded": {"reference": _acc(ref.get("superseded", [])), "candidate": _acc(cand["superseded"])},
        "overall": _acc(cand["old"] + cand["new"]),
        "per_document": per_document,
        "outcomes": {name: [{"question": o.question, "gold": o.gold, "answer": o.answer[:200], "ok": o.contains,
                             "doc_ids": o.doc_ids} for o in outs] for name, outs in cand.items()},
        "seconds": round(time.monotonic() - started, 1),
    }


def report_digest(report: dict[str, Any] | None) -> str:
    """SHA-256 of the canonical JSON of a report (``none`` when there is no report)."""
    if report is None:
        return "none"
    return hashlib.sha256(json.dumps(report, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
