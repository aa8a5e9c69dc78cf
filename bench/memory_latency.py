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


def _demo_memory(demo_dir: Path, train_steps: int):  # noqa: ANN202
    """The promoted memory of a demo vault, its probe questions, and a timed training run on a copy."""
    import shutil
    import tempfile
    from dataclasses import replace

    from appliance.config import Settings
    from appliance.demo import demo_paths
    from appliance.export.pipeline import agreement_questions
    from appliance.memory.model_io import load_version
    from appliance.memory.train import split_probes, train_memory
    from appliance.memory.versions import promoted
    from appliance.reflect.store import load_pairs
    from appliance.vault.keys import Secret
    from appliance.vault.store import Vault

    home, key = demo_paths(demo_dir)
    tmp = Path(tempfile.mkdtemp(prefix="memo-bench-"))
    shutil.copytree(home, tmp / "home")
    vault = Vault.open(Settings.load(tmp / "home"), Secret(key_file=key))
    version = promoted(vault)
    if version is None:
        raise SystemExit(f"{demo_dir} has no promoted memory: run `memo demo` first")
    train_pairs, _ = split_probes(load_pairs(vault))
    params = vault.settings.train
    subset = train_pairs[: params.batch_size * train_steps]
    trained = train_memory(vault, subset, replace(params, epochs=1, checkpoint_every=10_000), actor="bench")
    training = {"pairs": len(subset), "steps": trained.metrics["steps"], "batch_size": params.batch_size,
                "seconds": trained.metrics["train_seconds"], "tokens_per_second": trained.metrics["train_tokens_per_second"],
                "method": params.method, "rank": params.rank}
    loaded = load_version(vault, version.id)
    questions = agreement_questions(vault)
    shutil.rmtree(tmp)
    return loaded.model, loaded.tokenizer, questions, f"memory {version.id}", training


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", default="q8_0,f16", help="GGUF output types to export and time")
    ap.add_argument("--threads", type=int, default=None, help="threads for both runtimes (default: free cores now)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--json", type=Path, default=Path("bench/results/memory_latency.json"))
    ap.add_argument("--demo-dir", type=Path, help="use the promoted memory of this demo vault (e.g. .memo-demo), "
                    "its probes, and measure training tokens/s on a copy of it in the same run")
    ap.add_argument("--train-steps", type=int, default=6, help="training steps timed with --demo-dir")
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
    training: dict[str, Any] = {}
    memory_name = "untrained base"
    if args.demo_dir:
        model, tokenizer, probes, memory_name, training = _demo_memory(args.demo_dir, args.train_steps)
        torch.set_num_threads(threads)
        model.eval()
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(base.parent), gguf_file=base.name)
        model = AutoModelForCausalLM.from_pretrained(str(base.parent), gguf_file=base.name, dtype=torch.float32).eval()
        probes = list(vf.DEFAULT_PROBES)
    load_s = time.perf_counter() - t0

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

    if training:
        t = Table(title="memory training throughput (same run)")
        for k, v in training.items():
            t.add_row(k, str(v))
        console.print(t)
    table = Table(title=f"{memory_name}: answer latency, {len(probes)} probes, ≤{args.max_new_tokens} new tokens, {threads} thread(s)")
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
        "memory": memory_name,
        "training": training,
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
