"""The `memo` command: a thin layer over the appliance API (the console calls the same functions).

Errors an operator can act on print one line and exit 1; progress goes to stderr so that
``--json`` output on stdout stays machine-readable.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from appliance import __version__
from appliance.config import Settings
from appliance.errors import MemoError
from appliance.vault.keys import Secret

out = Console(highlight=False)
if not out.is_terminal:  # pipes and logs get full ids and paths instead of 80-column wrapping
    out = Console(highlight=False, width=200)
err = Console(stderr=True, highlight=False, soft_wrap=True)  # an error stays one line


@dataclass
class Ctx:
    home: Path | None
    key_file: Path | None

    @property
    def settings(self) -> Settings:
        return Settings.load(self.home)

    def secret(self, allow_prompt: bool = True) -> Secret:
        passphrase = os.environ.get("MEMO_PASSPHRASE")
        key_file = self.key_file or (Path(os.environ["MEMO_KEY_FILE"]) if os.environ.get("MEMO_KEY_FILE") else None)
        if passphrase is None and key_file is None and allow_prompt and sys.stdin.isatty():
            passphrase = click.prompt("Vault passphrase", hide_input=True, err=True)
        return Secret(passphrase=passphrase, key_file=key_file)

    def vault(self):  # noqa: ANN201
        from appliance.vault.store import Vault

        return Vault.open(self.settings, self.secret())


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def progress_bar(label: str) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err,
        transient=False,
        disable=not err.is_terminal and not os.environ.get("MEMO_PROGRESS"),
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="memo")
@click.option("--home", type=click.Path(path_type=Path), envvar="MEMO_HOME", help="Appliance data directory (env MEMO_HOME; default: XDG data dir).")
@click.option("--key-file", type=click.Path(path_type=Path), help="Unlock with this key file instead of a passphrase (env MEMO_KEY_FILE).")
@click.pass_context
def cli(ctx: click.Context, home: Path | None, key_file: Path | None) -> None:
    """memo: a private corpus written into the weights of a small memory model.

    Unlock non-interactively with MEMO_PASSPHRASE or --key-file FILE.
    """
    ctx.obj = Ctx(home, key_file)


# ---------------------------------------------------------------- init + vault
@cli.command()
@click.option("--no-passphrase", is_flag=True, help="Create the vault with a key file only.")
@click.pass_obj
def init(c: Ctx, no_passphrase: bool) -> None:
    """Create a new encrypted vault in the appliance home."""
    from appliance.vault.store import Vault

    passphrase = None if no_passphrase else os.environ.get("MEMO_PASSPHRASE")
    if passphrase is None and not no_passphrase:
        if not sys.stdin.isatty():
            if c.key_file is None:
                raise MemoError("no secret given: set MEMO_PASSPHRASE or pass --key-file FILE (with --no-passphrase)")
        else:
            passphrase = click.prompt("New vault passphrase", hide_input=True, confirmation_prompt=True, err=True)
    vault = Vault.init(c.settings, Secret(passphrase=passphrase, key_file=c.key_file))
    out.print(f"created vault {vault.keyring.vault_id} at {vault.home} (unlocks with: {', '.join(vault.keyring.slot_types())})")


@cli.group()
def vault() -> None:
    """Vault state, integrity and keys."""


@vault.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def vault_status(c: Ctx, as_json: bool) -> None:
    """Counts and sizes of what the vault holds."""
    st = c.vault().status()
    if as_json:
        return emit_json(st.to_dict())
    table = Table(show_header=False, box=None)
    for k, v in st.to_dict().items():
        table.add_row(k.replace("_", " "), ", ".join(v) if isinstance(v, list) else str(v))
    out.print(table)


@vault.command("verify")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def vault_verify(c: Ctx, as_json: bool) -> None:
    """Authenticate every vault file and the audit chain; name each broken file."""
    v = c.vault()
    with progress_bar("verify") as bar:
        task = bar.add_task("verify", total=None, rate="")
        report = v.verify(lambda done, total: bar.update(task, completed=done, total=total))
    if as_json:
        emit_json(report.to_dict())
    else:
        for problem in report.problems:
            err.print(f"[red]FAIL[/] {escape(problem)}")
        if report.orphans:
            out.print(f"{len(report.orphans)} unreferenced object(s) from an interrupted run: `memo vault gc` removes them")
        out.print(f"{'OK' if report.ok else 'FAILED'}: {report.checked_files} files checked, audit entries: {report.audit.get('entries')}")
    if not report.ok:
        raise SystemExit(1)


@vault.command("rekey")
@click.option("--new-key-file", type=click.Path(path_type=Path), help="Key file for the new slot.")
@click.option("--no-passphrase", is_flag=True, help="Drop the passphrase slot (key file only).")
@click.pass_obj
def vault_rekey(c: Ctx, new_key_file: Path | None, no_passphrase: bool) -> None:
    """Re-wrap the data key with a new passphrase and/or key file (env MEMO_NEW_PASSPHRASE); no data is re-encrypted."""
    v = c.vault()
    passphrase = None
    if not no_passphrase:
        passphrase = os.environ.get("MEMO_NEW_PASSPHRASE")
        if passphrase is None:
            if not sys.stdin.isatty():
                raise MemoError("no new passphrase: set MEMO_NEW_PASSPHRASE, or pass --no-passphrase with --new-key-file")
            passphrase = click.prompt("New passphrase", hide_input=True, confirmation_prompt=True, err=True)
    v.rekey(Secret(passphrase=passphrase, key_file=new_key_file))
    out.print(f"rekeyed: vault now unlocks with {', '.join(v.keyring.slot_types())}; old secrets no longer work")


@vault.command("keygen")
@click.argument("path", type=click.Path(path_type=Path))
def vault_keygen(path: Path) -> None:
    """Write a new random key file (mode 0400) for --key-file."""
    from appliance.vault.keys import generate_key_file

    generate_key_file(path)
    out.print(f"wrote key file {path}; keep it off this machine's disk in production (e.g. a token or HSM-backed mount)")


@vault.command("gc")
@click.pass_obj
def vault_gc(c: Ctx) -> None:
    """Remove objects no document references (left by an interrupted ingest)."""
    out.print(f"removed {c.vault().gc()} unreferenced object(s)")


# ---------------------------------------------------------------- ingest + docs
@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--allow-forgotten", is_flag=True, help="Ingest again documents that were forgotten.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def ingest(c: Ctx, paths: tuple[Path, ...], allow_forgotten: bool, as_json: bool) -> None:
    """Ingest files and folders (txt, md, html, pdf, docx) into the vault."""
    from appliance.corpus.ingest import ingest as run_ingest

    v = c.vault()
    with progress_bar("ingest") as bar:
        task = bar.add_task("ingest", total=None, rate="")
        state = {"bytes": 0, "chunks": 0}

        def tick(outcome, done: int, total: int) -> None:  # noqa: ANN001
            state["bytes"] += outcome.bytes
            state["chunks"] += outcome.chunks
            elapsed = bar.tasks[task].elapsed or 1e-9
            bar.update(task, completed=done, total=total,
                       rate=f"{state['bytes'] / 2**20 / elapsed:.2f} MB/s {state['chunks'] / elapsed:.0f} chunks/s")

        report = run_ingest(v, paths, progress=tick, allow_forgotten=allow_forgotten)
    if as_json:
        return emit_json(report.to_dict())
    for o in report.outcomes:
        if o.status == "skipped":
            err.print(f"[yellow]skipped[/] {escape(o.reason or '')}")
        elif o.status == "duplicate":
            out.print(f"duplicate  {o.path} = {o.duplicate_of} (identical text, not chunked again)")
        elif o.similarity is not None:
            out.print(f"near-dup   {o.path} ~ {o.duplicate_of} (similarity {o.similarity:.2f})")
    s = report.summary()
    out.print(
        f"{s['files']} files: {s['added']} added, {s['new_version']} new versions, {s['unchanged']} unchanged, "
        f"{s['duplicate']} duplicates, {s['near_duplicates']} near-duplicates, {s['skipped']} skipped; "
        f"{s['chunks']} chunks, {s['bytes'] / 1e6:.2f} MB in {s['seconds']:.1f} s"
    )


@cli.group()
def docs() -> None:
    """Ingested documents and their versions."""


@docs.command("list")
@click.option("--all", "include_forgotten", is_flag=True, help="Include forgotten documents.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def docs_list(c: Ctx, include_forgotten: bool, as_json: bool) -> None:
    """List documents with their latest version."""
    from appliance.corpus.documents import list_documents

    rows = list_documents(c.vault(), include_forgotten)
    if as_json:
        return emit_json([r.to_dict() for r in rows])
    from appliance.corpus.readers import short_type

    table = Table("id", "title", "type", "v", "status", "chunks", "duplicate", "source")
    for r in rows:
        table.add_row(r.id, r.title[:40], short_type(r.media_type), str(r.version), r.status, str(r.chunks), r.duplicate_label, r.source)
    out.print(table)
    out.print(f"{len(rows)} document(s)")


@docs.command("show")
@click.argument("doc_id")
@click.option("--text", "with_text", is_flag=True, help="Print the extracted text of the latest version.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def docs_show(c: Ctx, doc_id: str, with_text: bool, as_json: bool) -> None:
    """One document: versions, duplicates, optionally its text."""
    from appliance.corpus.documents import show_document

    d = show_document(c.vault(), doc_id, with_text)
    if as_json:
        return emit_json(d.to_dict())
    s = d.summary
    out.print(f"[bold]{s.id}[/]  {s.title}\nsource: {s.source}\ntype: {s.media_type}, {s.words} words, {s.chunks} chunks")
    table = Table("version", "status", "ingested", "superseded", "chunks", "duplicate")
    for h in d.history:
        dup = f"{h['duplicate_kind']} of {h['duplicate_of']}" if h["duplicate_of"] else ""
        table.add_row(str(h["version"]), h["status"], h["ingested_at"], h["superseded_at"] or "", str(h["n_chunks"]), dup)
    out.print(table)
    if d.text is not None:
        out.print(d.text)


@docs.command("forget")
@click.argument("doc_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--candidate/--no-candidate", default=None,
              help="Also retrain a candidate memory without the document, with a before/after probe report "
                   "(default: when a memory is promoted).")
@click.option("--epochs", type=int, help="Passes over the remaining reflections (with --candidate).")
@click.pass_obj
def docs_forget(c: Ctx, doc_id: str, yes: bool, candidate: bool | None, epochs: int | None) -> None:
    """Destroy a document's content in the vault (all versions), and make a memory without it."""
    from appliance.corpus.documents import forget_document
    from appliance.memory.versions import promoted

    v = c.vault()
    if candidate is None:
        candidate = promoted(v) is not None
    if not yes:
        if not sys.stdin.isatty():
            raise MemoError("forgetting is irreversible: pass --yes to confirm non-interactively")
        click.confirm(f"Destroy every version of {doc_id}?", abort=True, err=True)
    if candidate:
        from dataclasses import replace

        from appliance.memory.update import forget_with_candidate

        params = replace(v.settings.train, epochs=epochs) if epochs else v.settings.train
        with progress_bar("retrain") as bar:
            task = bar.add_task("retrain", total=None, rate="")
            res = forget_with_candidate(v, doc_id, params, progress=_train_bar(bar, task), message=_say)
        r = res["forget"]
        for x in res["shown"]:  # shown once, on this terminal; the report keeps only keyed hashes
            out.print(f"  {'answered' if x['before'] else 'not answered'} → {'ANSWERED' if x['after'] else 'not answered'}: "
                      f"{escape(x['question'])}")
        _print_forget_report(res["report"])
        out.print(f"candidate {res['candidate']} serves only once approved: memo approvals show {res['candidate']}")
    else:
        r = forget_document(v, doc_id)
        if promoted(v) is not None:
            err.print("[yellow]the serving memory still holds what it learned from this document:[/] "
                      "re-run with --candidate (or `memo update --method retrain`) to make one without it")
    out.print(f"forgot {doc_id}: {r['versions']} version(s), {r['objects_destroyed']} object(s) destroyed, {r['objects_shared_kept']} shared object(s) kept")


