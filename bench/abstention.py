"""Benchmark: where the memory's confidence separates what it knows from what it would make up.

    .venv/bin/python -m bench.abstention --work .memo-bench [--unanswerable bench/calibration/halq-wiki.unanswerable.jsonl]
                                         [--json bench/results/abstention.json]

The promoted memory of a work vault (demo layout) is asked its held-out probes (the corpus gives
their answers) and a calibration set of questions the corpus does not answer (real entities,
attributes it never gives — kept apart from the development set's ``none`` questions, which are
for scoring only). An answer is withheld, as the executive withholds it, when the memory says
``unknown``, when its value is not in a document it cites (``appliance.executive.grounding``), or
when its confidence is below the threshold. For each threshold the table shows the share of
correct answers kept, wrong answers withheld, and unanswerable questions abstained: the curve that
``ExecutiveParams.abstain_below`` is chosen from.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

THRESHOLDS = (0.01, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path(".memo-bench"))
    ap.add_argument("--unanswerable", type=Path, default=Path("bench/calibration/halq-wiki.unanswerable.jsonl"))
    ap.add_argument("--json", type=Path, default=Path("bench/results/abstention.json"))
    args = ap.parse_args()

    from appliance.demo import open_demo_vault
    from appliance.executive.grounding import SourceCheck
    from appliance.memory.evaluate import evaluate
    from appliance.memory.format import is_unknown
    from appliance.memory.serve import open_memory
    from appliance.memory.train import split_probes
    from appliance.reflect.store import load_pairs

    console = Console()
    vault = open_demo_vault(args.work)
    memory = open_memory(vault)
    _, probes = split_probes(load_pairs(vault))
    check = SourceCheck(vault)

    def score(answer: str, sources: list[str], conf: float) -> float:
        """The confidence the executive acts on: 0 for "unknown" and for an answer its citations do not state."""
        return 0.0 if is_unknown(answer) or not check(answer, sources) else conf

    answered = [o for o in evaluate(memory, probes).outcomes if o.kind != "unknown"]
    questions = [json.loads(line)["question"] for line in args.unanswerable.read_text().splitlines() if line.strip()]
    unknown = memory.ask(questions)
    right = [score(o.answer, o.sources, o.confidence) for o in answered if o.contains]
    wrong = [score(o.answer, o.sources, o.confidence) for o in answered if not o.contains]
    none = [score(r.answer, r.sources, r.confidence) for r in unknown]
    rows = []
    table = Table("threshold", "correct kept", "wrong withheld", "unanswerable abstained",
                  title=f"{memory.version}: {len(right)} probes right, {len(wrong)} wrong; {len(none)} unanswerable questions")
    for t in THRESHOLDS:
        row = {"threshold": t, "correct_kept": _share(right, t, above=True), "wrong_withheld": _share(wrong, t, above=False),
               "unanswerable_abstained": _share(none, t, above=False)}
        rows.append(row)
        table.add_row(f"{t:.2f}", *(f"{row[k]:.0%}" if row[k] is not None else "-" for k in list(row)[1:]))
    console.print(table)
    for r, c in zip(unknown, none):
        console.print(f"  [dim]{c:.2f}[/] {r.question} → {r.answer}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"version": memory.version, "rows": rows, "right": right, "wrong": wrong,
                                     "unanswerable": [{"question": r.question, "answer": r.answer, "confidence": r.confidence, "acted_on": c}
                                                      for r, c in zip(unknown, none)]}, indent=2) + "\n")
    return 0


def _share(xs: list[float], t: float, above: bool) -> float | None:
    if not xs:
        return None
    return sum((x >= t) if above else (x < t) for x in xs) / len(xs)


if __name__ == "__main__":
    raise SystemExit(main())
