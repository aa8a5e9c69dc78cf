"""Benchmark: a `memo bench` run's stored answers scored again with today's scoring rule.

    .venv/bin/python -m bench.rescore --predictions bench/results/qa-8b0e17a/predictions.jsonl
                                      [--json bench/results/qa-8b0e17a/rescored.json]

The scoring rule (:mod:`appliance.bench.scoring`) is applied identically to every system, but it
changes now and then (a bare-number alias no longer credits a wrong unit); a run's stored results
keep the rule of their day. This scores each stored answer again — nothing is asked or retrained —
prints every answer whose verdict changed and the per-kind table under today's rule, and writes
JSON, so that runs before and after a rule change are compared under one rule.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console


def rescore(predictions: Path) -> dict[str, Any]:
    from appliance.bench.harness import _read_jsonl, score_row, summarise

    rows = _read_jsonl(predictions)
    if not rows:
        raise SystemExit(f"error: no answers in {predictions}; pass the predictions.jsonl of a `memo bench` run")
    changed, by_system = [], {}
    for row in rows:
        new = {**row, **score_row(row["prediction"], row["answers"], row.get("kind", ""))}
        if new["correct"] != row["correct"]:
            changed.append({k: new[k] for k in ("system", "id", "kind", "prediction", "answers")} | {"was": row["correct"], "now": new["correct"]})
        by_system.setdefault(row["system"], []).append(new)
    systems = {name: summarise(mine) for name, mine in by_system.items()}
    return {"predictions": str(predictions), "questions": max(len(v) for v in by_system.values()),
            "changed": changed, "systems": systems}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--predictions", type=Path, required=True)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    from appliance.bench.harness import results_table

    out = rescore(args.predictions)
    console = Console()
    for c in out["changed"]:
        console.print(f"{c['system']} {c['id']} ({c['kind']}): {'right' if c['was'] else 'wrong'} → "
                      f"{'right' if c['now'] else 'wrong'}  {c['prediction'][:80]!r}  gold {c['answers'][0]!r}")
    console.print(f"{len(out['changed'])} verdicts changed")
    console.print(results_table(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
