"""Benchmark: today's corpus check replayed on a `memo bench` run's answers, without retraining.

    .venv/bin/python -m bench.grounding_replay --predictions bench/results/qa/predictions.jsonl
                                               [--corpus appliance/samples/halq-wiki]
                                               [--json bench/results/grounding_replay.json]

A dev-bench run takes hours on two cores, most of it training; a change to the executive's check
of the memory's value (:mod:`appliance.executive.grounding`) does not change what the memory says.
So: the corpus is ingested into a throwaway vault (real encryption, a real catalog), and each
`memo` answer of the predictions file that the run's check passed — the sub-answer it gave — is
checked again with today's :meth:`SourceCheck.about`. An answer it no longer passes counts as an
abstention (right for `none`, wrong otherwise). Approximations, said plainly: the run's vault keyed
its document ids differently, so the answer's citation is taken as "every current document" (the
check can only be looser than with the real citation); and a rejected first answer would send the
live protocol to its bridge hops, which may still find a checked answer — the replay counts none.
Prints per kind before → after and each changed answer; writes JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

CORPUS = Path(__file__).resolve().parents[1] / "appliance" / "samples" / "halq-wiki"


def replay(predictions: Path, corpus: Path) -> dict[str, Any]:
    from appliance.config import KdfParams, Settings
    from appliance.corpus.documents import list_documents
    from appliance.corpus.ingest import ingest
    from appliance.executive.grounding import SourceCheck, core_value
    from appliance.reflect.validate import normalise
    from appliance.vault.keys import Secret
    from appliance.vault.store import Vault

    with tempfile.TemporaryDirectory(prefix="memo-replay-") as tmp:
        settings = Settings(home=Path(tmp) / "home", kdf=KdfParams(memory_kib=1024, iterations=1, lanes=1))
        vault = Vault.init(settings, Secret(passphrase="grounding replay only"), actor="bench")
        ingest(vault, sorted(p for p in corpus.rglob("*") if p.is_file()))
        docs = [d.id for d in list_documents(vault)]
        check = SourceCheck(vault)
        total, before, after = Counter(), Counter(), Counter()
        changed: list[dict[str, Any]] = []
        for line in predictions.read_text().splitlines():
            r = json.loads(line)
            if r.get("system") != "memo":
                continue
            kind = r["kind"]
            total[kind] += 1
            before[kind] += bool(r["correct"])
            said = normalise(r["prediction"])
            given = [s for s in r["sub_questions"] if s.get("grounded") and normalise(core_value(s["answer"])) in said]
            if "does not know" in r["prediction"].lower() or not given:
                after[kind] += bool(r["correct"])
                continue
            sub = max(given, key=lambda s: s["confidence"])
            if check.about(sub["question"], sub["answer"], docs):
                after[kind] += bool(r["correct"])
            else:
                after[kind] += kind == "none"
                changed.append({"id": r["id"], "kind": kind, "question": r["question"], "answer": sub["answer"],
                                "was_correct": bool(r["correct"]), "now_correct": kind == "none"})
    kinds = {k: {"questions": total[k], "before": before[k], "after": after[k]} for k in sorted(total)}
    return {"predictions": str(predictions), "corpus": str(corpus), "kinds": kinds,
            "all": {"questions": sum(total.values()), "before": sum(before.values()), "after": sum(after.values())},
            "changed": changed}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--predictions", type=Path, required=True)
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--json", type=Path, default=Path("bench/results/grounding_replay.json"))
    args = ap.parse_args()
    result = replay(args.predictions, args.corpus)
    table = Table(title=f"memo answers of {args.predictions}, today's corpus check replayed")
    for col in ("kind", "questions", "right before", "right after"):
        table.add_column(col)
    for kind, row in [*result["kinds"].items(), ("all", result["all"])]:
        n = row["questions"]
        table.add_row(kind, str(n), f"{row['before']} ({row['before'] / n:.1%})", f"{row['after']} ({row['after'] / n:.1%})")
    console = Console(width=140)
    console.print(table)
    for c in result["changed"]:
        console.print(f"  {c['kind']}: {'right' if c['was_correct'] else 'wrong'} → {'right' if c['now_correct'] else 'wrong'}  "
                      f"{c['question']} → {c['answer']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(args.json.read_text()) if args.json.exists() else {}
    existing[str(args.predictions)] = result
    args.json.write_text(json.dumps(existing, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
