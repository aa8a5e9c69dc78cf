"""Benchmark: ingest of the hostile corpus (zip bomb and the rest): outcome of each file, wall
time, and peak resident memory of the ingest process and of its parser workers.

    .venv/bin/python -m bench.hostile_ingest [--bomb-mb 300] [--json bench/results/hostile_ingest.json]

The corpus is the one ``tests/corpus/test_hostile.py`` asserts (built by ``bench.hostile_files``),
ingested into a fresh vault with the production KDF in this process; peak RSS is
``getrusage`` for this process and each parser worker's own VmHWM, sampled while it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from appliance.config import Settings
from appliance.corpus.ingest import ingest
from appliance.vault.keys import Secret
from appliance.vault.store import Vault
from bench import hostile_files as h


def build(folder: Path, outside: Path, bomb_mb: int, bomb_only: bool = False) -> None:
    folder.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("payroll: not for the vault")
    (folder / "good.md").write_text("# Good page\n\nKestrel Yard opens at 06:00.\n")
    h.zip_bomb_docx(folder / "bomb.docx", bomb_mb)
    if bomb_only:
        return
    h.docx_text(folder / "good.docx", "The Fleet Dispatch lead is Ann Quist.")
    h.lying_zip_docx(folder / "lying-sizes.docx", 64)
    h.billion_laughs_docx(folder / "billion-laughs.docx")
    h.huge_text_node_docx(folder / "huge-text-node.docx", 12)
    h.broken_xml_docx(folder / "broken-xml.docx")
    h.bodyless_docx(folder / "no-body.docx")
    h.not_a_zip_docx(folder / "not-a-zip.docx")
    h.looping_pdf(folder / "looping-pages.pdf")
    h.truncated_pdf(folder / "truncated.pdf")
    h.deep_html(folder / "deep-tables.html", 20_000)
    h.escaping_symlink(folder / "passwd-link.txt", outside / "secret.txt")
    h.escaping_symlink(folder / "etc-link", outside)
    h.fifo(folder / "inbox-pipe.txt")
    h.device(folder / "null-device.txt")
    h.non_utf8_name(folder)
    (folder / "two\nlines.md").write_text("# Two lines\n\nA newline in the name.\n")


class WorkerPeak:
    """Samples the parser workers' own peak RSS (VmHWM) while they live: getrusage's figure for
    children counts the parent's image they were spawned from."""

    def __init__(self) -> None:
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _children(self) -> list[str]:
        pids: list[str] = []
        for task in Path("/proc/self/task").iterdir():
            try:
                pids += (task / "children").read_text().split()
            except OSError:
                pass
        return pids

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for pid in self._children():
                try:
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            self.peak_kib = max(self.peak_kib, int(line.split()[1]))
                except OSError:
                    pass

    def __enter__(self) -> "WorkerPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bomb-mb", type=int, default=300, help="what the zip bomb unpacks to")
    ap.add_argument("--bomb-only", action="store_true", help="the bomb and one good file, nothing else")
    ap.add_argument("--json", type=Path, default=None, help="default: bench/results/hostile_ingest[_bomb].json")
    args = ap.parse_args()
    args.json = args.json or Path(f"bench/results/hostile_ingest{'_bomb' if args.bomb_only else ''}.json")
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        build(corpus, Path(tmp) / "elsewhere", args.bomb_mb, args.bomb_only)
        bomb_size = (corpus / "bomb.docx").stat().st_size
        vault = Vault.init(Settings(home=Path(tmp) / "home"), Secret(passphrase="benchmark passphrase"))
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        with WorkerPeak() as workers:
            report = ingest(vault, [corpus])
        wall = time.perf_counter() - started
        verified = vault.verify().ok
    rows = [{"file": o.path.rsplit("/", 1)[-1], "status": o.status, "reason": (o.reason or "").split(": ", 1)[-1]}
            for o in report.outcomes]
    result = {
        "bomb_bytes": bomb_size, "bomb_unpacked_mb": args.bomb_mb, "files": len(rows), "ingest_s": round(wall, 3),
        "peak_rss_mib_ingest_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_mib_before_ingest": round(rss_before / 1024, 1),
        "peak_rss_mib_parser_workers": round(workers.peak_kib / 1024, 1),
        "verify_ok": verified, "outcomes": rows,
        "machine": {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2), "python": platform.python_version()},
    }
    table = Table(title=f"hostile corpus: {len(rows)} files in {wall:.2f} s")
    for col in ("file", "status", "reason"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["file"], r["status"], r["reason"][:110])
    console.print(table)
    console.print(f"bomb: {bomb_size / 1e6:.2f} MB on disk, {args.bomb_mb} MB unpacked; peak RSS ingest process "
                  f"{result['peak_rss_mib_ingest_process']} MiB (before ingest {result['rss_mib_before_ingest']} MiB), "
                  f"parser workers {result['peak_rss_mib_parser_workers']} MiB; vault verifies: {verified}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
