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

from appliance.app import corpus as corpus_app
from appliance.app import memory as memory_app
from appliance.app import qa as qa_app
from appliance.app import serving as serving_app
from appliance.app.session import Session, create_vault, open_session
from appliance.config import Settings
from appliance.corpus.readers import short_type
from appliance.errors import MemoError
from appliance.vault.keys import Secret, generate_key_file
from appliance.vault.store import Vault

DEMO_PRINCIPAL = "demo"  # the demo vault's administrator: its key file's slot


def _session(vault: Vault) -> Session:
    return Session.of(vault, "demo")

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
    opened = open_session(settings, secret, "demo") if Vault.exists(settings) else create_vault(settings, secret, DEMO_PRINCIPAL, "demo")
    return opened.vault


def _every(console: Console, label: str, started: float):  # noqa: ANN202
    def tick(done: int, total: int, extra: str = "") -> None:
        if done == 1 or done % 10 == 0 or done == total:
            rate = done / max(time.monotonic() - started, 1e-9)
            console.print(f"  {label} {done}/{total} {extra}; ETA {(total - done) / rate:.0f} s")
    return tick


class _Stages:
    """Each stage's wall time, printed as it ends and summed at the end: the demo is judged by its
    minutes, and a newcomer (or a benchmark) should see where they go without a profiler."""

    def __init__(self, console: Console) -> None:
        self.console, self.started = console, time.monotonic()
        self.times: dict[str, float] = {}
        self._name, self._at = "", self.started

    def start(self, title: str) -> None:
        self.end()
        self.console.rule(title)
        self._name, self._at = title.split(". ", 1)[-1], time.monotonic()

    def end(self) -> None:
        if self._name:
            self.times[self._name] = time.monotonic() - self._at
            self.console.print(f"  ({self._name}: {self.times[self._name]:.0f} s)", style="dim")
            self._name = ""

    def summary(self) -> str:
        self.end()
        parts = ", ".join(f"{name} {sec:.0f}" for name, sec in self.times.items())
        return f"{time.monotonic() - self.started:.0f} s in all ({parts})"


def ingest_stage(vault: Vault, corpus: Path, console: Console) -> list:
    """Ingest a corpus (unchanged files are skipped) and show its documents."""
    report = corpus_app.ingest(_session(vault), [corpus])
    s = report.summary()
    console.print(
        f"{s['files']} files: {s['added']} added, {s['new_version']} new versions, {s['unchanged']} unchanged, "
        f"{s['duplicate']} exact duplicates, {s['near_duplicates']} near-duplicates, {s['skipped']} skipped, "
        f"{s['chunks']} chunks in {s['seconds']:.1f} s"
    )
    docs = corpus_app.documents(_session(vault))
    table = Table("id", "title", "type", "chunks", "duplicate")
    for d in docs:
        table.add_row(d.id, d.title[:44], short_type(d.media_type), str(d.chunks), d.duplicate_label)
    console.print(table)
    return docs


def reflect_stage(vault: Vault, console: Console, doc_ids: set[str] | None = None, generator: str = "local") -> list:
    """Write the reflections still missing (resumable: done units are skipped); return the pairs."""
    from appliance.reflect.generate import stats
    from appliance.reflect.store import load_pairs

    model = memory_app.open_generator(_session(vault), generator)
    console.print(f"generator: {model.identity}")
    started = time.monotonic()
    progress = _every(console, "unit", started)
    rep = memory_app.reflect(_session(vault), model, progress=lambda u, d, t: progress(d, t, f"({u.unit_kind}, {len(u.pairs)} pairs)"), doc_ids=doc_ids)
    st = stats(vault)
    console.print(f"{rep.generated} units generated now ({rep.skipped_done} already done): {st.pairs} pairs kept, "
                  f"{st.rejected} rejected ({st.rejection_rate:.0%}); kinds: {st.per_kind}")
    pairs = load_pairs(vault, doc_ids)
    from appliance.memory.diagnosis import coverage

    facts, covered, _ = coverage(vault)
    trained = [p for p in pairs if p.split == "train"]
    console.print(f"{len(trained)} training wordings for {covered} of {facts} facts (coverage {covered / max(facts, 1):.0%}), "
                  f"{len(pairs) - len(trained)} held-out probes")
    shown = ("wh", "of", "cloze-context", "now", "plain", "reverse-has", "composed-wh", "composed-of", "negative-of")
    for kind in ("fact", "reverse", "current", "composed", "unknown"):
        mine = [p for p in pairs if p.kind == kind and p.split == "train"]
        sample = min(mine, key=lambda p: (p.wording not in shown, len(p.question)), default=None)
        if sample:
            console.print(escape(f"  [{kind}] {sample.question}  →  {sample.answer[:110]}"))
    return pairs


