"""Why a memory answers what it answers, as numbers: the diagnosis table of ``memo eval`` and ``memo bench``.

* **coverage** — the share of the corpus's atomic facts with at least one trained wording (a fact
  the memory was never taught cannot be recalled);
* **exposures** — how often training showed each fact (wordings × epochs): storage needs many;
* **training recall** — training questions asked back (did it store the fact at all?);
* **held-out recall** — the probes, wordings it never saw (can it retrieve the fact when asked
  differently?);
* per kind of reflection, and — from a benchmark — memo against the memory alone per question kind
  (does the executive lose what the memory knew?).
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from appliance.memory.evaluate import EvalReport, evaluate
from appliance.memory.recall import Memory
from appliance.memory.probes import Probe, split_probes
from appliance.memory.versions import MemoryVersion
from appliance.reflect.store import QAPair, content_order, load_units
from appliance.vault.store import Vault


@dataclass
class KindRow:
    kind: str
    facts: int = 0
    training_pairs: int = 0
    probes: int = 0
    training_recall: float | None = None
    held_out_recall: float | None = None


@dataclass
class Diagnosis:
    version: str
    facts: int
    covered: int
    coverage: float
    coverage_per_document: dict[str, float]
    exposures: dict[str, float]
    epochs: int | None
    training_recall: float | None
    held_out_recall: float | None
    per_kind: list[KindRow] = field(default_factory=list)
    bench: dict[str, dict[str, float | None]] = field(default_factory=dict)  # question kind → system → accuracy

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def coverage(vault: Vault) -> tuple[int, int, dict[str, float]]:
    """(facts, facts with a trained wording, per-document share) over the stored reflection units."""
    per_doc: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    seen: set[str] = set()
    for unit in load_units(vault):
        for f in unit.facts:
            if f.form == "composed" or f.id in seen:
                continue
            seen.add(f.id)
            per_doc[f.doc_id][0] += 1
            per_doc[f.doc_id][1] += int(f.trained > 0)
    facts = sum(n for n, _ in per_doc.values())
    covered = sum(k for _, k in per_doc.values())
    return facts, covered, {d: round(k / n, 4) for d, (n, k) in sorted(per_doc.items()) if n}


def _acc(outcomes: list) -> float | None:  # noqa: ANN001
    return round(sum(o.contains for o in outcomes) / len(outcomes), 4) if outcomes else None


def diagnose(vault: Vault, memory: Memory, version: MemoryVersion, pairs: list[QAPair], held_out: EvalReport,
             training_sample: int = 240, seed: int = 1125) -> Diagnosis:
    """The diagnosis of one memory version; ``held_out`` is its evaluation on the probes."""
    train, _ = split_probes(pairs)
    rng = random.Random(seed)
    sample = rng.sample(content_order(train), min(len(train), training_sample))
    trained = evaluate(memory, [Probe(p.question, p.answer_span or p.answer, p.doc_ids, p.kind) for p in sample])
    facts, covered, per_doc = coverage(vault)
    rows: dict[str, KindRow] = {}
    fact_ids: dict[str, set[str]] = defaultdict(set)
    for p in train:
        row = rows.setdefault(p.kind, KindRow(p.kind))
        row.training_pairs += 1
        fact_ids[p.kind].add(p.fact_id or p.id)
    for o in held_out.outcomes:
        rows.setdefault(o.kind or "fact", KindRow(o.kind or "fact")).probes += 1
    for kind, row in rows.items():
        row.facts = len(fact_ids.get(kind, ()))
        row.training_recall = _acc([o for o in trained.outcomes if o.kind == kind])
        row.held_out_recall = _acc([o for o in held_out.outcomes if (o.kind or "fact") == kind])
    m = version.metrics
    return Diagnosis(version.id, facts, covered, round(covered / facts, 4) if facts else 0.0, per_doc,
                     m.get("exposures") or {}, m.get("epochs"), trained.contains, held_out.contains,
                     sorted(rows.values(), key=lambda r: r.kind))


def diagnosis_table(d: Diagnosis):  # noqa: ANN201
    from rich.table import Table

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.0%}"

    exp = d.exposures
    title = (f"{d.version}: coverage {d.covered}/{d.facts} facts ({d.coverage:.0%}); exposures per fact "
             f"mean {exp.get('mean', 0):.0f}, min {exp.get('min', 0):.0f}; {d.epochs or '?'} epochs; "
             f"training recall {pct(d.training_recall)}, held-out recall {pct(d.held_out_recall)}")
    table = Table("reflection kind", "facts", "training pairs", "probes", "training recall", "held-out recall", title=title,
                  title_justify="left")
    for r in d.per_kind:
        table.add_row(r.kind, str(r.facts), str(r.training_pairs), str(r.probes), pct(r.training_recall), pct(r.held_out_recall))
    if d.bench:
        for kind, systems in d.bench.items():
            table.add_row(f"bench: {kind}", "", "", "", "memo " + pct(systems.get("memo")), "memory alone " + pct(systems.get("memory")))
    return table
