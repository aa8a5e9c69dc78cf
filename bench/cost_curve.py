"""Benchmark: the cost curve of the whole pipeline against corpus size, and a 500,000-document projection.

    .venv/bin/python -m bench.cost_curve [--sizes 10,100,1000,10000] [--plan-up-to 3000] [--sample-units 3]
                                         [--json bench/results/cost_curve.json] [--plot docs/cost-curve.png]

For each size a synthetic wiki (:mod:`bench.wiki_corpus`) is ingested into a fresh vault and
planned. Measured at every size: ingest wall time, units and facts planned. Planning (reading
every document and pairing documents that may supersede each other) is measured up to
``--plan-up-to`` documents and fitted (a + b·N + c·N²) beyond, because it grows with N². The
generator's and the trainer's work per unit does not depend on N (a unit is one document's
facts), so it is *measured on a sample*: ``--sample-units`` units of each kind written by the
bundled generator (llama.cpp, this box), and one epoch of real LoRA training on their pairs;
pairs, generated tokens, training tokens and their wall time are then per-unit figures × units.
The 500,000-document column puts the same work on 8 × NVIDIA H100 80GB SXM, with generator
throughput from published vLLM figures (cited in the JSON and the README), and training from a
FLOP count. Prints a table, writes JSON and (with matplotlib) a PNG plot.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from appliance.config import KdfParams, Settings
from appliance.corpus.ingest import ingest
from appliance.llm.connect import open_model
from appliance.memory.train import encode, source_table, train_memory
from appliance.reflect.families import supersessions
from appliance.reflect.generate import Reflector, _load_corpus, plan_units
from appliance.vault.keys import Secret
from appliance.vault.store import Vault
from bench.wiki_corpus import write_wiki

TARGET_DOCS = 500_000
# Published vLLM serving throughput (output tokens/s, vLLM v0.5.4, benchmark_serving.py with 320 prompts):
# LambdaLabsML/vllm-benchmark, benchmark_v0.md, table "Tensor Parallel v.s. Data Parallel".
VLLM = {
    "source": "https://github.com/LambdaLabsML/vllm-benchmark/blob/main/benchmark_v0.md (vLLM v0.5.4; the same report "
              "measured v0.6.0 at more than 2x these output rates)",
    "Meta-Llama-3.1-8B-FP8, 1xH100-80GB-SXM": 3400.4,
    "Meta-Llama-3.1-70B-Instruct-FP8, 2xH100-80GB-SXM": 1727.69,
}
H100_BF16_DENSE_FLOPS = 989e12  # NVIDIA H100 SXM datasheet, dense BF16 tensor core peak
ASSUMED_MFU = 0.3  # a small model trains far from peak; an assumption, not a measurement


def _vault(root: Path) -> Vault:
    return Vault.init(Settings(home=root, kdf=KdfParams(memory_kib=1024, iterations=1, lanes=1)),
                      Secret(passphrase="benchmark passphrase"), actor="bench")


def _size(n: int, root: Path, plan: bool, console: Console) -> tuple[dict[str, Any], Vault, list[Any]]:
    size = write_wiki(root / "corpus", n)
    vault = _vault(root / "home")
    t = time.perf_counter()
    report = ingest(vault, [root / "corpus"], actor="bench")
    row: dict[str, Any] = {"documents": n, "input_mb": round(size / 1e6, 3), "ingest_s": round(time.perf_counter() - t, 2),
                           "chunks": report.chunks}
    plans: list[Any] = []
    if plan:
        t = time.perf_counter()
        plans = plan_units(vault, "bench-generator", vault.settings.reflect)
        row["plan_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        _, docs = _load_corpus(vault)
        row["load_corpus_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        supersessions(docs)
        row["supersessions_s"] = round(time.perf_counter() - t, 2)
        kinds = Counter(p.unit_kind for p in plans)
        row.update(units=len(plans), units_by_kind=dict(kinds), facts=sum(len(p.facts) for p in plans),
                   compositions=sum(len(p.compositions) for p in plans), negatives=sum(len(p.negatives) for p in plans))
    console.print(f"  {n:>6} documents: ingest {row['ingest_s']} s" + (f", plan {row['plan_s']} s, {row['units']} units"
                                                                         if plan else ""))
    return row, vault, plans


def _fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least squares a + b·x + c·x² (three or more points)."""
    import numpy as np

    coef = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 2)
    return float(coef[2]), float(coef[1]), float(coef[0])


