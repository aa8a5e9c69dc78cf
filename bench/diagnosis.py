"""Benchmark: the diagnosis table of a work vault's promoted memory, with one yardstick for any version.

    .venv/bin/python -m bench.diagnosis --work .memo-bench [--results bench/results/qa/results.json]
                                        [--json bench/results/diagnosis.json]

Works on memories of every layout (those trained before the lean format too), so a "before" and
an "after" vault are measured the same way:

* **coverage** — the corpus's atomic facts (:mod:`appliance.reflect.facts`, the same extraction
  for both) with at least one training pair of the same document whose answer gives the fact's
  value;
* **exposures per fact** — those pairs × the epochs the version trained;
* **training recall** — a seeded sample of the training questions asked back; **held-out
  recall** — the stored probes (whatever the version held out);
* from a ``memo bench`` results file: memo and the memory alone per question kind.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path(".memo-bench"))
    ap.add_argument("--results", type=Path, help="a memo bench results.json for the per-kind rows")
    ap.add_argument("--sample", type=int, default=200)
    ap.add_argument("--json", type=Path, default=Path("bench/results/diagnosis.json"))
    args = ap.parse_args()

    from appliance.demo import open_demo_vault
    from appliance.memory.evaluate import evaluate
    from appliance.memory.serve import open_memory
    from appliance.memory.probes import Probe, split_probes
    from appliance.memory.versions import promoted
    from appliance.reflect.generate import _load_corpus
    from appliance.reflect.store import load_pairs
    from appliance.reflect.validate import normalise

    console = Console()
    vault = open_demo_vault(args.work)
    version = promoted(vault)
    if version is None:
        console.print(f"no promoted memory in {args.work}")
        return 1
    memory = open_memory(vault)
    pairs = load_pairs(vault)
    train, probes = split_probes(pairs)
    epochs = version.metrics.get("epochs") or version.lineage.get("params", {}).get("epochs", 0)
    corpus, _ = _load_corpus(vault)
    by_doc = defaultdict(list)
    for p in train:
        for d in p.doc_ids[:1]:
            by_doc[d].append(f" {normalise(p.answer_span or p.answer)} ")
    exposures: list[int] = []
    facts = covered = 0
    per_doc: dict[str, float] = {}
    for d in corpus:
        n = k = 0
        for f in d.facts:
            if f.form != "kv" and f.form != "span":
                continue
            v = f" {normalise(f.value)} "
            hits = sum(1 for a in by_doc.get(d.doc_id, ()) if v in a or a in v)
            n += 1
            k += hits > 0
            exposures.append(hits * epochs)
        facts, covered = facts + n, covered + k
        if n:
            per_doc[d.doc_id] = round(k / n, 4)
    rng = random.Random(1125)
    sample = rng.sample(train, min(len(train), args.sample))
    trained = evaluate(memory, [Probe(p.question, p.answer_span or p.answer, p.doc_ids, p.kind) for p in sample])
    held = evaluate(memory, probes)
    exp = {"mean": round(statistics.mean(exposures), 1), "median": float(statistics.median(exposures)),
           "min": float(min(exposures)), "max": float(max(exposures))} if exposures else {}
    kinds: dict[str, dict[str, float | None]] = {}
    if args.results and args.results.exists():
        res = json.loads(args.results.read_text())
        for kind in ("single", "multi", "current", "none"):
            kinds[kind] = {name: res["systems"].get(name, {}).get(f"accuracy_{kind}") for name in ("memo", "memory", "bm25", "dense")
                           if name in res["systems"]}
    out = {"version": version.id, "layout": version.lineage.get("format", "legacy"), "facts": facts, "covered": covered,
           "coverage": round(covered / facts, 4) if facts else 0.0, "coverage_per_document": per_doc, "epochs": epochs,
           "exposures": exp, "training_pairs": len(train), "probes": len(probes), "training_recall": trained.contains,
           "held_out_recall": held.contains, "bench": kinds}

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.0%}"

    table = Table("measure", "value", title=f"diagnosis of {version.id} ({out['layout']}) in {args.work}")
    table.add_row("coverage (facts with a trained pair)", f"{covered}/{facts} ({pct(out['coverage'])})")
    table.add_row("exposures per fact (mean / median / min)", f"{exp.get('mean', 0):.0f} / {exp.get('median', 0):.0f} / {exp.get('min', 0):.0f}")
    table.add_row("training pairs, epochs", f"{len(train)}, {epochs}")
    table.add_row(f"training recall ({len(sample)} asked)", pct(trained.contains))
    table.add_row(f"held-out recall ({len(probes)} probes)", pct(held.contains))
    for kind, systems in kinds.items():
        table.add_row(f"bench {kind}: memo / memory alone", f"{pct(systems.get('memo'))} / {pct(systems.get('memory'))}")
    console.print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    console.print(f"written {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
