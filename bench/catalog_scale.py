"""Benchmark: does ingest slow down as the vault grows? The same 200 documents into an empty vault
and into one of 10,000, and the cost of each 1,000 documents while the large vault is built.

    .venv/bin/python -m bench.catalog_scale [--base 10000] [--add 200] [--rounds 2] [--label after]
                                            [--json bench/results/catalog_scale.json]

Documents come from :func:`bench.ingest_throughput.generate` (1-6 KB markdown, text and HTML);
the added sets are other documents under other paths. Each round ingests a fresh set of ``--add``
documents into the small vault and then the same set into the large one, back to back, so both
sides see the same machine load. The JSON file keeps one entry per ``--label`` (before / after),
so two runs of two code versions sit side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from appliance.config import KdfParams, Settings
from appliance.corpus.ingest import ingest
from appliance.vault.keys import Secret
from appliance.vault.store import CATALOG, Vault
from bench.ingest_throughput import generate

FAST_KDF = KdfParams(memory_kib=1024, iterations=1, lanes=1)  # unlocking is not what is measured


def _vault(root: Path) -> Vault:
    return Vault.init(Settings(home=root, kdf=FAST_KDF), Secret(passphrase="benchmark passphrase"), actor="bench")


def _catalog_bytes(vault: Vault) -> int:
    return sum(p.stat().st_size for p in vault.home.glob(CATALOG + "*") if p.is_file())


def _timed_ingest(vault: Vault, folder: Path) -> float:
    t = time.perf_counter()
    report = ingest(vault, [folder], actor="bench")
    seconds = time.perf_counter() - t
    assert report.count("skipped") == 0, report.summary()
    return seconds


def run(base: int, add: int, rounds: int, step: int, tmp: Path, console: Console) -> dict[str, Any]:
    corpus = tmp / "corpus"
    generate(corpus, base + add * rounds, seed=7)
    files = sorted(p for p in corpus.rglob("*") if p.is_file())
    base_dir, extra = tmp / "base", [tmp / f"add{r}" for r in range(rounds)]
    for i, f in enumerate(files):
        if i < base:
            dest = base_dir / f"part{i // step:03d}" / f.name
        else:
            dest = extra[(i - base) // add] / f.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        f.rename(dest)
    large = _vault(tmp / "large")
    growth = []
    for part in sorted(base_dir.iterdir()):
        seconds = _timed_ingest(large, part)
        with large.read() as db:
            docs = db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        growth.append({"documents_after": docs, "seconds": round(seconds, 3), "docs_per_s": round(step / seconds, 1),
                       "catalog_bytes": _catalog_bytes(large)})
        console.print(f"  built {docs:>6} documents: last {step} in {seconds:6.2f} s, catalog {_catalog_bytes(large) / 1e6:.1f} MB")
    small = _vault(tmp / "small")
    pairs = []
    for folder in extra:
        empty_s = _timed_ingest(small, folder)
        large_s = _timed_ingest(large, folder)
        pairs.append({"empty_s": round(empty_s, 3), "large_s": round(large_s, 3), "ratio": round(large_s / empty_s, 3)})
        console.print(f"  {add} documents: into the small vault {empty_s:.2f} s, into the large one {large_s:.2f} s")
    return {
        "base_documents": base,
        "added_documents": add,
        "rounds": pairs,
        "ratio_median": round(statistics.median(p["ratio"] for p in pairs), 3),
        "empty_s_median": round(statistics.median(p["empty_s"] for p in pairs), 3),
        "large_s_median": round(statistics.median(p["large_s"] for p in pairs), 3),
        "growth": growth,
        "catalog_bytes_large": _catalog_bytes(large),
        "verify_ok": large.verify().ok,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=int, default=10_000)
    ap.add_argument("--add", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--step", type=int, default=1000, help="documents per timed part while the large vault is built")
    ap.add_argument("--label", default="after")
    ap.add_argument("--json", type=Path, default=Path("bench/results/catalog_scale.json"))
    args = ap.parse_args()
    console = Console()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.base, args.add, args.rounds, args.step, Path(tmp), console)
    result.update(label=args.label, wall_s=round(time.perf_counter() - started, 1), load_avg=os.getloadavg(),
                  machine={"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()})
    table = Table(title=f"{args.add} documents into an empty vault vs one of {args.base:,} ({args.label})")
    for col in ("round", "empty vault s", f"{args.base:,}-document vault s", "ratio"):
        table.add_column(col, justify="right")
    for i, p in enumerate(result["rounds"], 1):
        table.add_row(str(i), f"{p['empty_s']:.2f}", f"{p['large_s']:.2f}", f"{p['ratio']:.2f}×")
    table.add_row("median", f"{result['empty_s_median']:.2f}", f"{result['large_s_median']:.2f}", f"{result['ratio_median']:.2f}×")
    console.print(table)
    growth = Table(title="building the large vault")
    for col in ("documents", f"last {args.step} s", "docs/s", "catalog MB"):
        growth.add_column(col, justify="right")
    for g in result["growth"]:
        growth.add_row(f"{g['documents_after']:,}", f"{g['seconds']:.2f}", f"{g['docs_per_s']:.0f}", f"{g['catalog_bytes'] / 1e6:.1f}")
    console.print(growth)
    doc = json.loads(args.json.read_text()) if args.json.exists() else {}
    doc[args.label] = result
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2))
    console.print(f"wrote {args.json} [{args.label}]")


if __name__ == "__main__":
    main()