def _planned_at(rows: list[dict[str, Any]], n: int) -> dict[str, float]:
    """Units and items of each kind at ``n`` documents: as planned where measured, else the largest
    planned size's scaled: facts, their units and the negatives (a share of the facts) × n, the
    compositions as they were there (capped by ``max_compositions``)."""
    row = next((r for r in rows if r["documents"] == n and "units" in r), None)
    if row is None:
        big = max((r for r in rows if "units" in r), key=lambda r: r["documents"])
        scale = n / big["documents"]
        row = {**big, "facts": big["facts"] * scale, "negatives": big["negatives"] * scale,
               "units": big["units"] + big["units_by_kind"].get("facts", 0) * (scale - 1)}
    return {"units": row["units"], "facts": row["facts"], "compose": row["compositions"], "negatives": row["negatives"]}


def _sample(vault: Vault, plans: list[Any], per_kind: int, console: Console) -> dict[str, Any]:
    """Write ``per_kind`` units of each kind with the bundled generator; per-unit figures by kind."""
    rng = random.Random(16)
    gen = open_model(vault, "local", "generator", sends={"document_text"})
    reflector = Reflector(vault, gen, vault.settings.reflect)
    out: dict[str, Any] = {"generator": gen.identity, "by_kind": {}, "pairs": []}
    for kind in ("facts", "compose", "negatives"):
        chosen = [p for p in plans if p.unit_kind == kind]
        chosen = rng.sample(chosen, min(per_kind, len(chosen)))
        units, items, seconds = [], 0, 0.0
        for plan in chosen:
            t = time.perf_counter()
            unit = reflector.run(plan)
            seconds += time.perf_counter() - t
            units.append(unit)
            items += _items(plan)
            out["pairs"] += [p for p in unit.pairs if p.split == "train"]
        if units and items:
            out["by_kind"][kind] = {  # per item: a fact, a composition, a negative
                "sampled_units": len(units), "sampled_items": items,
                "seconds_per_item": round(seconds / items, 3),
                "pairs_per_item": round(sum(len(u.pairs) for u in units) / items, 3),
                "generated_tokens_per_item": round(sum(u.stats.completion_tokens for u in units) / items, 2),
                "prompt_tokens_per_item": round(sum(u.stats.prompt_tokens for u in units) / items, 2),
                "llm_calls_per_item": round(sum(u.stats.llm_calls for u in units) / items, 2),
            }
            console.print(f"  sampled {len(units)} {kind} unit(s): {out['by_kind'][kind]}")
    return out


ITEMS = {"facts": "facts", "compose": "compositions", "negatives": "negatives"}


def _items(plan: Any) -> int:
    return len(getattr(plan, ITEMS[plan.unit_kind]))


def _training(vault: Vault, pairs: list[Any], console: Console) -> dict[str, Any]:
    """One real epoch of LoRA training on the sampled pairs: tokens per pair and tokens/s here."""
    from appliance.llm.registry import DEFAULT_MODEL
    from appliance.memory.model_io import load_base

    params = replace(vault.settings.train, epochs=1, min_epochs=1, checkpoint_every=10_000)
    tok = load_base(vault, DEFAULT_MODEL).tokenizer
    table = source_table(pairs)
    lengths = [len(encode(tok, p, params.max_length, table)[0]) for p in pairs]
    version = train_memory(vault, pairs, params, actor="bench")
    m = version.metrics
    result = {"pairs": len(pairs), "tokens_per_pair": round(statistics.mean(lengths), 1),
              "tokens_per_second": m["train_tokens_per_second"], "seconds": m["train_seconds"],
              "params": {"method": params.method, "rank": params.rank, "batch_size": params.batch_size,
                         "min_epochs": vault.settings.train.min_epochs, "max_epochs": vault.settings.train.epochs}}
    console.print(f"  training: {result}")
    return result