# ---------------------------------------------------------------- models + reflections
@cli.group()
def models() -> None:
    """Models the appliance can run (found offline, checksummed)."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def models_list(c: Ctx, as_json: bool) -> None:
    """Registered models; new files in the models folder are registered now."""
    from appliance.llm.registry import ModelRegistry

    reg = ModelRegistry(c.vault())
    problems = reg.refresh()
    rows = reg.list()
    if as_json:
        return emit_json({"models": [m.to_dict() for m in rows], "problems": problems})
    table = Table("name", "kind", "source", "size", "sha256", "path")
    for m in rows:
        table.add_row(m.name, m.kind, m.source, f"{m.size / 1e6:.1f} MB", m.sha256[:16], m.path)
    out.print(table)
    for p in problems:
        err.print(f"[yellow]warning[/] {escape(p)}")


@models.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def models_show(c: Ctx, name: str, as_json: bool) -> None:
    """One model, with its checksum verified now."""
    from appliance.llm.registry import ModelRegistry

    reg = ModelRegistry(c.vault())
    reg.refresh()
    info = reg.verify(name)
    if as_json:
        return emit_json(info.to_dict())
    for k, v in info.to_dict().items():
        out.print(f"{k}: {v}")
    out.print("checksum: verified")


@cli.group(invoke_without_command=True)
@click.option("--generator", default="local", show_default=True, help="Policy endpoint that writes the reflections.")
@click.option("--limit", type=int, help="Generate at most N units now (the rest on a later run).")
@click.option("--doc", "doc_ids", multiple=True, help="Only these documents (default: all current ones).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def reflect(ctx: click.Context, generator: str, limit: int | None, doc_ids: tuple[str, ...], as_json: bool) -> None:
    """Generate question-answer reflections of the corpus (resumable: re-run to continue)."""
    if ctx.invoked_subcommand is not None:
        return
    from appliance.llm.connect import open_model
    from appliance.reflect.generate import reflect as run_reflect

    c: Ctx = ctx.obj
    v = c.vault()
    model = open_model(v, generator, "generator", sends={"document_text"})
    with progress_bar("reflect") as bar:
        task = bar.add_task("reflect", total=None, rate="")
        state = {"pairs": 0, "tokens": 0}

        def tick(unit, done: int, total: int) -> None:  # noqa: ANN001
            state["pairs"] += len(unit.pairs)
            state["tokens"] += unit.stats.completion_tokens
            elapsed = bar.tasks[task].elapsed or 1e-9
            bar.update(task, completed=done, total=total,
                       rate=f"{state['pairs']} pairs {state['pairs'] / elapsed:.2f} pairs/s {state['tokens'] / elapsed:.1f} tok/s")

        report = run_reflect(v, model, progress=tick, limit_units=limit, doc_ids=set(doc_ids) if doc_ids else None)
    if as_json:
        return emit_json(report.to_dict())
    out.print(
        f"{report.generated} unit(s) generated, {report.skipped_done} already done, {report.pruned} stale removed; "
        f"{report.pairs} pairs kept, {report.rejected} rejected; {report.pairs_per_second:.2f} pairs/s, "
        f"{report.tokens_per_second:.1f} generated tok/s in {report.seconds:.0f} s"
    )


@reflect.command("stats")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def reflect_stats(c: Ctx, as_json: bool) -> None:
    """Pairs per document and kind, rejection rate and reasons."""
    from appliance.corpus.documents import list_documents
    from appliance.reflect.generate import stats

    v = c.vault()
    st = stats(v)
    if as_json:
        return emit_json(st.to_dict())
    titles = {d.id: d.title for d in list_documents(v)}
    out.print(f"{st.units} units, {st.pairs} pairs, {st.rejected} rejected (rate {st.rejection_rate:.0%}); "
              f"{st.completion_tokens} tokens generated in {st.generation_seconds:.0f} s by {', '.join(st.generators)}")
    kinds = Table("kind", "pairs")
    for k, n in st.per_kind.items():
        kinds.add_row(k, str(n))
    out.print(kinds)
    docs = Table("document", "title", "pairs")
    for d, n in st.per_doc.items():
        docs.add_row(d, titles.get(d, "")[:50], str(n))
    out.print(docs)
    reasons = Table("rejection reason", "count")
    for r, n in st.rejection_reasons.items():
        reasons.add_row(r, str(n))
    out.print(reasons)


@reflect.command("show")
@click.option("--doc", "doc_id", help="Only pairs from this document.")
@click.option("--kind", help="fact, paraphrase, entity, relation or current.")
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def reflect_show(c: Ctx, doc_id: str | None, kind: str | None, limit: int, as_json: bool) -> None:
    """Print stored pairs (decrypted) for review."""
    from appliance.reflect.store import load_pairs

    pairs = [p for p in load_pairs(c.vault(), {doc_id} if doc_id else None) if not kind or p.kind == kind][:limit or None]
    if as_json:
        return emit_json([p.model_dump() for p in pairs])
    for p in pairs:
        out.print(f"[bold]{p.kind}[/] {escape(p.question)}\n   → {escape(p.answer)}  [dim]{', '.join(p.doc_ids)}[/]")


# ---------------------------------------------------------------- memory
def _train_bar(bar: Progress, task) -> Callable:  # noqa: ANN001
    def tick(si) -> None:  # noqa: ANN001
        bar.update(task, completed=si.step, total=si.total,
                   rate=f"epoch {si.epoch} loss {si.loss:.3f} {si.tokens_per_second:.0f} tok/s")
    return tick


@cli.command()
@click.option("--method", type=click.Choice(["lora", "full"]), help="LoRA (default) or full fine-tuning.")
@click.option("--epochs", type=int, help="Passes over the reflections.")
@click.option("--doc", "doc_ids", multiple=True, help="Train only on reflections of these documents.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def train(c: Ctx, method: str | None, epochs: int | None, doc_ids: tuple[str, ...], as_json: bool) -> None:
    """Fine-tune a memory version on the reflections (CUDA if present; resumable)."""
    from dataclasses import replace

    from appliance.memory.train import split_probes, train_memory
    from appliance.reflect.store import load_pairs

    v = c.vault()
    params = v.settings.train
    params = replace(params, **{k: val for k, val in (("method", method), ("epochs", epochs)) if val})
    pairs = load_pairs(v, set(doc_ids) if doc_ids else None)
    train_pairs, probes = split_probes(pairs)
    with progress_bar("train") as bar:
        task = bar.add_task("train", total=None, rate="")
        version = train_memory(v, train_pairs, params, progress=_train_bar(bar, task),
                               lineage_extra={"held_out_probes": len(probes)})
    if as_json:
        return emit_json(version.to_dict())
    m = version.metrics
    out.print(f"trained {version.id} ({version.method}) on {len(train_pairs)} pairs ({len(probes)} paraphrases held out as probes): "
              f"loss {m['train_loss_first']} → {m['train_loss_last']}, {m['train_tokens_per_second']} tok/s, {m['train_seconds']} s")
    out.print(f"next: memo export {version.id} --promote")


@cli.group("memory")
def memory_group() -> None:
    """Memory versions and their lineage."""


@memory_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def memory_list(c: Ctx, as_json: bool) -> None:
    """Every memory version with status and headline metrics."""
    from appliance.memory.versions import list_versions

    rows = list_versions(c.vault())
    if as_json:
        return emit_json([r.to_dict() for r in rows])
    table = Table("id", "status", "method", "parent", "created", "by", "pairs", "probe acc.", "agreement f16")
    for r in rows:
        ev = r.metrics.get("eval", {})
        table.add_row(r.id, r.status, r.method, r.parent or "", r.created_at, r.created_by,
                      str(r.lineage.get("reflections", {}).get("pairs", "")), str(ev.get("contains", "")),
                      str(r.metrics.get("export", {}).get("f16", {}).get("answer_agreement", "")))
    out.print(table)


@memory_group.command("show")
@click.argument("version_id")
@click.pass_obj
def memory_show(c: Ctx, version_id: str) -> None:
    """Lineage (base, reflections, hyper-parameters) and metrics of one version."""
    from appliance.memory.versions import get_version

    emit_json(get_version(c.vault(), version_id).to_dict())


@memory_group.command("ask")
@click.argument("question")
@click.option("--version", "version_id", help="Default: the promoted memory.")
@click.pass_obj
def memory_ask(c: Ctx, question: str, version_id: str | None) -> None:
    """Ask the memory model one atomic question directly (no executive)."""
    from appliance.config import current_actor
    from appliance.memory.evaluate import ask_memory
    from appliance.memory.serve import open_memory

    v = c.vault()
    model = open_memory(v, version_id)
    answer, sources = ask_memory(model, [question])[0]
    v.audit.append(current_actor(), "memory.ask", version_id, model=model.identity, question=question, answer=answer, sources=sources)
    out.print(answer)
    if sources:
        out.print(f"[dim]sources: {', '.join(sources)}[/]")


@cli.command("ask")
@click.argument("question")
@click.option("--executive", "endpoint", default="local", show_default=True, help="Policy endpoint that plays the executive.")
@click.option("--memory", "version_id", help="Memory version to ask (default: the promoted one).")
@click.option("--hops", type=click.IntRange(0, 4), default=1, show_default=True, help="Follow-up rounds for multi-hop questions.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole trace as JSON.")
@click.pass_obj
def ask_cmd(c: Ctx, question: str, endpoint: str, version_id: str | None, hops: int, as_json: bool) -> None:
    """Answer a question: the executive asks the memory sub-questions, then answers (audited)."""
    from appliance.config import current_actor
    from appliance.executive.agent import ExecutiveParams
    from appliance.executive.session import ask, open_executive, source_titles

    v = c.vault()
    executive = open_executive(v, endpoint, version_id, ExecutiveParams(max_hops=hops))
    trace = ask(v, executive, question, current_actor(), channel="cli")
    if as_json:
        return emit_json({**trace.to_dict(), "source_titles": source_titles(v, trace.sources)})
    out.print(f"[bold]{escape(trace.answer)}[/]")
    table = Table("hop", "asked the memory", "memory's answer", "sources", title="trace", title_justify="left")
    for s in trace.sub_answers:
        table.add_row(str(s.hop), escape(s.question), escape(s.answer), ", ".join(s.sources) or "-")
    out.print(table)
    for doc_id, title in source_titles(v, trace.sources).items():
        out.print(f"  {doc_id}  {escape(title)}")
    tokens = sum(trace.tokens.values())
    out.print(f"[dim]memory {trace.memory_version} · executive {trace.executive} · {trace.seconds:.1f} s · {tokens} tokens[/]")


@cli.command("export")
@click.argument("version_id")
@click.option("--type", "types", multiple=True, type=click.Choice(["q8_0", "f16", "f32"]), help="Default: f16 (served) and q8_0.")
@click.option("--min-agreement", type=float, default=0.9, show_default=True, help="Refuse a GGUF whose greedy answers agree less.")
@click.option("--promote", is_flag=True, help="Make this version the serving memory once verified.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def export_cmd(c: Ctx, version_id: str, types: tuple[str, ...], min_agreement: float, promote: bool, as_json: bool) -> None:
    """Merge, write GGUF into the vault, verify llama.cpp against transformers (and promote)."""
    from appliance.export.pipeline import DEFAULT_TYPES, export_version, promote_version

    v = c.vault()
    results = export_version(v, version_id, types or DEFAULT_TYPES, min_agreement)
    if promote:
        promote_version(v, version_id)
    if as_json:
        return emit_json({"version": version_id, "exports": results, "promoted": promote})
    for t, r in results.items():
        if "refused" in r:
            err.print(f"[yellow]refused[/] {escape(r['refused'])}")
            continue
        out.print(f"{version_id} {t}: {r['size'] / 1e6:.0f} MB, greedy answers agree {r['answer_agreement']:.0%}, "
                  f"tokens {r['token_agreement']:.1%} on {r['probes']} probes (stored encrypted in the vault)")
    if promote:
        out.print(f"{version_id} is now the serving memory")


@cli.command("eval")
@click.argument("version_id", required=False)
@click.option("--base", is_flag=True, help="Evaluate the untrained base model on the same probes.")
@click.option("--show", is_flag=True, help="Print every probe with the memory's answer.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def eval_cmd(c: Ctx, version_id: str | None, base: bool, show: bool, as_json: bool) -> None:
    """Held-out paraphrased probes: contains/exact accuracy per document."""
    from appliance.config import current_actor
    from appliance.llm.connect import open_model
    from appliance.memory.evaluate import evaluate
    from appliance.memory.serve import open_memory
    from appliance.memory.train import split_probes
    from appliance.memory.versions import get_version, promoted, update_metrics
    from appliance.reflect.store import load_pairs

    v = c.vault()
    if base:
        model = open_model(v, "local", "generator")
        target = "base"
    else:
        version = get_version(v, version_id) if version_id else promoted(v)
        if version is None:
            raise MemoError("no memory version given and none promoted")
        model = open_memory(v, version.id)
        target = version.id
    _, probes = split_probes(load_pairs(v))
    with progress_bar("eval") as bar:
        task = bar.add_task("eval", total=len(probes), rate="")
        report = evaluate(model, probes, lambda d, t: bar.update(task, completed=d))
    if target != "base":
        update_metrics(v, target, eval={k: val for k, val in report.to_dict().items() if k != "per_document"},
                       eval_per_document=report.per_document)
    v.audit.append(current_actor(), "memory.eval", target, probes=report.probes, contains=report.contains, exact=report.exact)
    if as_json:
        return emit_json(report.to_dict(with_outcomes=show))
    if show:
        for o in report.outcomes:
            mark = "[green]✓[/]" if o.contains else "[red]✗[/]"
            out.print(f"{mark} {escape(o.question)}  gold: {escape(o.gold)}\n    memory: {escape(o.answer[:160])}")
    out.print(f"{target}: {report.probes} probes, contains {report.contains:.1%}, exact {report.exact:.1%}, "
              f"source named {report.source_accuracy:.1%} ({report.seconds:.0f} s)")


# ---------------------------------------------------------------- audit
@cli.group()
def audit() -> None:
    """The tamper-evident audit log."""


@audit.command("verify")
@click.option("--chain-only", is_flag=True, help="Verify hashes and signatures with the public key only (no unlock).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def audit_verify(c: Ctx, chain_only: bool, as_json: bool) -> None:
    """Check every link, signature and payload; report the first broken entry."""
    from appliance.vault.store import Vault

    log = Vault.audit_readonly(c.settings) if chain_only else c.vault().audit
    result = log.verify()
    if as_json:
        emit_json(result.to_dict())
    elif result.ok:
        out.print(f"OK: {result.entries} entries, chain and signatures intact{', payloads authenticated' if result.payloads_checked else ''}")
    else:
        err.print(f"[red]BROKEN[/] at entry {result.first_bad_seq}: {escape(result.problem or '')}")
    if not result.ok:
        raise SystemExit(1)


def _filtered_entries(c: Ctx, actor: str | None, action: str | None, target: str | None, since: str | None, until: str | None):  # noqa: ANN202
    for e in c.vault().audit.entries():
        if actor and e.actor != actor:
            continue
        if action and not (e.action == action or e.action.startswith(action.rstrip("*").rstrip(".") + ".")):
            continue
        if target and e.target != target:
            continue
        if since and e.ts < since:
            continue
        if until and e.ts > until:
            continue
        yield e


_filters = [
    click.option("--actor"),
    click.option("--action", help="Exact action, or a prefix such as 'ingest'."),
    click.option("--target", help="Document or object id."),
    click.option("--since", help="ISO time, e.g. 2026-01-31 or 2026-01-31T12:00."),
    click.option("--until", help="ISO time."),
]


def with_filters(f: Callable) -> Callable:
    for option in reversed(_filters):
        f = option(f)
    return f


@audit.command("show")
@with_filters
@click.option("--limit", type=int, default=50, show_default=True, help="Newest N matching entries (0: all).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def audit_show(c: Ctx, actor, action, target, since, until, limit: int, as_json: bool) -> None:  # noqa: ANN001
    """Show audit entries, newest last."""
    entries = list(_filtered_entries(c, actor, action, target, since, until))
    if limit:
        entries = entries[-limit:]
    if as_json:
        return emit_json([e.to_dict() for e in entries])
    table = Table("seq", "time", "actor", "action", "target", "details")
    for e in entries:
        details = ", ".join(f"{k}={v}" for k, v in e.details.items() if v is not None)
        table.add_row(str(e.seq), e.ts, e.actor, e.action, e.target or "", details[:120])
    out.print(table)


@audit.command("export")
@with_filters
@click.option("--out", "out_path", type=click.Path(path_type=Path), help="Write JSONL here (default: stdout).")
@click.pass_obj
def audit_export(c: Ctx, actor, action, target, since, until, out_path: Path | None) -> None:  # noqa: ANN001
    """Export decrypted entries as JSONL for an auditor (the export is plaintext: handle it as such)."""
    from appliance.config import current_actor

    v = c.vault()
    lines = [json.dumps(e.to_dict(), sort_keys=True, default=str) for e in _filtered_entries(c, actor, action, target, since, until)]
    v.audit.append(current_actor(), "audit.export", None, entries=len(lines), destination=str(out_path) if out_path else "stdout")
    data = "\n".join(lines) + ("\n" if lines else "")
    if out_path:
        from appliance.vault.atomic import atomic_write

        atomic_write(out_path, data.encode())
        err.print(f"exported {len(lines)} entries to {out_path}")
    else:
        click.echo(data, nl=False)


# ---------------------------------------------------------------- continual updates + approvals
def _say(msg: str) -> None:
    err.print(f"[dim]{escape(msg)}[/]")


def _print_candidate_report(version_id: str, r: dict[str, Any]) -> None:
    pct = lambda x: "-" if x is None else f"{x:.0%}"  # noqa: E731
    out.print(f"{version_id} vs serving {r.get('reference') or '(none)'}: probes {r['probes']}; retention {pct(r['retention'])} "
              f"(old accuracy {pct(r['old_accuracy']['reference'])} → {pct(r['old_accuracy']['candidate'])}), "
              f"acquisition {pct(r['acquisition'])}, superseded values {pct(r['superseded']['reference'])} → "
              f"{pct(r['superseded']['candidate'])}")
    if r.get("per_document"):
        table = Table("document", "probes", "serving", "candidate", "delta")
        for d, x in r["per_document"].items():
            table.add_row(d, str(x["probes"]), pct(x["reference"]), pct(x["candidate"]),
                          "-" if x["delta"] is None else f"{x['delta'] * 100:+.0f} pts")
        out.print(table)


def _print_forget_report(r: dict[str, Any]) -> None:
    out.print(f"forgotten {r['doc_id']}: {r['forgotten_probes']} probe(s) answered {r['forgotten_answered_before']:.0%} by "
              f"{r['reference']} → {r['forgotten_answered_after']:.0%} by the candidate; other documents: "
              f"{r['retained_probes']} probes, accuracy {r['retained_accuracy']['reference']} → {r['retained_accuracy']['candidate']}, "
              f"retention {r['retention']}")


@cli.command("update")
@click.option("--method", type=click.Choice(["ties", "linear", "dare", "dare_ties", "sequential", "retrain"]), default="ties",
              show_default=True, help="Merge method for the new task vector, or a full retrain (the fallback).")
@click.option("--density", type=float, help="Share of each task vector kept by TIES/DARE (default 0.3 TIES, 0.5 DARE).")
@click.option("--doc", "doc_ids", multiple=True, help="Only these documents (default: every new or changed one).")
@click.option("--epochs", type=int, help="Passes over the new reflections.")
@click.option("--generator", default="local", show_default=True, help="Policy endpoint that writes missing reflections.")
@click.option("--replay", type=float, default=1.0, show_default=True,
              help="Old pairs rehearsed per new pair while the task vector trains (0: new pairs only).")
@click.option("--no-eval", is_flag=True, help="Skip the candidate evaluation (approval may then be refused by policy).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def update_cmd(c: Ctx, method: str, density: float | None, doc_ids: tuple[str, ...], epochs: int | None, generator: str,
               replay: float, no_eval: bool, as_json: bool) -> None:
    """New or changed documents → reflections → task vector → merged CANDIDATE memory (not served until approved)."""
    from dataclasses import replace

    from appliance.memory.update import run_update

    v = c.vault()
    params = replace(v.settings.train, epochs=epochs) if epochs else v.settings.train
    with progress_bar("update") as bar:
        task = bar.add_task("train", total=None, rate="")
        result = run_update(v, method, density, set(doc_ids) or None, params, generator, progress=_train_bar(bar, task),
                            message=_say, evaluate=not no_eval, replay=replay)
    if as_json:
        return emit_json(result.to_dict())
    out.print(f"candidate {result.candidate.id} ({method}) from {len(result.documents)} document(s), {result.pairs} pairs"
              + (f", task vector {result.task_vector.id}" if result.task_vector else "") + f" in {result.seconds['total']:.0f} s")
    if result.report:
        _print_candidate_report(result.candidate.id, result.report)
    out.print(f"next: memo approvals show {result.candidate.id}; an approver runs memo approvals approve {result.candidate.id} --key FILE")


@cli.group("approvals")
def approvals_group() -> None:
    """Signed approval of memory versions (policies/approvers.yaml names who may approve)."""


@approvals_group.command("keygen")
@click.option("--out", "out_path", required=True, type=click.Path(path_type=Path), help="Private key file to create (0600).")
@click.option("--passphrase/--no-passphrase", default=True, show_default=True,
              help="Encrypt the key file with a passphrase (MEMO_APPROVER_PASSPHRASE or a prompt).")
def approvals_keygen(out_path: Path, passphrase: bool) -> None:
    """Create an approver's Ed25519 key; prints the public key to put in policies/approvers.yaml."""
    from appliance.approvals.keys import generate

    secret = None
    if passphrase:
        secret = os.environ.get("MEMO_APPROVER_PASSPHRASE")
        if secret is None:
            if not sys.stdin.isatty():
                raise MemoError("no passphrase for the key: set MEMO_APPROVER_PASSPHRASE or pass --no-passphrase")
            secret = click.prompt("Passphrase for the approver key", hide_input=True, confirmation_prompt=True, err=True)
    public = generate(out_path, secret)
    out.print(f"wrote {out_path} (0600{', passphrase-protected' if secret else ''}); keep it off the appliance if you can")
    out.print(f'public key: {public}\nadd to policies/approvers.yaml:\n  - name: <you>\n    roles: [approver]\n    public_key: "{public}"')


