"""Benchmark: `memo ask` latency end to end (memory → bridges when unsure → phrasing).

    .venv/bin/python -m bench.ask_latency --demo-dir .memo-demo [--questions FILE] [--limit 20]
                                          [--hops 1] [--json bench/results/ask_latency.json]

Runs the questions of the development set (default: the bundled halq-wiki questions) through the
same code path as `memo ask` (``appliance.executive.session``), on a copy of a demo-style vault
(``DIR/home`` + ``DIR/demo.key``) with a promoted memory, with the bundled executive. Reports
median and p95 seconds per question overall and per stage, memory and executive tokens, and the
machine, as a table and JSON. Run it on an otherwise idle machine: two cores shared with another
job make every number meaningless.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.memory_latency import _p95

DEFAULT_QUESTIONS = Path(__file__).resolve().parents[1] / "appliance" / "samples" / "halq-wiki.questions.jsonl"


def _stats(xs: list[float]) -> dict[str, float]:
    return {"median_s": round(statistics.median(xs), 3), "p95_s": round(_p95(xs), 3), "mean_s": round(statistics.fmean(xs), 3)}


def run(demo_dir: Path, questions_file: Path, limit: int, hops: int, endpoint: str) -> dict[str, Any]:
    from appliance.config import Settings
    from appliance.demo import demo_paths
    from appliance.executive.agent import ExecutiveParams
    from appliance.executive.session import ask, open_executive
    from appliance.vault.keys import Secret
    from appliance.vault.store import Vault

    home, key = demo_paths(demo_dir)
    tmp = Path(tempfile.mkdtemp(prefix="memo-ask-bench-"))
    try:
        shutil.copytree(home, tmp / "home")  # the audit entries of the run stay out of the real vault
        vault = Vault.open(Settings.load(tmp / "home"), Secret(key_file=key))
        questions = [json.loads(line) for line in questions_file.read_text().splitlines() if line.strip()]
        questions = questions[:limit] if limit else questions
        started = time.monotonic()
        executive = open_executive(vault, endpoint, params=ExecutiveParams(max_hops=hops))
        load_s = time.monotonic() - started
        executive.answer("What is this organisation called?")  # warm-up: first call pays page faults
        rows = []
        for q in questions:
            t = ask(vault, executive, q["question"], actor="bench", channel="bench")
            rows.append({"id": q.get("id"), "kind": q.get("kind"), "seconds": t.seconds, "memory_calls": len(t.sub_answers),
                         **t.timings, **t.tokens})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    stages = ["seconds", "memory_s", "decompose_s", "hops_s", "phrase_s"]
    return {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor()},
        "memory_version": executive.memory_version, "executive": executive.executive_model.identity,
        "memory": executive.memory_model.identity, "questions": len(rows), "hops": hops, "load_s": round(load_s, 2),
        "stages": {s: _stats([r.get(s, 0.0) for r in rows]) for s in stages},
        "by_kind": {k: _stats([r["seconds"] for r in rows if r["kind"] == k]) for k in sorted({r["kind"] for r in rows})},
        "memory_calls_mean": round(statistics.fmean(r["memory_calls"] for r in rows), 2),
        "tokens_mean": {k: round(statistics.fmean(r.get(k, 0) for r in rows), 1)
                        for k in ("executive_prompt", "executive_completion", "memory_prompt", "memory_completion")},
        "per_question": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo-dir", type=Path, default=Path(".memo-demo"))
    ap.add_argument("--questions", type=Path, default=DEFAULT_QUESTIONS)
    ap.add_argument("--limit", type=int, default=0, help="first N questions (0: all)")
    ap.add_argument("--hops", type=int, default=1)
    ap.add_argument("--executive", default="local")
    ap.add_argument("--json", type=Path, default=Path("bench/results/ask_latency.json"))
    args = ap.parse_args()
    result = run(args.demo_dir, args.questions, args.limit, args.hops, args.executive)
    table = Table("stage", "median s", "p95 s", "mean s", title=f"memo ask: {result['questions']} questions, "
                  f"{result['machine']['cpus']} cores, memory {result['memory_version']}")
    for stage, s in result["stages"].items():
        table.add_row("total" if stage == "seconds" else stage.removesuffix("_s"), f"{s['median_s']:.2f}", f"{s['p95_s']:.2f}", f"{s['mean_s']:.2f}")
    Console().print(table)
    kinds = Table("question kind", "median s", "p95 s")
    for kind, s in result["by_kind"].items():
        kinds.add_row(kind, f"{s['median_s']:.2f}", f"{s['p95_s']:.2f}")
    Console().print(kinds)
    Console().print(f"memory calls per question {result['memory_calls_mean']}; mean tokens {result['tokens_mean']}; "
                    f"models loaded in {result['load_s']} s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    Console().print(f"written {args.json}")


if __name__ == "__main__":
    main()