def _curve(rows: list[dict[str, Any]], sample: dict[str, Any], train: dict[str, Any], fit: tuple[float, float, float],
           n: int, epochs: int) -> dict[str, Any]:
    """Every stage at ``n`` documents on this box: measured where ``rows`` has it, else from rates."""
    row = next((r for r in rows if r["documents"] == n), {})
    planned = _planned_at(rows, n)
    kinds = sample["by_kind"]
    items = {k: planned[k] for k in ("facts", "compose", "negatives")}
    pairs = sum(items[k] * kinds.get(k, {}).get("pairs_per_item", 0) for k in items)
    gen_tokens = sum(items[k] * kinds.get(k, {}).get("generated_tokens_per_item", 0) for k in items)
    gen_s = sum(items[k] * kinds.get(k, {}).get("seconds_per_item", 0) for k in items)
    units = {"all": round(planned["units"])}
    train_tokens = pairs * train["tokens_per_pair"] * epochs
    a, b, c = fit
    plan_s = row.get("plan_s", a + b * n + c * n * n)
    ingest_s = row.get("ingest_s", n * _ingest_rate(rows))
    train_s = train_tokens / train["tokens_per_second"]
    return {"documents": n, "ingest_s": round(ingest_s, 1), "ingest_measured": "ingest_s" in row,
            "plan_s": round(plan_s, 1), "plan_measured": "plan_s" in row, "units": sum(units.values()),
            "pairs": round(pairs), "generated_tokens": round(gen_tokens), "generation_s": round(gen_s),
            "training_tokens": round(train_tokens), "training_s": round(train_s),
            "wall_s": round(ingest_s + plan_s + gen_s + train_s)}


def _ingest_rate(rows: list[dict[str, Any]]) -> float:
    big = max(rows, key=lambda r: r["documents"])
    return big["ingest_s"] / big["documents"]


def _projection(curve_500k: dict[str, Any], train: dict[str, Any], epochs: int) -> dict[str, Any]:
    """The same work on 8 × H100 80GB SXM: generation through a pool of vLLM servers, training under DDP."""
    tokens = curve_500k["generated_tokens"]
    small = 8 * VLLM["Meta-Llama-3.1-8B-FP8, 1xH100-80GB-SXM"]  # 8 one-GPU servers in one pool
    large = 4 * VLLM["Meta-Llama-3.1-70B-Instruct-FP8, 2xH100-80GB-SXM"]  # 4 two-GPU servers
    params_135m = 135e6
    train_flops = 6 * params_135m * curve_500k["training_tokens"]  # forward + backward, every weight (full FT bound)
    train_s = train_flops / (8 * H100_BF16_DENSE_FLOPS * ASSUMED_MFU)
    return {
        "gpus": "8 x NVIDIA H100 80GB SXM (one node)",
        "generated_tokens": tokens,
        "generation_8b_pool_of_8_s": round(tokens / small),
        "generation_70b_pool_of_4_s": round(tokens / large),
        "generation_tokens_per_s": {"8B, 8 servers x 1 GPU": small, "70B, 4 servers x 2 GPUs": large},
        "training_tokens": curve_500k["training_tokens"], "training_epochs": epochs,
        "training_s_flops_estimate": round(train_s),
        "ingest_s_this_box_rate": curve_500k["ingest_s"], "plan_s_fitted": curve_500k["plan_s"],
        "vllm_source": VLLM["source"],
        "flops_source": "NVIDIA H100 datasheet: 989 TFLOPS dense BF16 (SXM); MFU assumed 0.3",
    }


