"""Benchmark: where the memory's confidence separates what it knows from what it would make up.

    .venv/bin/python -m bench.abstention --work .memo-bench [--unanswerable bench/calibration/halq-wiki.unanswerable.jsonl]
                                         [--json bench/results/abstention.json]

The promoted memory of a work vault (demo layout) is asked its held-out probes (the corpus gives
their answers) and a calibration set of questions the corpus does not answer (real entities,
attributes it never gives — kept apart from the development set's ``none`` questions, which are
for scoring only). Each answer is checked as the executive checks it
(:func:`appliance.executive.agent.checked`): withheld when the memory says ``unknown``, when no
document states its value, or when it is less sure than the threshold — ``abstain_below`` for an
answer its own citation backs, at least ``uncited_below`` for one whose citation was corrected to
the document that states the value. For each ``abstain_below`` the table shows the share of
correct answers kept, wrong answers withheld and unanswerable questions abstained, with the
corpus check (the protocol) and with the citation check alone (the protocol before it): the curve
``ExecutiveParams``' thresholds are read from. "score" is correct kept + unanswerable abstained
(the memory's own ``unknown`` probes count as unanswerable).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

THRESHOLDS = (0.01, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
UNCITED = (0.01, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path(".memo-bench"))
    ap.add_argument("--unanswerable", type=Path, default=Path("bench/calibration/halq-wiki.unanswerable.jsonl"))
    ap.add_argument("--json", type=Path, default=Path("bench/results/abstention.json"))
    args = ap.parse_args()

    from appliance.demo import open_demo_vault
    from appliance.executive.agent import ExecutiveParams, checked, sure
    from appliance.executive.grounding import SourceCheck
    from appliance.memory.evaluate import score
    from appliance.memory.serve import open_memory
    from appliance.memory.train import split_probes
    from appliance.reflect.store import load_pairs

    console = Console(width=150)
    vault = open_demo_vault(args.work)
    memory = open_memory(vault)
    _, probes = split_probes(load_pairs(vault))
    check = SourceCheck(vault)
    questions = [json.loads(line)["question"] for line in args.unanswerable.read_text().splitlines() if line.strip()]

    def ask(qs: list[str]) -> list:  # noqa: ANN001
        return [checked(r, check) for i in range(0, len(qs), 16) for r in memory.ask(qs[i : i + 16])]

    answered = list(zip(probes, ask([p.question for p in probes])))
    right = [s for p, s in answered if p.kind != "unknown" and score(s.answer, p.answer)[0]]
    wrong = [s for p, s in answered if p.kind != "unknown" and not score(s.answer, p.answer)[0]]
    none = [s for p, s in answered if p.kind == "unknown"] + ask(questions)
    default = ExecutiveParams()
    rows = []
    table = Table("abstain_below", "correct kept", "wrong withheld", "unanswerable abstained", "score",
                  "citation only: kept", "withheld", "abstained", "score",
                  title=f"{memory.version}: {len(right)} probes right, {len(wrong)} wrong; {len(none)} unanswerable "
                        f"(uncited_below {default.uncited_below})")
    for t in THRESHOLDS:
        p = replace(default, abstain_below=t)
        row: dict[str, float | int] = {"abstain_below": t}
        for name, keep in (("", lambda s: sure(s, p)), ("citation_only_", lambda s: sure(s, p) and s.cited is True)):
            row |= {f"{name}{k}": v for k, v in _rates(keep, right, wrong, none).items()}
        rows.append(row)
        table.add_row(f"{t:.2f}", *(f"{v:.0%}" if isinstance(v, float) else str(v) for v in list(row.values())[1:]))
    console.print(table)
    second = Table("uncited_below", "correct kept", "wrong withheld", "unanswerable abstained", "score",
                   title=f"abstain_below {default.abstain_below}: what an answer whose citation was corrected must reach")
    uncited_rows = []
    for t in UNCITED:
        p = replace(default, uncited_below=t)
        uncited_rows.append({"uncited_below": t} | _rates(lambda s: sure(s, p), right, wrong, none))
        second.add_row(f"{t:.2f}", *(f"{v:.0%}" if isinstance(v, float) else str(v) for v in list(uncited_rows[-1].values())[1:]))
    console.print(second)
    for s in none[-len(questions):]:
        stated = "unknown" if s.grounded is None else "cited" if s.cited else "corrected" if s.grounded else "unstated"
        console.print(f"  [dim]{s.confidence:.2f} {stated}[/] {s.question} → {s.answer}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"version": memory.version, "uncited_below": default.uncited_below,
                                     "probes_right": len(right), "probes_wrong": len(wrong), "unanswerable": len(none),
                                     "rows": rows, "uncited_rows": uncited_rows,
                                     "calibration": [{"question": s.question, "answer": s.answer, "confidence": s.confidence,
                                                      "cited": s.cited, "grounded": s.grounded}
                                                     for s in none[-len(questions):]]}, indent=2) + "\n")
    return 0


def _rates(keep: Callable[[Any], bool], right: list, wrong: list, none: list) -> dict[str, float | int]:
    """Shares of right answers kept, wrong ones withheld and unanswerable questions abstained; score = kept + abstained."""
    kept, withheld, abstained = sum(map(keep, right)), sum(not keep(s) for s in wrong), sum(not keep(s) for s in none)
    return {"correct_kept": kept / max(len(right), 1), "wrong_withheld": withheld / max(len(wrong), 1),
            "unanswerable_abstained": abstained / max(len(none), 1), "score": kept + abstained}


if __name__ == "__main__":
    raise SystemExit(main())
