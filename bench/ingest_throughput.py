"""Benchmark: ingest throughput (MB/s, chunks/s, docs/s) for generated documents.

    .venv/bin/python -m bench.ingest_throughput [--docs 1000] [--json bench/results/ingest.json]

Documents are generated deterministically (markdown, text and HTML, 1-6 KB, with some exact and
near duplicates as a real corpus has), ingested into a fresh vault with the production KDF, then
verified. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from appliance.config import Settings
from appliance.corpus.ingest import ingest
from appliance.vault.keys import Secret
from appliance.vault.store import Vault

WORDS = ("site cold room tote logger van route policy vendor audit shift lead team badge code depot freezer "
         "pallet driver manifest invoice contract renewal approval threshold escalation rota weekend").split()


def generate(root: Path, n: int, seed: int = 42) -> int:
    rng = random.Random(seed)
    total = 0
    previous: list[str] = []
    for i in range(n):
        paras = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 90))) + f". Fact {i}.{p} is {rng.randint(1, 9999)}."
                 for p in range(rng.randint(3, 12))]
        body = "\n\n".join(paras)
        if previous and rng.random() < 0.03:
            body = rng.choice(previous)  # exact duplicate
        elif previous and rng.random() < 0.05:
            body = rng.choice(previous) + "\n\nEdited copy."  # near duplicate
        previous.append(body)
        kind = ("md", "txt", "html")[i % 3]
        if kind == "md":
            text = f"# Page {i}\n\n{body}\n"
        elif kind == "txt":
            text = f"PAGE {i}\n\n{body}\n"
        else:
            text = "<html><head><title>Page %d</title><script>x=1</script></head><body>%s</body></html>" % (
                i, "".join(f"<p>{p}</p>" for p in body.split("\n\n")))
        path = root / f"dept{i % 10}" / f"page{i:05d}.{kind}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        total += len(text.encode())
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--json", type=Path, default=Path("bench/results/ingest.json"))
    args = ap.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        size = generate(corpus, args.docs)
        settings = Settings(home=Path(tmp) / "home")
        t0 = time.perf_counter()
        vault = Vault.init(settings, Secret(passphrase="benchmark passphrase"))
        unlock_s = time.perf_counter() - t0
        report = ingest(vault, [corpus])
        s = report.summary()
        t1 = time.perf_counter()
        rerun = ingest(vault, [corpus]).summary()
        rerun_s = time.perf_counter() - t1
        t2 = time.perf_counter()
        verified = vault.verify()
        verify_s = time.perf_counter() - t2
    result = {
        "docs": args.docs,
        "input_mb": round(size / 1e6, 3),
        "chunks": s["chunks"],
        "exact_duplicates": s["duplicate"],
        "near_duplicates": s["near_duplicates"],
        "ingest_s": s["seconds"],
        "mb_per_s": round(size / 1e6 / s["seconds"], 3),
        "chunks_per_s": round(s["chunks"] / s["seconds"], 1),
        "docs_per_s": round(args.docs / s["seconds"], 1),
        "rerun_unchanged_s": round(rerun_s, 3),
        "verify_s": round(verify_s, 3),
        "verify_ok": verified.ok,
        "vault_init_s": round(unlock_s, 3),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }
    table = Table(title=f"ingest throughput, {args.docs} generated documents")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in result.items():
        if k != "machine":
            table.add_row(k, str(v))
    console.print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
