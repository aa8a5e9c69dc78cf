"""`memo demo`: the main job, end to end, on the bundled sample corpus.

ingest → verify → reflections → memory training → GGUF export (verified) → answers.

The demo keeps its own vault (default ``./.memo-demo``) unlocked by a key file beside it, so it
runs unattended and never touches the operator's real appliance home. Every stage is resumable
and skipped when its result is already there, so re-running the demo is cheap. The whole corpus
is ingested; reflections and training use a slice of four documents by default (a superseded
policy pair and the two pages behind the multi-hop questions), because training on two CPU cores
is the slow part; ``--full`` uses every document.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from appliance.config import Settings
from appliance.corpus.documents import list_documents
from appliance.corpus.ingest import ingest
from appliance.corpus.readers import short_type
from appliance.errors import MemoError
from appliance.vault.keys import Secret, generate_key_file
from appliance.vault.store import Vault

SAMPLE_CORPUS = Path(__file__).parent / "samples" / "halq-wiki"
DEMO_SLICE = ("hr/travel-policy-2024.md", "hr/travel-policy-2025.md", "hr/org-chart.md", "it/systems-inventory.html")


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


def _every(console: Console, label: str, started: float):  # noqa: ANN202
    def tick(done: int, total: int, extra: str = "") -> None:
        if done == 1 or done % 10 == 0 or done == total:
            rate = done / max(time.monotonic() - started, 1e-9)
            console.print(f"  {label} {done}/{total} {extra}; ETA {(total - done) / rate:.0f} s")
    return tick


def ingest_stage(vault: Vault, corpus: Path, console: Console) -> list:
    """Ingest a corpus (unchanged files are skipped) and show its documents."""
    report = ingest(vault, [corpus])
    s = report.summary()
    console.print(
        f"{s['files']} files: {s['added']} added, {s['new_version']} new versions, {s['unchanged']} unchanged, "
        f"{s['duplicate']} exact duplicates, {s['near_duplicates']} near-duplicates, {s['skipped']} skipped, "
        f"{s['chunks']} chunks in {s['seconds']:.1f} s"
    )
    docs = list_documents(vault)
    table = Table("id", "title", "type", "chunks", "duplicate")
    for d in docs:
        table.add_row(d.id, d.title[:44], short_type(d.media_type), str(d.chunks), d.duplicate_label)
    console.print(table)
    return docs


def reflect_stage(vault: Vault, console: Console, doc_ids: set[str] | None = None, generator: str = "local") -> list:
    """Write the reflections still missing (resumable: done units are skipped); return the pairs."""
    from appliance.llm.connect import open_model
    from appliance.reflect.generate import reflect, stats
    from appliance.reflect.store import load_pairs

    model = open_model(vault, generator, "generator")
    console.print(f"generator: {model.identity}")
    started = time.monotonic()
    progress = _every(console, "unit", started)
    rep = reflect(vault, model, progress=lambda u, d, t: progress(d, t, f"({u.unit_kind}, {len(u.pairs)} pairs)"), doc_ids=doc_ids)
    st = stats(vault)
    console.print(f"{rep.generated} units generated now ({rep.skipped_done} already done): {st.pairs} pairs kept, "
                  f"{st.rejected} rejected ({st.rejection_rate:.0%}); kinds: {st.per_kind}")
    pairs = load_pairs(vault, doc_ids)
    for kind in ("fact", "paraphrase", "current", "relation", "entity"):
        sample = next((p for p in pairs if p.kind == kind), None)
        if sample:
            console.print(escape(f"  [{kind}] {sample.question}  →  {sample.answer[:110]}"))
    return pairs


def memory_stage(vault: Vault, pairs: list, console: Console):  # noqa: ANN201
    """Train, export and promote a memory on ``pairs`` unless a promoted one was already trained on them.

    Returns (version, train_pairs, probes).
    """
    from appliance.export.pipeline import export_version, promote_version
    from appliance.memory.train import split_probes, train_memory
    from appliance.memory.versions import list_versions, promoted

    train_pairs, probes = split_probes(pairs)
    current = promoted(vault)
    done = next((v for v in list_versions(vault) if v.lineage.get("reflections", {}).get("pairs") == len(train_pairs)
                 and v.status == "promoted"), None)
    if done:
        console.print(f"{done.id} already trained on these {len(train_pairs)} pairs and promoted")
        return done, train_pairs, probes
    started = time.monotonic()
    step_tick = _every(console, "step", started)
    version = train_memory(vault, train_pairs, progress=lambda si: step_tick(si.step, si.total, f"loss {si.loss:.3f} {si.tokens_per_second:.0f} tok/s"),
                           lineage_extra={"held_out_probes": len(probes)})
    m = version.metrics
    console.print(f"trained {version.id}: loss {m['train_loss_first']} → {m['train_loss_last']} in {m['train_seconds']:.0f} s")

    console.rule("4. GGUF export")
    results = export_version(vault, version.id)
    for t, r in results.items():
        if "refused" in r:
            console.print(f"  {t}: refused: {r['refused']}")
        else:
            console.print(f"  {t}: {r['size'] / 1e6:.0f} MB, llama.cpp vs transformers greedy answers agree {r['answer_agreement']:.0%}")
    promote_version(vault, version.id)
    console.print(f"{version.id} promoted (was: {current.id if current else 'none'})")
    return version, train_pairs, probes


# questions of the development set whose answers lie in the demo slice: a single fact, a multi-hop
# one (team of a system → its lead) and a "value in force now" one (2025 policy over 2024)
DEMO_QUESTIONS = ("q035", "q051", "q052", "q030")
QUESTIONS_FILE = SAMPLE_CORPUS.parent / "halq-wiki.questions.jsonl"


def executive_stage(vault: Vault, console: Console, question_ids: tuple[str, ...] = DEMO_QUESTIONS) -> None:
    """The executive answers a few development-set questions through the memory, with their traces."""

    from appliance.executive.session import ask, open_executive, source_titles

    wanted = {q["id"]: q for q in map(json.loads, QUESTIONS_FILE.read_text().splitlines()) if q["id"] in question_ids}
    executive = open_executive(vault)
    console.print(f"executive: {executive.executive_model.identity}; memory: {executive.memory_version}")
    for qid in question_ids:
        q = wanted[qid]
        trace = ask(vault, executive, q["question"], actor="demo", channel="demo")
        console.print(escape(f"  Q ({q['kind']}): {q['question']}   [gold: {q['answers'][0]}]"))
        for s in trace.sub_answers:
            console.print(escape(f"     memory ← {s.question}\n            → {s.answer}"), style="dim")
        titles = source_titles(vault, trace.sources)
        console.print(escape(f"  A: {trace.answer}"), style="bold")
        console.print(escape(f"     sources: {'; '.join(f'{d} {t}' for d, t in titles.items()) or '-'}; {trace.seconds:.1f} s"))


def run_demo(demo_dir: Path, fresh: bool = False, console: Console | None = None, full: bool = False) -> None:
    from appliance.llm.connect import open_model
    from appliance.memory.evaluate import ask_memory, evaluate
    from appliance.memory.serve import SERVE_TYPE, open_memory
    from appliance.memory.versions import promoted

    console = console or Console()
    home, key = demo_paths(demo_dir)
    console.rule("[bold]memo demo")
    console.print(f"vault: {home}\nkey file: {key} (a demo convenience: in production keep the key off the appliance's disk)")

    console.rule("1. ingest")
    vault = open_demo_vault(demo_dir, fresh)
    docs = ingest_stage(vault, SAMPLE_CORPUS, console)

    console.rule("2. reflections")
    chosen = None if full else {d.id for d in docs if any(d.source.endswith(p) for p in DEMO_SLICE)}
    if chosen is not None:
        console.print(f"slice: {len(chosen)} documents ({', '.join(DEMO_SLICE)}); `memo demo --full` reflects on all")
    pairs = reflect_stage(vault, console, chosen)

    console.rule("3. memory training")
    _, train_pairs, probes = memory_stage(vault, pairs, console)

    console.rule("5. answers")
    memory = open_memory(vault)
    before = evaluate(open_model(vault, "local", "generator"), probes)
    after = evaluate(memory, probes)
    console.print(f"held-out paraphrased probes ({after.probes}): untrained base {before.contains:.0%} → memory {after.contains:.0%} "
                  f"(answer contains the gold value); memory named the right source {after.source_accuracy:.0%}")
    for q in [p.question for p in probes[:3]] + [p.question for p in train_pairs if p.kind in ("current", "relation")][:2]:
        answer, sources = ask_memory(memory, [q])[0]
        console.print(f"  Q: {escape(q)}\n  A: {escape(answer)}  " + escape(f"[sources: {', '.join(sources) or '-'}]"))
    vault.audit.append("demo", "memory.demo_answers", promoted(vault).id, probes=after.probes, contains=after.contains,
                       base_contains=before.contains)

    console.rule("6. executive")
    executive_stage(vault, console)

    console.rule("7. verify")
    result = vault.verify()
    if not result.ok:
        raise MemoError("demo vault failed verification: " + "; ".join(result.problems))
    console.print(f"vault OK: {result.checked_files} encrypted files authenticated; audit chain OK ({result.audit['entries']} entries)")
    console.rule("done")
    console.print(f"serving memory: {promoted(vault).id} ({SERVE_TYPE} GGUF, decrypted in RAM only)")
    console.print(f"explore: memo --home {home} --key-file {key} docs list | reflect stats | memory list | eval --show")
