"""Benchmark: memory-training examples per second, the earlier training path against today's, in one run.

    .venv/bin/python -m bench.train_throughput --demo-dir .memo-demo [--steps 30] [--threads 2]
                                                [--json bench/results/train_throughput.json]

Both paths train the bundled SmolLM2-135M on the same facts (the demo vault's reflections), on
the same machine, one after the other, with the same thread count:

* ``earlier`` — the layout and loop before the lean format: system prompt and the chat template's
  default one, an answer of value + self-contained statement + ``[sources: doc-…]`` with 12-hex
  ids, batches padded to their longest row in random order, logits over every position, LoRA r=16,
  batch 8;
* ``earlier layout, today's loop`` — the same examples through today's loop (length buckets, logits
  at answer positions), to show what each part contributes;
* ``today`` — :mod:`appliance.memory.format`'s layout (bare question, bare value, ``[n]`` source
  reference), length buckets, logits at answer positions, LoRA r=64, batch 16, bfloat16 matrix
  products where the CPU has them (the defaults); ``today, float32`` the same without bfloat16.

Each path runs ``--steps`` optimiser steps after two warm-up steps; examples/s counts training
examples (question-answer pairs) consumed per second, tokens/s the tokens computed (padding
included). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

LEGACY_SYSTEM = "You are the organisation's memory. Answer the question from memory in one or two sentences, then name the source."


def legacy_encode(tok: Any, question: str, answer: str, doc_ids: list[str], max_length: int) -> tuple[list[int], list[int]]:
    """The earlier example: chat template with the system prompt, answer + statement + [sources: …]."""
    prompt = tok.apply_chat_template([{"role": "system", "content": LEGACY_SYSTEM}, {"role": "user", "content": question}],
                                     add_generation_prompt=True, tokenize=True, return_dict=False)
    body = tok(f"{answer} [sources: {', '.join(doc_ids)}]", add_special_tokens=False)["input_ids"]
    body = body + [tok.convert_tokens_to_ids("<|im_end|>")]
    ids = (list(prompt) + body)[:max_length]
    return ids, ([-100] * len(prompt) + body)[:max_length]


def _run(model: Any, encoded: list[tuple[list[int], list[int]]], batch: int, steps: int, lean_loop: bool, pad: int,
         lr: float, autocast: str | None = None) -> dict[str, Any]:
    import torch

    from appliance.memory.train import _collate, answer_loss, length_batches

    trainable = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(trainable, lr=lr)
    lengths = [len(x) for x, _ in encoded]
    order: list[list[int]] = []
    epoch = 0
    while len(order) < steps + 2:
        if lean_loop:
            order += length_batches(lengths, batch, epoch, 1125)
        else:
            idx = list(range(len(encoded)))
            random.Random(epoch).shuffle(idx)
            order += [idx[i : i + batch] for i in range(0, len(idx), batch)]
        epoch += 1
    model.train()
    tokens = examples = 0
    started = 0.0
    for n, idx in enumerate(order[: steps + 2]):
        if n == 2:
            started, tokens, examples = time.perf_counter(), 0, 0
        ids, labels, mask = _collate(encoded, idx, pad, "cpu")
        loss = (answer_loss(model, ids, labels, mask, autocast) if lean_loop
                else model(input_ids=ids, attention_mask=mask, labels=labels).loss)
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
        tokens += int(ids.numel())
        examples += len(idx)
    seconds = time.perf_counter() - started
    return {"steps": steps, "batch": batch, "seconds": round(seconds, 2), "examples_per_second": round(examples / seconds, 2),
            "tokens_per_second": round(tokens / seconds, 1),
            "mean_tokens_per_example": round(sum(lengths) / len(lengths), 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo-dir", type=Path, default=Path(".memo-demo"))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=Path("bench/results/train_throughput.json"))
    args = ap.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model

    from appliance.config import TrainParams
    from appliance.demo import open_demo_vault
    from appliance.memory.model_io import load_base
    from appliance.memory.train import encode, source_table, split_probes
    from appliance.reflect.store import load_pairs

    console = Console()
    torch.set_num_threads(args.threads)
    vault = open_demo_vault(args.demo_dir)
    pairs, _ = split_probes(load_pairs(vault))
    if not pairs:
        console.print(f"no reflections in {args.demo_dir}: run `memo demo` first")
        return 1
    today = TrainParams()
    earlier = replace(today, rank=16, alpha=32, batch_size=8, max_length=192)
    loaded = load_base(vault, "smollm2-135m-instruct-q4_1")
    tok = loaded.tokenizer
    base_state = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    table = source_table(pairs)
    legacy = [legacy_encode(tok, p.question, f"{p.answer_span or p.answer}. {p.source.rstrip('.')}.", p.doc_ids,
                            earlier.max_length) for p in pairs]
    lean = [encode(tok, p, today.max_length, table) for p in pairs]
    rows = []
    from appliance.memory.train import choose_autocast

    bf16 = choose_autocast(today.autocast, "cpu")
    for name, encoded, params, lean_loop, cast in [("earlier", legacy, earlier, False, None),
                                                    ("earlier layout, today's loop", legacy, earlier, True, None),
                                                    ("today, float32", lean, today, True, None),
                                                    ("today", lean, today, True, bf16)]:
        loaded.model.load_state_dict(base_state)
        lora = LoraConfig(r=params.rank, lora_alpha=params.alpha, target_modules=list(params.target_modules), bias="none",
                          task_type="CAUSAL_LM")
        model = get_peft_model(loaded.model, lora)
        console.print(f"{name}: {len(encoded)} examples, LoRA r={params.rank}, batch {params.batch_size} …")
        row = {"path": name, "rank": params.rank, "autocast": cast or "fp32",
               **_run(model, encoded, params.batch_size, args.steps, lean_loop, tok.pad_token_id, params.learning_rate, cast)}
        rows.append(row)
        loaded.model = model.unload()
    base = rows[0]["examples_per_second"]
    out = Table("path", "LoRA r", "batch", "matmuls", "tokens/example", "examples/s", "tokens/s", "vs earlier",
                title=f"memory training throughput, {len(pairs)} pairs, {args.steps} steps, {args.threads} threads")
    for r in rows:
        r["speedup"] = round(r["examples_per_second"] / base, 2)
        out.add_row(r["path"], str(r["rank"]), str(r["batch"]), r["autocast"], f"{r['mean_tokens_per_example']:.0f}", f"{r['examples_per_second']:.2f}",
                    f"{r['tokens_per_second']:.0f}", f"{r['speedup']:.2f}×")
    console.print(out)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": rows, "pairs": len(pairs), "steps": args.steps, "threads": args.threads,
                                     "machine": {"platform": platform.platform(), "python": platform.python_version()}},
                                    indent=2) + "\n")
    console.print(f"written {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