def _plot(curve: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    xs = [c["documents"] for c in curve]
    for key, label in (("ingest_s", "ingest"), ("plan_s", "plan (pairs of documents: N²)"),
                       ("generation_s", "reflections (generator)"), ("training_s", "memory training"), ("wall_s", "total")):
        ax.plot(xs, [max(1e-2, c[key]) for c in curve], marker="o", label=label, linewidth=2.2 if key == "wall_s" else 1.4)
    ax.plot(xs, [curve[0]["wall_s"] * x / xs[0] for x in xs], linestyle=":", color="grey", label="linear in N (from 10 docs)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("documents")
    ax.set_ylabel("seconds on this box (2 cores, CPU)")
    ax.set_title("memo cost curve: measured (ingest, plan ≤ 3k docs, samples) and projected")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,100,1000,10000")
    ap.add_argument("--plan-up-to", type=int, default=3000, help="plan measured up to this size, fitted beyond")
    ap.add_argument("--fit-extra", default="3000", help="extra sizes planned only for the fit")
    ap.add_argument("--sample-units", type=int, default=3)
    ap.add_argument("--json", type=Path, default=Path("bench/results/cost_curve.json"))
    ap.add_argument("--plot", type=Path, default=Path("docs/cost-curve.png"))
    ap.add_argument("--from", dest="saved", type=Path, help="recompute the curve from the measurements of an earlier run's JSON")
    args = ap.parse_args()
    console = Console(width=160)
    sizes = [int(s) for s in args.sizes.split(",")]
    extra = [int(s) for s in args.fit_extra.split(",") if s and int(s) not in sizes]
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    if args.saved:
        saved = json.loads(args.saved.read_text())
        rows, sample, train = saved["measured"], saved["sample"], saved["training"]
        wall, load = saved["wall_s"], saved["load_avg"]
    else:
        rows, sample, train = _measure_all(sizes, extra, args.plan_up_to, args.sample_units, console)
        wall, load = round(time.perf_counter() - started), list(os.getloadavg())
    _report(args, console, sizes, rows, sample, train, wall, load)


def _measure_all(sizes: list[int], extra: list[int], plan_up_to: int, per_kind: int,
                 console: Console) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        sample_vault, sample_plans = None, []
        for n in sorted(sizes + extra):
            row, vault, plans = _size(n, Path(tmp) / str(n), n <= plan_up_to, console)
            rows.append(row)
            if n == 1000:
                sample_vault, sample_plans = vault, plans
        assert sample_vault is not None, "the sample is taken at 1,000 documents: include 1000 in --sizes"
        sample = _sample(sample_vault, sample_plans, per_kind, console)
        train = _training(sample_vault, sample.pop("pairs"), console)
    return rows, sample, train


def _report(args: argparse.Namespace, console: Console, sizes: list[int], rows: list[dict[str, Any]], sample: dict[str, Any],
            train: dict[str, Any], wall: float, load: list[float]) -> None:
    planned = [r for r in rows if "plan_s" in r]
    fit = _fit([r["documents"] for r in planned], [r["plan_s"] for r in planned])
    epochs = train["params"]["min_epochs"]
    curve = [_curve(rows, sample, train, fit, n, epochs) for n in sizes]
    big = _curve(rows, sample, train, fit, TARGET_DOCS, epochs)
    result = {"measured": rows, "sample": sample, "training": train, "plan_fit_a_b_c": fit, "curve": curve,
              "documents_500k_this_box": big, "projection_500k": _projection(big, train, epochs),
              "wall_s": wall, "load_avg": load,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}}
    table = Table(title="cost curve on this box (m = measured; other figures: per-unit samples × units, or fitted)")
    for col in ("documents", "ingest s", "plan s", "units", "pairs", "generated tokens", "generation s", "training tokens",
                "training s", "wall"):
        table.add_column(col, justify="right")
    for c in curve + [big]:
        table.add_row(f"{c['documents']:,}", f"{c['ingest_s']:,.1f}" + (" m" if c["ingest_measured"] else ""),
                      f"{c['plan_s']:,.1f}" + (" m" if c["plan_measured"] else ""), f"{c['units']:,}", f"{c['pairs']:,}",
                      f"{c['generated_tokens']:,}", f"{c['generation_s']:,}", f"{c['training_tokens']:,}",
                      f"{c['training_s']:,}", _human(c["wall_s"]))
    console.print(table)
    console.print(result["projection_500k"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {args.json}" + (f" and {args.plot}" if _plot(curve, args.plot) else " (no matplotlib: no plot)"))


def _human(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


if __name__ == "__main__":
    main()
