"""`memo demo`: the main job, end to end, on the bundled sample corpus.

The demo keeps its own vault (default ``./.memo-demo``) unlocked by a key file beside it, so it
runs unattended and never touches the operator's real appliance home. Re-running it is cheap:
unchanged documents are skipped.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from appliance.config import Settings
from appliance.corpus.documents import list_documents
from appliance.corpus.ingest import ingest
from appliance.corpus.readers import short_type
from appliance.errors import MemoError
from appliance.vault.keys import Secret, generate_key_file
from appliance.vault.store import Vault

SAMPLE_CORPUS = Path(__file__).parent / "samples" / "halq-wiki"


def demo_paths(demo_dir: Path) -> tuple[Path, Path]:
    demo_dir = demo_dir.expanduser().resolve()
    return demo_dir / "home", demo_dir / "demo.key"


def open_demo_vault(demo_dir: Path, fresh: bool = False) -> Vault:
    home, key = demo_paths(demo_dir)
    if fresh and demo_dir.exists():
        shutil.rmtree(demo_dir)
    demo_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not key.exists():
        if home.exists() and any(home.iterdir()):
            raise MemoError(f"{home} holds a vault but its key {key} is gone; run `memo demo --fresh`")
        generate_key_file(key)
    settings = Settings.load(home)
    secret = Secret(key_file=key)
    return Vault.open(settings, secret) if Vault.exists(settings) else Vault.init(settings, secret)


def run_demo(demo_dir: Path, fresh: bool = False, console: Console | None = None) -> None:
    console = console or Console()
    home, key = demo_paths(demo_dir)
    console.rule("[bold]memo demo")
    console.print(f"vault: {home}\nkey file: {key} (a demo convenience: in production keep the key off the appliance's disk)")

    console.rule("1. ingest")
    vault = open_demo_vault(demo_dir, fresh)
    report = ingest(vault, [SAMPLE_CORPUS])
    s = report.summary()
    console.print(
        f"{s['files']} files: {s['added']} added, {s['new_version']} new versions, {s['unchanged']} unchanged, "
        f"{s['duplicate']} exact duplicates, {s['near_duplicates']} near-duplicates, {s['skipped']} skipped, "
        f"{s['chunks']} chunks in {s['seconds']:.1f} s"
    )
    for o in report.outcomes:
        if o.status == "skipped":
            console.print(f"  skipped: {o.reason}")
    table = Table("id", "title", "type", "chunks", "duplicate")
    for d in list_documents(vault):
        dup = f"{d.duplicate_kind} of {d.duplicate_of}" + (f" ({d.similarity:.2f})" if d.duplicate_kind == "near" else "") if d.duplicate_of else ""
        table.add_row(d.id, d.title[:44], short_type(d.media_type), str(d.chunks), dup)
    console.print(table)

    console.rule("2. verify")
    result = vault.verify()
    if not result.ok:
        raise MemoError("demo vault failed verification: " + "; ".join(result.problems))
    console.print(f"vault OK: {result.checked_files} encrypted files authenticated; audit chain OK ({result.audit['entries']} entries)")
    console.rule("3. reflections")
    from appliance.llm.connect import open_model
    from appliance.reflect.generate import reflect, stats
    from appliance.reflect.store import load_pairs

    generator = open_model(vault, "local", "generator")
    console.print(f"generator: {generator.identity} (resumable: interrupt and re-run to continue)")
    started = time.monotonic()

    def tick(unit, done: int, total: int) -> None:  # noqa: ANN001
        if done == 1 or done % 10 == 0 or done == total:
            rate = done / max(time.monotonic() - started, 1e-9)
            console.print(f"  unit {done}/{total}: {len(unit.pairs)} pairs ({unit.unit_kind}); ETA {(total - done) / rate:.0f} s")

    rep = reflect(vault, generator, progress=tick)
    st = stats(vault)
    console.print(f"{rep.generated} units generated now ({rep.skipped_done} already done): {st.pairs} pairs kept, "
                  f"{st.rejected} rejected ({st.rejection_rate:.0%}); kinds: {st.per_kind}")
    pairs = load_pairs(vault)
    for kind in ("fact", "paraphrase", "current", "relation", "entity"):
        sample = next((p for p in pairs if p.kind == kind), None)
        if sample:
            console.print(f"  [{kind}] {sample.question}  →  {sample.answer[:110]}")

    console.rule("done")
    console.print(f"explore: MEMO_HOME={home} memo --key-file {key} docs list")
