"""Benchmark: full fine-tuning against LoRA at equal wall time, on one vault's reflections.

    .venv/bin/python -m bench.train_compare --work .memo-demo [--minutes 12] [--methods lora,full]
                                            [--json bench/results/train_compare.json]

Each method trains from the bundled base on the vault's training pairs for the same wall-time
budget (``TrainParams.max_seconds``; no evaluation during the run, so the budget is all training),
then is asked — in transformers, greedily, as a candidate is — a seeded sample of its training
questions (training recall) and the held-out probes (held-out recall). Same pairs, same machine,
one after the other. The versions are stored in the vault as ``trained`` (not served).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path(".memo-demo"))
    ap.add_argument("--minutes", type=float, default=12.0)
    ap.add_argument("--methods", default="lora,full")
    ap.add_argument("--sample", type=int, default=160)
    ap.add_argument("--json", type=Path, default=Path("bench/results/train_compare.json"))
    args = ap.parse_args()

    from appliance.demo import open_demo_vault
    from appliance.memory.evaluate import TransformersChat, evaluate
    from appliance.memory.model_io import load_version
    from appliance.memory.probes import Probe, split_probes
    from appliance.memory.recall import for_version
    from appliance.memory.train import train_memory
    from appliance.reflect.store import load_pairs

    console = Console()
    vault = open_demo_vault(args.work)
    train, probes = split_probes(load_pairs(vault))
    sample = random.Random(1125).sample(train, min(len(train), args.sample))
    asked = [Probe(p.question, p.answer_span or p.answer, p.doc_ids, p.kind) for p in sample]
    rows = []
    for method in args.methods.split(","):
        params = replace(vault.settings.train, method=method, max_seconds=args.minutes * 60, epochs=1000, seed=1125)
        console.print(f"{method}: training for {args.minutes:g} min on {len(train)} pairs …")
        started = time.monotonic()
        version = train_memory(vault, train, params, actor="bench", lineage_extra={"bench": "train_compare"})
        seconds = time.monotonic() - started
        loaded = load_version(vault, version.id)
        memory = for_version(TransformersChat(loaded.model, loaded.tokenizer, version.id), version.lineage, version.id)
        trained = evaluate(memory, asked, batch=32, max_tokens=24)
        held = evaluate(memory, probes, batch=32, max_tokens=24)
        m = version.metrics
        rows.append({"method": method, "version": version.id, "seconds": round(seconds, 1), "steps": m["steps"],
                     "epochs": round(m["steps"] * params.batch_size / len(train), 2),
                     "examples_per_second": m["train_examples_per_second"], "loss_last": m["train_loss_last"],
                     "training_recall": trained.contains, "held_out_recall": held.contains,
                     "learning_rate": params.learning_rate if method == "lora" else params.full_learning_rate,
                     "rank": params.rank if method == "lora" else None})
        del loaded, memory
    table = Table("method", "lr", "wall s", "steps", "epochs", "examples/s", "last loss", "training recall", "held-out recall",
                  title=f"{len(train)} training pairs, {len(probes)} probes, {args.minutes:g} min each")
    for r in rows:
        table.add_row(f"{r['method']}" + (f" r={r['rank']}" if r["rank"] else ""), f"{r['learning_rate']:g}", f"{r['seconds']:.0f}",
                      str(r["steps"]), f"{r['epochs']:.1f}", f"{r['examples_per_second']:.1f}", f"{r['loss_last']:.3f}",
                      f"{r['training_recall']:.0%}", f"{r['held_out_recall']:.0%}")
    console.print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": rows, "pairs": len(train), "probes": len(probes), "minutes": args.minutes,
                                     "machine": {"platform": platform.platform(), "python": platform.python_version()}},
                                    indent=2) + "\n")
    console.print(f"written {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
