"""Benchmark: reflection generation throughput against raw llama.cpp decoding, in one run.

    .venv/bin/python -m bench.reflect_throughput [--json bench/results/reflect.json]

One model object (the bundled generator, default :class:`LlamaCppOptions`, as ``open_model``
loads it) serves every measurement, so they compare like with like on this machine, now:

* **raw sequential**: one greedy generation of ~256 tokens from a short prompt;
* **raw batched**: 8 such generations decoded together (``max_parallel`` sequences);
* **pipeline**: :func:`appliance.reflect.generate.reflect` on a fresh vault holding part of the
  bundled sample corpus (``hr/`` and ``it/systems-inventory.html``), end to end (planning,
  validation and encrypted storage included), reporting pairs/s, generated tok/s and prompt tokens.

The raw rates are measured before and after the pipeline and averaged, because on a shared box
other processes come and go; the cores they kept busy are reported. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from appliance.config import KdfParams, Settings
from appliance.corpus.ingest import ingest
from appliance.llm.cpu import CoreMeter
from appliance.llm.llamacpp import LlamaCppModel
from appliance.llm.registry import ModelRegistry
from appliance.reflect.generate import reflect
from appliance.reflect.store import load_units
from appliance.vault.keys import Secret
from appliance.vault.store import Vault

SAMPLES = Path(__file__).resolve().parent.parent / "appliance" / "samples" / "halq-wiki"
CORPUS = [SAMPLES / "hr", SAMPLES / "it" / "systems-inventory.html"]
RAW_PROMPTS = [
    "The history of the city begins",
    "In the morning the market",
    "A short guide to keeping bees:",
    "The old lighthouse keeper said",
    "Rivers carry water from",
    "The recipe calls for flour,",
    "Our team meeting covered",
    "Winter in the mountains is",
]
RAW_TOKENS = 256


def _raw_sequential(model: LlamaCppModel) -> dict[str, Any]:
    t0 = time.perf_counter()
    result = model.complete(RAW_PROMPTS[0], max_tokens=RAW_TOKENS)
    seconds = time.perf_counter() - t0
    tokens = result.stats.completion_tokens
    return {"tokens": tokens, "seconds": round(seconds, 3), "tok_s": round(tokens / seconds, 2)}


def _raw_batched(model: LlamaCppModel) -> dict[str, Any]:
    t0 = time.perf_counter()
    results = model.complete_many(RAW_PROMPTS, max_tokens=RAW_TOKENS)
    seconds = time.perf_counter() - t0
    tokens = sum(r.stats.completion_tokens for r in results)
    return {"sequences": len(RAW_PROMPTS), "tokens": tokens, "seconds": round(seconds, 3), "tok_s": round(tokens / seconds, 2)}


class _Timed:
    """The generator as reflect() sees it, timing the time spent inside the model."""

    def __init__(self, model: LlamaCppModel) -> None:
        self.model = model
        self.seconds = 0.0
        self.calls = 0
        self.requests = 0

    @property
    def identity(self) -> str:
        return self.model.identity

    def chat(self, *args: Any, **kwargs: Any) -> Any:
        return self.chat_many([args[0]], *args[1:], **kwargs)[0]

    def chat_many(self, conversations: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self.model.chat_many(conversations, *args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1
            self.requests += len(conversations)


def _counters(model: LlamaCppModel) -> dict[str, int]:
    totals = getattr(model, "totals", None)  # cumulative engine counters (absent in older engines)
    return dict(totals.as_dict()) if totals is not None else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, default=Path("bench/results/reflect.json"))
    args = ap.parse_args()
    console = Console()
    meter = CoreMeter(window_s=0.5)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp) / "home", kdf=KdfParams(memory_kib=1024, iterations=1, lanes=1))
        vault = Vault.init(settings, Secret(passphrase="bench passphrase"))
        ingested = ingest(vault, CORPUS).summary()
        t0 = time.perf_counter()
        model = LlamaCppModel.load(ModelRegistry(vault))
        load_s = time.perf_counter() - t0
        try:
            busy = [meter.others_busy()]
            model.complete(RAW_PROMPTS[1], max_tokens=8)  # warm-up: first-use allocations
            seq = [_raw_sequential(model)]
            bat = [_raw_batched(model)]
            busy.append(meter.others_busy())

            timed = _Timed(model)
            before = _counters(model)
            report = reflect(vault, timed)  # type: ignore[arg-type]
            after = _counters(model)
            busy.append(meter.others_busy())

            seq.append(_raw_sequential(model))
            bat.append(_raw_batched(model))
            busy.append(meter.others_busy())
        finally:
            model.close()
        units = load_units(vault)
        prompt_tokens = sum(u.stats.prompt_tokens for u in units)
        identity = model.identity

    raw_seq = sum(r["tok_s"] for r in seq) / len(seq)
    raw_bat = sum(r["tok_s"] for r in bat) / len(bat)
    pipe_tok_s = report.tokens_per_second
    in_model_tok_s = report.completion_tokens / timed.seconds if timed.seconds else 0.0
    engine = {k: after[k] - before.get(k, 0) for k in after}
    decoded = engine.get("prompt_tokens", 0) - engine.get("cached_tokens", 0) if engine else None
    result: dict[str, Any] = {
        "model": identity,
        "corpus": [str(p.relative_to(SAMPLES)) for p in CORPUS],
        "documents": ingested.get("added", ingested.get("docs")),
        "model_load_s": round(load_s, 2),
        "raw_sequential_tok_s": round(raw_seq, 2),
        "raw_batched_tok_s": round(raw_bat, 2),
        "raw_runs": {"sequential": seq, "batched": bat},
        "pipeline_units": report.generated,
        "pipeline_llm_calls": timed.calls,
        "pipeline_requests": timed.requests,
        "pipeline_pairs": report.pairs,
        "pipeline_rejected": report.rejected,
        "pipeline_seconds": report.seconds,
        "pipeline_in_model_seconds": round(timed.seconds, 2),
        "pipeline_pairs_per_s": round(report.pairs_per_second, 3),
        "pipeline_completion_tokens": report.completion_tokens,
        "pipeline_prompt_tokens": prompt_tokens,
        "pipeline_prompt_tokens_decoded": decoded,
        "pipeline_tok_s": round(pipe_tok_s, 2),
        "pipeline_in_model_tok_s": round(in_model_tok_s, 2),
        "ratio_vs_raw_sequential": round(pipe_tok_s / raw_seq, 3) if raw_seq else None,
        "ratio_vs_raw_batched": round(pipe_tok_s / raw_bat, 3) if raw_bat else None,
        "other_processes_busy_cores": [round(b, 2) for b in busy],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }
    if engine:
        result["engine_counters"] = engine

    table = Table(title=f"reflection vs raw decode, {identity}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in result.items():
        if k in ("machine", "raw_runs", "engine_counters", "corpus"):
            continue
        table.add_row(k, str(v))
    for name, runs in result["raw_runs"].items():
        table.add_row(f"raw {name} runs (tok/s)", " / ".join(str(r["tok_s"]) for r in runs))
    console.print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
