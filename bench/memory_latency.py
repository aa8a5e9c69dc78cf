"""Benchmark: memory answer latency, exported GGUF in llama.cpp vs the fp32 model in transformers.

    .venv/bin/python -m bench.memory_latency [--types q8_0,f16] [--threads N] [--max-new-tokens 32]
                                             [--json bench/results/memory_latency.json]

For now on the untrained bundled base model (SmolLM2-135M-Instruct, de-quantised to fp32 by
transformers). One greedy run per probe question (``appliance.export.verify.DEFAULT_PROBES``),
same chat template and thread count on both sides; each GGUF is exported into memory (memfd) and
loaded from there. Reports per system median / p95 seconds per answer, generated tokens per
second (prompt processing included) and agreement with transformers' answers. Prints a table and
writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def _p95(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(0.95 * len(s) + 0.5) - 1))]


def _row(system: str, seconds: list[float], tokens: int, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "system": system,
        "answers": len(seconds),
        "median_s": round(statistics.median(seconds), 3),
        "p95_s": round(_p95(seconds), 3),
        "tok_per_s": round(tokens / sum(seconds), 1) if sum(seconds) else 0.0,
        "generated_tokens": tokens,
        **extra,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", default="q8_0,f16", help="GGUF output types to export and time")
    ap.add_argument("--threads", type=int, default=None, help="threads for both runtimes (default: free cores now)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--json", type=Path, default=Path("bench/results/memory_latency.json"))
    args = ap.parse_args()
    console = Console(width=110)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from appliance.export import gguf_writer as gw
    from appliance.export import verify as vf
    from appliance.llm.cpu import advise_threads

    threads = args.threads or advise_threads(window_s=0.5)
    torch.set_num_threads(threads)
    base = gw.bundled_base_gguf()
    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(base.parent), gguf_file=base.name)
    model = AutoModelForCausalLM.from_pretrained(str(base.parent), gguf_file=base.name, dtype=torch.float32).eval()
    load_s = time.perf_counter() - t0
    probes = list(vf.DEFAULT_PROBES)

    vf.generate_reference(model, tokenizer, probes[:1], 4)  # warm-up (first call pays one-off costs)
    reference = vf.generate_reference(model, tokenizer, probes, args.max_new_tokens)
    rows = [
        _row(
            "transformers fp32",
            [g.seconds for g in reference],
            sum(len(g.tokens) for g in reference),
            {"file_mb": None, "answer_agreement": 1.0, "token_agreement": 1.0, "teacher_forced_agreement": 1.0},
        )
    ]
    details: dict[str, Any] = {}
    for output_type in [t.strip() for t in args.types.split(",") if t.strip()]:
        t1 = time.perf_counter()
        with gw.export_to_memory(model, base, output_type) as buf:  # type: ignore[arg-type]
            export_s = time.perf_counter() - t1
            report = vf.check_agreement(model, tokenizer, buf.path, probes, args.max_new_tokens, reference, threads)
            size = buf.info.size
        rows.append(
            _row(
                f"llama.cpp {output_type}",
                report.candidate_seconds,
                sum(len(p.candidate_tokens) for p in report.probes),
                {
                    "file_mb": round(size / 1e6, 1),
                    "answer_agreement": round(report.answer_agreement, 3),
                    "token_agreement": round(report.token_agreement, 3),
                    "teacher_forced_agreement": round(report.teacher_forced_agreement or 0.0, 3),
                    "export_s": round(export_s, 2),
                },
            )
        )
        details[output_type] = report.to_dict()

    table = Table(title=f"memory answer latency, {len(probes)} probes, ≤{args.max_new_tokens} new tokens, {threads} thread(s)")
    for col in ("system", "median s", "p95 s", "tok/s", "answers =", "tokens =", "forced top-1", "file MB"):
        table.add_column(col, justify="left" if col == "system" else "right", no_wrap=True)
    for r in rows:
        table.add_row(
            r["system"],
            f"{r['median_s']:.3f}",
            f"{r['p95_s']:.3f}",
            f"{r['tok_per_s']:.1f}",
            f"{r['answer_agreement']:.0%}",
            f"{r['token_agreement']:.1%}",
            f"{r['teacher_forced_agreement']:.1%}",
            "" if r["file_mb"] is None else f"{r['file_mb']:.0f}",
        )
    console.print(table)
    result = {
        "model": base.name,
        "threads": threads,
        "max_new_tokens": args.max_new_tokens,
        "transformers_load_s": round(load_s, 1),
        "rows": rows,
        "agreement_details": details,
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_1m": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