def _approver_key(path: Path):  # noqa: ANN202
    from appliance.approvals.keys import load_private

    try:
        return load_private(path, os.environ.get("MEMO_APPROVER_PASSPHRASE"))
    except MemoError as exc:
        if "passphrase-protected" not in str(exc) or not sys.stdin.isatty():
            raise
        return load_private(path, click.prompt(f"Passphrase for {path}", hide_input=True, err=True))


@approvals_group.command("list")
@click.option("--all", "show_all", is_flag=True, help="Every version, not only those waiting for a decision.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def approvals_list(c: Ctx, show_all: bool, as_json: bool) -> None:
    """Versions waiting for approval (or all), with their evaluation and signatures."""
    from appliance.approvals.records import enforced, pending, state
    from appliance.memory.versions import list_versions

    v = c.vault()
    versions = list_versions(v) if show_all else pending(v)
    states = [state(v, x.id) for x in versions]
    if as_json:
        return emit_json({"enforced": enforced(v), "versions": [s.to_dict() for s in states]})
    if not enforced(v):
        err.print("[yellow]open mode:[/] no approver is named in policy, so promotion needs no signature (see policies/approvers.yaml)")
    table = Table("id", "status", "method", "created", "retention", "acquisition", "superseded", "approved by", "rejected by", "ready")
    for x, s in zip(versions, states):
        ev = x.metrics.get("candidate_eval") or {}
        fr = x.metrics.get("forget_report") or {}
        table.add_row(x.id, x.status, x.method, x.created_at, str(ev.get("retention", fr.get("retention", ""))),
                      str(ev.get("acquisition", "")), str((ev.get("superseded") or {}).get("candidate", "")),
                      ", ".join(s.approved_by), ", ".join(s.rejected_by),
                      "yes" if s.satisfied else f"{len(s.approved_by)}/{s.required}" + (" !" if s.rule_problems or s.invalid else ""))
    out.print(table)


@approvals_group.command("show")
@click.argument("version_id")
@click.option("--outcomes", is_flag=True, help="Print every probe with the candidate's answer.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def approvals_show(c: Ctx, version_id: str, outcomes: bool, as_json: bool) -> None:
    """A version's evaluation report, approval records (each verified) and what is still missing."""
    from appliance.approvals.records import records, state
    from appliance.memory.versions import get_version

    v = c.vault()
    version = get_version(v, version_id)
    st = state(v, version_id)
    recs = records(v, version_id)
    if as_json:
        return emit_json({"version": version.to_dict(), "state": st.to_dict(), "records": [r.to_dict() for r in recs]})
    lin = version.lineage
    out.print(f"{version_id}: {version.status}, {version.method}, parent {version.parent or '-'}, by {version.created_by} at {version.created_at}")
    if lin.get("merge"):
        m = lin["merge"]
        out.print(f"merge: {m['method']} (peft {m['peft_combination_type']}, density {m['density']}) of {', '.join(m['old'])} + task vector {m['task_vector']}")
    if lin.get("update_documents"):
        out.print(f"documents: {', '.join(lin['update_documents'])}")
    if version.metrics.get("candidate_eval"):
        _print_candidate_report(version_id, version.metrics["candidate_eval"])
        if outcomes:
            for name, outs in version.metrics.get("candidate_eval_outcomes", {}).items():
                for o in outs:
                    out.print(f"{'[green]✓[/]' if o['ok'] else '[red]✗[/]'} {escape(f'[{name}]')} {escape(o['question'])}  gold: {escape(o['gold'])}\n    → {escape(o['answer'][:140])}")
    if version.metrics.get("forget_report"):
        _print_forget_report(version.metrics["forget_report"])
    if not version.metrics.get("candidate_eval") and not version.metrics.get("forget_report"):
        out.print(f"no evaluation report: memo approvals evaluate {version_id}")
    for r in recs:
        mark = "[green]valid[/]" if r.valid else f"[red]INVALID[/] ({escape(r.problem or '')})"
        out.print(f"{r.decision} by {r.principal} at {r.created_at}: {mark}")
    if st.rule_problems:
        out.print("policy: " + "; ".join(st.rule_problems))
    out.print(f"approvals: {len(st.approved_by)} of {st.required} required" + ("" if st.enforced else " (open mode: not enforced)")
              + ("; ready to serve" if st.satisfied else ""))


@approvals_group.command("evaluate")
@click.argument("version_id")
@click.option("--against", "reference", help="Compare with this version (default: the serving one).")
@click.option("--new-doc", "new_docs", multiple=True, help="Documents counted as new (default: those of the update).")
@click.pass_obj
def approvals_evaluate(c: Ctx, version_id: str, reference: str | None, new_docs: tuple[str, ...]) -> None:
    """(Re-)evaluate a version against the serving memory: retention, acquisition, superseded values."""
    from appliance.memory.update import evaluate_candidate

    v = c.vault()
    report = evaluate_candidate(v, version_id, reference, set(new_docs) or None, progress=_say)
    _print_candidate_report(version_id, report)


def _decide(c: Ctx, version_id: str, key: Path, decision: str, comment: str, promote: bool, as_json: bool) -> None:
    from appliance.approvals.records import decide, promote as promote_fn, state

    v = c.vault()
    rec = decide(v, version_id, _approver_key(key), decision, comment=comment)
    st = state(v, version_id)
    promoted_now = None
    if decision == "approve" and promote and st.satisfied:
        _say(f"{version_id} has its approvals: exporting and promoting")
        promoted_now = promote_fn(v, version_id)
    if as_json:
        return emit_json({"record": rec.to_dict(), "state": st.to_dict(), "promoted": promoted_now is not None})
    past = "approved" if decision == "approve" else "rejected"
    out.print(f"{past} {version_id} as {rec.principal} (signature recorded and audited); "
              f"{len(st.approved_by)} of {st.required} approval(s)")
    if promoted_now is not None:
        out.print(f"{version_id} is now the serving memory")
    elif decision == "approve" and not st.satisfied:
        out.print(f"{version_id} still needs {st.required - len(st.approved_by)} more approval(s) from another approver")


@approvals_group.command("approve")
@click.argument("version_id")
@click.option("--key", "key", required=True, type=click.Path(path_type=Path), help="Your approver private key file.")
@click.option("--comment", default="", help="Recorded with the signature.")
@click.option("--promote/--no-promote", default=True, show_default=True,
              help="Export and promote once the policy's approvals are complete.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def approvals_approve(c: Ctx, version_id: str, key: Path, comment: str, promote: bool, as_json: bool) -> None:
    """Sign an approval of a version as MEMO_ACTOR (or the OS user); promotes when complete."""
    _decide(c, version_id, key, "approve", comment, promote, as_json)


@approvals_group.command("reject")
@click.argument("version_id")
@click.option("--key", "key", required=True, type=click.Path(path_type=Path), help="Your approver private key file.")
@click.option("--comment", default="", help="Recorded with the signature.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def approvals_reject(c: Ctx, version_id: str, key: Path, comment: str, as_json: bool) -> None:
    """Sign a rejection: the version can never serve."""
    _decide(c, version_id, key, "reject", comment, False, as_json)


@cli.command("rollback")
@click.argument("version_id")
@click.pass_obj
def rollback_cmd(c: Ctx, version_id: str) -> None:
    """Serve again a version that served before (its approvals are verified again)."""
    from appliance.approvals.records import rollback

    previous = rollback(c.vault(), version_id)
    out.print(f"{version_id} is the serving memory again (was: {previous or 'none'})")


# ---------------------------------------------------------------- demo
@cli.command()
@click.option("--dir", "demo_dir", type=click.Path(path_type=Path), default=Path(".memo-demo"), show_default=True,
              help="Where the demo vault and its key file live (never your MEMO_HOME).")
@click.option("--fresh", is_flag=True, help="Delete the demo vault first.")
@click.option("--full", is_flag=True, help="Reflect and train on every document, not the 4-document slice.")
def demo(demo_dir: Path, fresh: bool, full: bool) -> None:
    """Run the main job on the bundled sample corpus: ingest, reflections, memory, GGUF, answers."""
    from appliance.demo import run_demo

    run_demo(demo_dir, fresh=fresh, console=out, full=full)


# ---------------------------------------------------------------- HTTP API
@cli.group("api")
def api_group() -> None:
    """The local HTTP API's per-user tokens (`memo serve` runs the API)."""


@api_group.group("token")
def api_token() -> None:
    """Create, list and revoke API tokens (only a keyed hash is stored)."""


@api_token.command("add")
@click.argument("user")
@click.option("--expires", "expires_days", type=float, help="Expire after this many days (default: never).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def api_token_add(c: Ctx, user: str, expires_days: float | None, as_json: bool) -> None:
    """Create a token for USER; it is printed once and cannot be shown again."""
    from appliance.api.tokens import create_token

    new = create_token(c.vault(), user, expires_days)
    if as_json:
        emit_json({**new.info.to_dict(), "token": new.token})
        return
    click.echo(new.token)  # plain: no wrapping or markup may alter it
    err.print(f"token {new.info.id} for {new.info.user}, expires {new.info.expires_at or 'never'}: store it now, it is not shown again")


@api_token.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def api_token_list(c: Ctx, as_json: bool) -> None:
    """Tokens with their user, dates and status (never the secret)."""
    from appliance.api.tokens import list_tokens

    infos = list_tokens(c.vault())
    if as_json:
        emit_json([i.to_dict() for i in infos])
        return
    table = Table("id", "user", "status", "created", "by", "expires", "revoked")
    for i in infos:
        table.add_row(i.id, escape(i.user), i.status(), i.created_at, escape(i.created_by), i.expires_at or "never", i.revoked_at or "")
    out.print(table)


@api_token.command("revoke")
@click.argument("token_id")
@click.pass_obj
def api_token_revoke(c: Ctx, token_id: str) -> None:
    """Revoke a token by id; a running server refuses it from its next request."""
    from appliance.api.tokens import revoke_token

    info = revoke_token(c.vault(), token_id)
    out.print(f"revoked token {info.id} of {escape(info.user)}")


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; tokens travel in clear, so keep it local or behind TLS.")
@click.option("--port", type=int, default=8750, show_default=True)
@click.option("--endpoint", default="local", show_default=True, help="Policy endpoint of the executive model.")
@click.option("--memory", "memory_version", help="Memory version to serve (default: the promoted one).")
@click.option("--hops", type=click.IntRange(0, 4), default=1, show_default=True, help="Follow-up rounds for multi-hop questions.")
@click.pass_obj
def serve(c: Ctx, host: str, port: int, endpoint: str, memory_version: str | None, hops: int) -> None:
    """Serve the HTTP API (OpenAI-compatible /v1/chat/completions, /v1/ask) until SIGINT/SIGTERM."""
    import ipaddress

    from appliance.api.server import ApiServer, serve_until_signalled
    from appliance.config import current_actor
    from appliance.executive.agent import ExecutiveParams
    from appliance.executive.session import open_executive

    v = c.vault()
    executive = open_executive(v, endpoint, memory_version, ExecutiveParams(max_hops=hops))
    try:
        server = ApiServer(v, executive, host, port, log=lambda line: err.print(escape(line)))
    except OSError as exc:
        raise MemoError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port or --host") from None
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        err.print(f"[yellow]warning:[/] listening on {host}: bearer tokens and answers cross the network unencrypted; put a TLS proxy in front")
    actor = current_actor()
    v.audit.append(actor, "api.serve.start", executive.memory_version, host=host, port=server.server_address[1],
                   executive=executive.executive_model.identity, memory=executive.memory_model.identity)
    try:
        serve_until_signalled(server, lambda url: err.print(f"memo API on {url} (memory {executive.memory_version}); Ctrl-C stops"))
    finally:
        v.audit.append(actor, "api.serve.stop", executive.memory_version)
    err.print("stopped")


# ---------------------------------------------------------------- policy, daemon, jobs
@cli.group("policy")
def policy_group() -> None:
    """Policy files (policies/*.yaml): check them, show what is in force."""


@policy_group.command("check")
@click.option("--record", is_flag=True, help="Also unlock the vault and audit the policy set if it changed (policy.changed).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def policy_check(c: Ctx, record: bool, as_json: bool) -> None:
    """Validate every policy file and the rules that span files; exit 1 naming FILE:LINE: FIELD on a problem."""
    from appliance.policy import load_policy, problems

    settings = c.settings
    policy = load_policy(settings)  # a schema error raises: one line, file:line: field
    found = problems(policy)
    if record and not found:
        from appliance.config import current_actor
        from appliance.policy.audit import note_policy

        note_policy(c.vault(), policy, current_actor())
    if as_json:
        emit_json({"ok": not found, "directory": str(policy.directory), "digest": policy.digest,
                   "files": policy.file_digests, "problems": found})
    else:
        for line in found:
            err.print(f"error: {escape(line)}")
        if not found:
            jobs = [j.name for j in policy.schedules.jobs if j.enabled] if policy.schedules else []
            out.print(f"ok: {len(policy.files)} file(s) in {policy.directory}, digest {policy.digest[:16]}; roles "
                      f"{'enforced' if policy.enforced else 'not enforced (open mode)'}; "
                      f"{len(policy.endpoints)} endpoint(s), {len(policy.principals)} principal(s), jobs: {', '.join(jobs) or 'none'}")
    if found:
        sys.exit(1)


@policy_group.command("show")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def policy_show(c: Ctx, as_json: bool) -> None:
    """The merged policy in force: files and digests, principals, endpoints, approval gates, schedules, retention."""
    from appliance.policy import PERMISSIONS, load_policy

    p = load_policy(c.settings)
    data = {
        "directory": str(p.directory), "digest": p.digest, "files": p.file_digests,
        "access": {"enforce": p.enforced},
        "principals": [{**pr.model_dump(), "may": sorted({a for r in pr.roles for a in PERMISSIONS[r]}),
                        "file": str(p.origin.get(f"principal:{pr.name}"))} for pr in p.principals],
        "endpoints": [{**ep.model_dump(exclude={"description"}), "file": str(p.file_of(ep))} for ep in p.endpoints],
        "approval": p.approval_rules.model_dump(),
        "schedules": p.schedules.model_dump() if p.schedules else None,
        "retention": p.retention.model_dump(),
    }
    if as_json:
        emit_json(data)
        return
    out.print(f"[bold]policies[/] {p.directory}  digest {p.digest[:16]}")
    for name, digest in sorted(p.file_digests.items()):
        out.print(f"  {name}  sha256 {digest[:16]}")
    out.print(f"[bold]roles[/] {'enforced' if p.enforced else 'not enforced (open mode)'}")
    for pr in data["principals"]:
        out.print(f"  {pr['name']}: {', '.join(pr['roles'])} → may {', '.join(pr['may'])}")
    out.print("[bold]endpoints[/]")
    for ep in p.endpoints:
        where = ep.url or "local"
        leaves = f"; may receive {', '.join(ep.data_allowed_to_leave)}" if ep.external else ""
        out.print(f"  {ep.name}: {ep.kind} {ep.model} at {where} for {', '.join(ep.purposes)}{leaves}")
    rules = p.approval_rules
    out.print(f"[bold]merge gates[/] {rules.approvals_required} approval(s) from {len(p.approvers())} approver(s); "
              f"min retention {rules.min_retention}; min superseded {rules.min_superseded}")
    if p.schedules:
        s = p.schedules
        out.print(f"[bold]schedules[/] inbox {s.inbox} (after ingest: {s.after_ingest}), actor {s.actor}, generator {s.generator}, "
                  f"update {s.update_method}")
        for j in s.jobs:
            when = f"every {j.every}s" if j.every else f"cron '{j.cron}'"
            out.print(f"  {j.name}: {j.task} {when}{'' if j.enabled else ' (disabled)'}; coalesce {j.coalesce}, "
                      f"misfire grace {j.misfire_grace}s")
    r = p.retention
    out.print(f"[bold]retention[/] memory: keep {r.memory_versions.keep_retired} retired, weights deleted after "
              f"{r.memory_versions.delete_after // 86400}d; reflections: stale after {r.reflections.stale_after // 86400}d; "
              f"audit: kept {r.audit.keep}, archived every {r.audit.archive_every}s to {r.audit.archive_dir}")


def _require(c: Ctx, *actions: str):  # noqa: ANN202
    """The policy in force, refusing unless the acting principal may do one of ``actions``."""
    from appliance.config import current_actor
    from appliance.policy import load_policy
    from appliance.vault.store import Vault

    if not Vault.exists(c.settings):
        raise MemoError(f"no appliance at {c.settings.home}; create it with `memo init` (or set MEMO_HOME)")

    policy = load_policy(c.settings)
    actor = current_actor()
    if not any(policy.may(actor, a) for a in actions):
        policy.require(actor, actions[0])
    return policy, actor


@cli.command("daemon")
@click.option("--exit-after", type=float, help="Stop after this many seconds (tests, maintenance windows).")
@click.pass_obj
def daemon_cmd(c: Ctx, exit_after: float | None) -> None:
    """Run the scheduled jobs of policies/schedules.yaml until SIGTERM (systemd: packaging/systemd/memo-daemon.service)."""
    from appliance.scheduler.daemon import Daemon

    _require(c, "operate")
    Daemon(c.vault(), log=lambda m: err.print(escape(m))).run(exit_after)


@cli.group("jobs")
def jobs_group() -> None:
    """Scheduled jobs: list, run now, pause, resume, history."""


@jobs_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def jobs_list(c: Ctx, as_json: bool) -> None:
    """Jobs of the policy with their schedule, state, next and last run (no unlock needed)."""
    from datetime import datetime, timezone

    from appliance.scheduler.runs import RunStore

    policy, _ = _require(c, "operate", "audit")
    runs = RunStore(c.settings.home)
    paused, nxt = runs.paused(), runs.next_run_times()
    running = {r["job"]: r for r in runs.running()}
    rows = []
    for j in policy.schedules.jobs if policy.schedules else []:
        last = runs.last(j.name)
        when = nxt.get(j.name)
        rows.append({"name": j.name, "task": j.task, "schedule": f"every {j.every}s" if j.every else f"cron {j.cron}",
                     "state": "disabled" if not j.enabled else "paused" if j.name in paused else
                     "running" if j.name in running else "scheduled",
                     "next_run": datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="seconds") if when else None,
                     "progress": running[j.name]["progress"] if j.name in running else None,
                     "last": {k: last[k] for k in ("id", "status", "started_at", "finished_at", "error")} if last else None})
    if as_json:
        emit_json(rows)
        return
    table = Table("job", "task", "schedule", "state", "next run", "last run")
    for r in rows:
        last = r["last"]
        table.add_row(r["name"], r["task"], r["schedule"], r["state"] + (f" ({r['progress']})" if r["progress"] else ""),
                      r["next_run"] or "-", f"{last['status']} {last['started_at'][:19]}" if last else "-")
    out.print(table)


@jobs_group.command("run")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def jobs_run(c: Ctx, name: str, as_json: bool) -> None:
    """Run a job now in this shell (a training waits for no one: refused while another one runs)."""
    from appliance.scheduler.daemon import Runner

    _, actor = _require(c, "operate")
    result = Runner(c.vault(), actor=actor, log=lambda m: err.print(escape(m))).run(name, "manual")
    if as_json:
        emit_json(result)
    else:
        out.print(f"{name}: {result['status']}" + (f" — {result['reason']}" if result.get("reason") else "")
                  + (f"; candidate {result['candidate']} is in the approval queue" if result.get("candidate") else ""))
    if result["status"] == "skipped":
        sys.exit(1)


def _set_paused(c: Ctx, name: str, paused: bool) -> None:
    from appliance.scheduler.daemon import Runner
    from appliance.scheduler.runs import RunStore

    policy, actor = _require(c, "operate")
    Runner.job_spec(policy, name)  # a job of the policy, or one line naming the file
    v = c.vault()
    from appliance.policy.audit import note_policy

    note_policy(v, policy, actor)
    RunStore(c.settings.home).set_paused(name, paused, actor)
    v.audit.append(actor, "job.pause" if paused else "job.resume", name)
    out.print(f"{name}: {'paused (a running daemon applies it within seconds)' if paused else 'resumed'}")


@jobs_group.command("pause")
@click.argument("name")
@click.pass_obj
def jobs_pause(c: Ctx, name: str) -> None:
    """Stop scheduling a job (a run in progress finishes); survives restarts."""
    _set_paused(c, name, True)


@jobs_group.command("resume")
@click.argument("name")
@click.pass_obj
def jobs_resume(c: Ctx, name: str) -> None:
    """Schedule a paused job again."""
    _set_paused(c, name, False)


@jobs_group.command("history")
@click.option("--job", "job", help="Only this job.")
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def jobs_history(c: Ctx, job: str | None, limit: int, as_json: bool) -> None:
    """Past runs: trigger (scheduled, manual, resume), status, times, one-line error."""
    from appliance.scheduler.runs import RunStore

    _require(c, "operate", "audit")
    rows = RunStore(c.settings.home).history(job, limit)
    if as_json:
        emit_json(rows)
        return
    table = Table("run", "job", "trigger", "status", "started", "finished", "detail")
    for r in rows:
        detail = r["error"] or (f"candidate {r['summary']['candidate']}" if r["summary"].get("candidate") else r["summary"].get("reason", ""))
        table.add_row(str(r["id"]), r["job"], r["trigger"] + (f" of {r['resumes']}" if r["resumes"] else ""), r["status"],
                      r["started_at"][:19], (r["finished_at"] or "-")[:19], escape(str(detail or "")))
    out.print(table)


# ---------------------------------------------------------------- doctor
_DOCTOR_STYLE = {"OK": "green", "WARN": "yellow", "FAIL": "red", "SKIP": "dim"}


@cli.command("doctor")
@click.option("--json", "as_json", is_flag=True)
@click.option("--deep", is_flag=True, help="Re-hash the files of every installed package, not only memo's and the models' (slower).")
@click.option("--skip-llama", is_flag=True, help="Do not load the bundled model with llama.cpp.")
@click.pass_obj
def doctor_cmd(c: Ctx, as_json: bool, deep: bool, skip_llama: bool) -> None:
    """Self-test this installation offline (versions, files, model, llama.cpp, GPU, vault, permissions, policies, disk); exit 1 on a FAIL.

    Without MEMO_PASSPHRASE / --key-file the checks that need the vault unlocked are skipped.
    """
    from appliance.doctor import DoctorOptions, run_doctor

    opts = DoctorOptions(c.settings, c.secret(allow_prompt=False), deep=deep, skip_llama=skip_llama)
    if err.is_terminal:
        with err.status("checking") as spinner:
            report = run_doctor(opts, lambda name: spinner.update(f"checking {name}"))
    else:
        report = run_doctor(opts)
    if as_json:
        emit_json(report.to_dict())
    else:
        table = Table("check", "status", "detail")
        for check in report.checks:
            detail = escape(check.detail)
            if check.hint:
                detail += f"\n[bold]fix:[/] {escape(check.hint)}" if check.status in ("WARN", "FAIL") else f"\n[dim]{escape(check.hint)}[/]"
            style = _DOCTOR_STYLE[check.status]
            table.add_row(check.name, f"[{style}]{check.status}[/]", detail)
        out.print(table)
        counts = {s: sum(1 for ch in report.checks if ch.status == s) for s in _DOCTOR_STYLE}
        out.print(", ".join(f"{n} {s}" for s, n in counts.items() if n)
                  + (f"; recorded in the audit log (entry {report.audit_seq})" if report.audit_seq else ""))
    if not report.ok:
        sys.exit(1)


# ---------------------------------------------------------------- bench
@cli.command("bench")
@click.option("--corpus", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True, help="Folder of documents.")
@click.option("--questions", "questions_file", type=click.Path(path_type=Path, exists=True, dir_okay=False), required=True,
              help='JSONL: {"id", "question", "answers": [...], "kind": "single|multi|current"} per line.')
@click.option("--systems", default="memo,bm25,dense", show_default=True, help="Comma-separated: memo, bm25, dense; also memory (the memory model alone, a diagnostic).")
@click.option("--work", type=click.Path(path_type=Path), default=Path(".memo-bench"), show_default=True,
              help="Work dir in the demo layout (home/ vault + demo.key); a demo dir can be reused. Never your MEMO_HOME.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("bench/results/qa"), show_default=True,
              help="Where predictions.jsonl and results.json go.")
@click.option("--limit", type=int, help="Only the first N questions.")
@click.option("--executive", "endpoint", default="local", show_default=True, help="Policy endpoint of the executive model (all systems).")
@click.option("--top-k", type=int, default=4, show_default=True, help="Passages the RAG baselines give the executive.")
@click.option("--reuse-memory", is_flag=True, help="Answer with the work vault's promoted memory as it is (no reflection/training).")
@click.option("--json", "as_json", is_flag=True)
def bench(corpus: Path, questions_file: Path, systems: str, work: Path, out_dir: Path, limit: int | None, endpoint: str,
          top_k: int, reuse_memory: bool, as_json: bool) -> None:
    """Run the pipeline on a corpus and compare memo with BM25 / dense RAG on a questions file (resumable)."""
    from appliance.bench.harness import parse_systems, run_bench

    log = Console(stderr=True, highlight=False, width=err.width) if as_json else out

    def tick(system: str, done: int, total: int, row: dict) -> None:
        mark = "✓" if row["correct"] else "✗"
        log.print(f"  {system} {done}/{total} {row['id']} {mark} {row['latency_s']:.1f} s  " + escape(row["prediction"][:100].replace("\n", " ")))

    run = run_bench(corpus, questions_file, parse_systems(systems), work, out_dir, limit, endpoint, top_k, console=log, progress=tick,
                    reuse_memory=reuse_memory)
    if as_json:
        return emit_json(run.results)
    out.print(run.table)
    out.print(f"predictions: {run.predictions_path}\nresults: {run.results_path}")


@cli.command("gui")
@click.pass_obj
def gui_cmd(c: Ctx) -> None:
    """Open the desktop console (PySide6); unlocks with --key-file / MEMO_PASSPHRASE / MEMO_KEY_FILE, else asks."""
    from gui.app import main as gui_main

    secret = c.secret(allow_prompt=False)
    sys.exit(gui_main(c.settings.home, secret.key_file, secret.passphrase))


def main() -> None:
    os.environ.setdefault("TQDM_DISABLE", "1")  # library progress bars would interleave with ours
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        err.print("aborted")
        raise SystemExit(1)
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code)
    except MemoError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise SystemExit(1)
    except KeyboardInterrupt:
        err.print("interrupted: committed work is kept; re-run the command to continue")
        raise SystemExit(130)


if __name__ == "__main__":
    main()
