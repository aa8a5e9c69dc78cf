"""Benchmark: reflections through a generator pool of 1 vs 2 OpenAI-compatible servers, in one run.

    .venv/bin/python -m bench.generator_pool [--units 6] [--in-flight 2] [--json bench/results/generator_pool.json]

Two llama.cpp servers (llama-cpp-python's, the bundled SmolLM2 generator) are started on
127.0.0.1, each pinned to one core (``taskset``) with one thread. The same documents are ingested
into two fresh vaults; ``memo reflect`` then writes the same first ``--units`` units (the same pool
name and model in both, so the same units and prompts) through a pool holding server A alone,
then through a pool of A and B, back to back. Reported per run: units/s, generated tokens/s,
requests per member. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from appliance.config import KdfParams, Settings
from appliance.corpus.ingest import ingest
from appliance.llm.connect import open_model
from appliance.llm.registry import bundled_model_path
from appliance.policy.audit import pin_policy
from appliance.reflect.generate import reflect
from appliance.reflect.store import load_units
from appliance.vault.keys import Secret
from appliance.vault.store import Vault
from tests.llm.servers import LlamaServer, pool_policy, start_all

SAMPLES = Path(__file__).resolve().parent.parent / "appliance" / "samples" / "halq-wiki"
CORPUS = [SAMPLES / "hr", SAMPLES / "it" / "systems-inventory.html"]


def _run(root: Path, members: list[tuple[str, str]], units: int, in_flight: int) -> dict[str, Any]:
    vault = Vault.init(Settings(home=root / "home", kdf=KdfParams(memory_kib=1024, iterations=1, lanes=1)),
                       Secret(passphrase="benchmark passphrase"), actor="bench")
    pin_policy(vault, pool_policy(root / "policies", members, in_flight=in_flight), actor="bench")
    ingest(vault, CORPUS, actor="bench")
    pool = open_model(vault, "gen", "generator", sends={"document_text"})
    try:
        t = time.perf_counter()
        report = reflect(vault, pool, replace(vault.settings.reflect), actor="bench", limit_units=units)
        seconds = time.perf_counter() - t
        per_member = {m.name: {"requests": m.requests, "failures": m.failures, "completion_tokens": m.completion_tokens}
                      for m in pool.members}
    finally:
        pool.close()
    done = load_units(vault)
    return {
        "endpoints": len(members),
        "units": report.generated,
        # document ids are keyed per vault, so compare what the units hold: their facts' values, in order
        "units_digest": hashlib.sha256(json.dumps(sorted([f.value for f in u.facts] for u in done)).encode()).hexdigest()[:16],
        "pairs": report.pairs,
        "requests": sum(u.stats.llm_calls for u in done),
        "completion_tokens": report.completion_tokens,
        "prompt_tokens": sum(u.stats.prompt_tokens for u in done),
        "seconds": round(seconds, 2),
        "units_per_s": round(report.generated / seconds, 3),
        "tokens_per_s": round(report.completion_tokens / seconds, 1),
        "members": per_member,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=6)
    ap.add_argument("--in-flight", type=int, default=2)
    ap.add_argument("--json", type=Path, default=Path("bench/results/generator_pool.json"))
    args = ap.parse_args()
    console = Console()
    model = bundled_model_path()
    assert model is not None, "the bundled model is missing"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        servers = start_all([LlamaServer(model, root / f"{n}.log", threads=1, cpus=str(i)) for i, n in enumerate("ab")])
        try:
            a, b = servers
            one = _run(root / "one", [("a", a.url)], args.units, args.in_flight)
            two = _run(root / "two", [("a", a.url), ("b", b.url)], args.units, args.in_flight)
        finally:
            for s in servers:
                s.stop()
    assert one["units_digest"] == two["units_digest"], "the two runs did not write the same units"
    result = {"one_endpoint": one, "two_endpoints": two,
              "speedup_units": round(two["units_per_s"] / one["units_per_s"], 2),
              "speedup_tokens": round(two["tokens_per_s"] / one["tokens_per_s"], 2),
              "in_flight": args.in_flight, "load_avg": os.getloadavg(),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}}
    table = Table(title=f"memo reflect through a pool: the same {args.units} units, each server on one core")
    for col in ("endpoints", "units", "requests", "generated tokens", "seconds", "units/s", "tokens/s"):
        table.add_column(col, justify="right")
    for r in (one, two):
        table.add_row(str(r["endpoints"]), str(r["units"]), str(r["requests"]), str(r["completion_tokens"]),
                      f"{r['seconds']:.1f}", f"{r['units_per_s']:.3f}", f"{r['tokens_per_s']:.1f}")
    console.print(table)
    console.print(f"2 vs 1 endpoints: {result['speedup_units']}× units/s, {result['speedup_tokens']}× tokens/s; "
                  f"requests per member (2 endpoints): {two['members']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
