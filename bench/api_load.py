"""Benchmark: HTTP API latency under concurrent clients (p50/p95 of /healthz and of /v1/models).

    .venv/bin/python -m bench.api_load [--requests 200] [--concurrency 20] [--label after]
                                       [--json bench/results/api_load.json]

A fresh vault (production KDF) with one API token, the bundled model loaded as executive and
memory (the routes measured never call it), the server on a free loopback port in this process,
and ``--concurrency`` client threads each opening a new connection per request (urllib), as an
on-prem tool would. ``/v1/models`` is the cheapest authenticated route: token check, audit entry
(fsynced) before the response. Results are merged into the JSON file under ``--label``, so a run
before a change and one after sit side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from appliance.api.server import ApiServer
from appliance.api.tokens import create_token
from appliance.config import Settings
from appliance.executive.agent import Executive
from appliance.llm.llamacpp import LlamaCppModel, LlamaCppOptions
from appliance.llm.registry import ModelRegistry
from appliance.vault.keys import Secret
from appliance.vault.store import Vault


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def hammer(url: str, token: str | None, requests: int, concurrency: int) -> dict[str, Any]:
    """``requests`` GETs of ``url`` from ``concurrency`` threads; latency of each in ms."""
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def one(_: int) -> None:
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                resp.read()
                ok = resp.status == 200
        except Exception as exc:  # counted, not fatal: the figure is what a client sees
            with lock:
                failures.append(f"{type(exc).__name__}: {exc}")
            return
        ms = (time.perf_counter() - t0) * 1000
        with lock:
            (latencies if ok else failures).append(ms if ok else "status")  # type: ignore[arg-type]

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(requests)))
    wall = time.perf_counter() - started
    return {
        "requests": requests, "concurrency": concurrency, "ok": len(latencies), "failed": len(failures),
        "p50_ms": round(_percentile(latencies, 0.50), 1) if latencies else None,
        "p95_ms": round(_percentile(latencies, 0.95), 1) if latencies else None,
        "mean_ms": round(statistics.fmean(latencies), 1) if latencies else None,
        "wall_s": round(wall, 3), "rps": round(requests / wall, 1),
        "first_failure": failures[0] if failures else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--label", default="run", help="key of this run in the JSON file (e.g. before, after)")
    ap.add_argument("--json", type=Path, default=Path("bench/results/api_load.json"))
    args = ap.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        vault = Vault.init(Settings(home=Path(tmp) / "home"), Secret(passphrase="benchmark passphrase"), actor="bench")
        token = create_token(vault, "bench", actor="bench").token
        model = LlamaCppModel.load(ModelRegistry(vault), options=LlamaCppOptions(n_ctx=512, max_parallel=1))
        server = ApiServer(vault, Executive(model, model, "bench"), port=0).start()
        try:
            hammer(server.url + "/healthz", None, 20, 5)  # warm-up: imports, first connections
            routes = {
                "/healthz": hammer(server.url + "/healthz", None, args.requests, args.concurrency),
                "/v1/models": hammer(server.url + "/v1/models", token, args.requests, args.concurrency),
            }
        finally:
            server.stop()
            model.close()
        audited = sum(1 for e in vault.audit.entries() if e.action == "api.request")
    result = {
        "label": args.label, "server": getattr(server, "engine", type(server).__mro__[1].__module__ + "." + type(server).__mro__[1].__name__),
        "routes": routes, "api_request_entries": audited,
        "machine": {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
                    "python": platform.python_version(), "platform": platform.platform()},
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    table = Table(title=f"API load ({args.label}): {args.requests} requests, {args.concurrency} concurrent clients")
    for col in ("route", "ok", "failed", "p50 ms", "p95 ms", "mean ms", "req/s"):
        table.add_column(col, justify="right" if col != "route" else "left")
    for route, r in routes.items():
        table.add_row(route, str(r["ok"]), str(r["failed"]), str(r["p50_ms"]), str(r["p95_ms"]), str(r["mean_ms"]), str(r["rps"]))
    console.print(table)
    console.print(f"machine load (1 min) {result['machine']['load_avg_1m']} on {os.cpu_count()} CPUs")
    merged: dict[str, Any] = {}
    if args.json.exists():
        try:
            merged = json.loads(args.json.read_text())
        except ValueError:
            merged = {}
    merged[args.label] = result
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(merged, indent=2))
    console.print(f"wrote {args.json} ({args.label})")


if __name__ == "__main__":
    main()