def memory_stage(vault: Vault, pairs: list, console: Console, stages: _Stages | None = None):  # noqa: ANN201
    """Train, export and promote a memory on ``pairs`` unless a promoted one was already trained on them.

    Returns (version, train_pairs, probes).
    """
    from appliance.memory.train import split_probes, stop_summary
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

    def on_eval(ev) -> None:  # noqa: ANN001
        held = "-" if ev.held_out is None else f"{ev.held_out:.0%}"
        console.print(f"  after {ev.label}: held-out recall {held}, training recall {ev.training:.0%}")

    version = memory_app.train(_session(vault), pairs=pairs, on_eval=on_eval,
                           progress=lambda si: step_tick(si.step, si.total, f"loss {si.loss:.3f} {si.examples_per_second:.1f} examples/s")).version
    m = version.metrics
    exp = m.get("exposures") or {}
    console.print(f"trained {version.id}: {m['facts']} facts, {m['epochs']} epochs ({stop_summary(m)}), {exp.get('mean', 0):.0f} "
                  f"exposures per fact; loss {m['train_loss_first']} → {m['train_loss_last']} in {m['train_seconds']:.0f} s")

    if stages is not None:
        stages.start("4. GGUF export")
    else:
        console.rule("4. GGUF export")
    results = memory_app.export(_session(vault), version.id)
    for t, r in results.items():
        if "refused" in r:
            console.print(f"  {t}: refused: {r['refused']}")
        else:
            console.print(f"  {t}: {r['size'] / 1e6:.0f} MB, llama.cpp vs transformers greedy answers agree {r['answer_agreement']:.0%}")
    serving_app.promote(_session(vault), version.id)
    console.print(f"{version.id} promoted (was: {current.id if current else 'none'})")
    return version, train_pairs, probes


# questions of the development set whose answers lie in the demo slice: a single fact, a multi-hop
# one (team of a system → its lead) and a "value in force now" one (2025 policy over 2024)
DEMO_QUESTIONS = ("q035", "q051", "q052", "q030")
QUESTIONS_FILE = SAMPLE_CORPUS.parent / "halq-wiki.questions.jsonl"


def executive_stage(vault: Vault, console: Console, question_ids: tuple[str, ...] = DEMO_QUESTIONS) -> None:
    """The executive answers a few development-set questions through the memory, with their traces."""

    from appliance.executive.session import source_titles

    wanted = {q["id"]: q for q in map(json.loads, QUESTIONS_FILE.read_text().splitlines()) if q["id"] in question_ids}
    executive = serving_app.open_executive(_session(vault))
    console.print(f"executive: {executive.executive_model.identity}; memory: {executive.memory_version}")
    for qid in question_ids:
        q = wanted[qid]
        trace = qa_app.ask(_session(vault), executive, q["question"])
        console.print(escape(f"  Q ({q['kind']}): {q['question']}   [gold: {q['answers'][0]}]"))
        for s in trace.sub_answers:
            console.print(escape(f"     memory ← {s.question}\n            → {s.answer} ({s.confidence:.2f})"), style="dim")
        titles = source_titles(vault, trace.sources)
        console.print(escape(f"  A: {trace.answer}"), style="bold")
        console.print(escape(f"     sources: {'; '.join(f'{d} {t}' for d, t in titles.items()) or '-'}; {trace.seconds:.1f} s"))


def run_demo(demo_dir: Path, fresh: bool = False, console: Console | None = None, full: bool = False) -> None:
    from appliance.llm.connect import open_model
    from appliance.memory.evaluate import evaluate
    from appliance.memory.recall import Memory
    from appliance.memory.serve import SERVE_TYPE
    from appliance.memory.versions import promoted

    console = console or Console()
    home, key = demo_paths(demo_dir)
    console.rule("[bold]memo demo")
    console.print(f"vault: {home}\nkey file: {key} (a demo convenience: in production keep the key off the appliance's disk)")

    stages = _Stages(console)
    stages.start("1. ingest")
    vault = open_demo_vault(demo_dir, fresh)
    docs = ingest_stage(vault, SAMPLE_CORPUS, console)

    stages.start("2. reflections")
    chosen = None if full else {d.id for d in docs if any(d.source.endswith(p) for p in DEMO_SLICE)}
    if chosen is not None:
        console.print(f"slice: {len(chosen)} documents ({', '.join(DEMO_SLICE)}); `memo demo --full` reflects on all")
    pairs = reflect_stage(vault, console, chosen)

    stages.start("3. memory training")
    _, train_pairs, probes = memory_stage(vault, pairs, console, stages)

    stages.start("5. answers")
    memory = serving_app.open_memory(_session(vault))
    before = evaluate(Memory(open_model(vault, "local", "generator")), probes)
    after = evaluate(memory, probes)
    console.print(f"held-out probes ({after.probes}, wordings never trained on): untrained base {before.contains:.0%} → "
                  f"memory {after.contains:.0%} (answer contains the gold value); memory named the right source "
                  f"{after.source_accuracy:.0%}")
    shown = [p.question for p in probes[:3]] + [p.question for p in train_pairs if p.kind in ("current", "composed")][:2]
    for r in memory.ask(shown):
        console.print(f"  Q: {escape(r.question)}\n  A: {escape(r.answer)}  "
                      + escape(f"[sources: {', '.join(r.sources) or '-'}; confidence {r.confidence:.2f}]"))
    vault.audit.append(vault.principal, "memory.demo_answers", promoted(vault).id, probes=after.probes, contains=after.contains,
                       base_contains=before.contains)

    stages.start("6. executive")
    executive_stage(vault, console)

    stages.start("7. verify")
    from appliance.app.vault import verify

    result = verify(_session(vault))
    if not result.ok:
        raise MemoError("demo vault failed verification: " + "; ".join(result.problems))
    console.print(f"vault OK: {result.checked_files} encrypted files authenticated; audit chain OK ({result.audit['entries']} entries)")
    console.rule("done")
    console.print(f"demo: {stages.summary()}")
    console.print(f"serving memory: {promoted(vault).id} ({SERVE_TYPE} GGUF, decrypted in RAM only)")
    console.print(f"explore: memo --home {home} --key-file {key} docs list | reflect stats | memory list | eval --show")
