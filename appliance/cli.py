"""The `memo` command: a door onto the application layer (:mod:`appliance.app`), which the
console, the HTTP API and the daemon call too.

Who acts is whoever's slot the secret opens (``--user NAME`` only says which slot to try); each
command is a use case that checks the principal's roles and audits. Errors an operator can act on
print one line and exit 1; progress goes to stderr so that ``--json`` output on stdout stays
machine-readable.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
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
    user: str | None = None
    opened: Any = field(default=None, repr=False)  # the session this command unlocked: a refusal is audited in it

    @property
    def settings(self) -> Settings:
        return Settings.load(self.home)

    def secret(self, allow_prompt: bool = True) -> Secret:
        passphrase = os.environ.get("MEMO_PASSPHRASE")
        key_file = self.key_file or (Path(os.environ["MEMO_KEY_FILE"]) if os.environ.get("MEMO_KEY_FILE") else None)
        if passphrase is None and key_file is None and allow_prompt and sys.stdin.isatty():
            passphrase = click.prompt(f"Passphrase{' of ' + self.user if self.user else ''}", hide_input=True, err=True)
        return Secret(passphrase=passphrase, key_file=key_file, principal=self.user)

    def session(self):  # noqa: ANN201
        """Unlock: the slot that opens names the principal every use case of this command acts as."""
        from appliance.app.session import open_session

        self.opened = open_session(self.settings, self.secret(), channel="cli")
        return self.opened

    def refused(self, command: str, exc: MemoError) -> None:
        """Audit a command refused after the vault was unlocked (``cli.refused``); before that
        (a wrong secret) there is no key to write the log with, and a refusal by role is already
        audited (``access.refused``)."""
        from appliance.app.access import AccessRefused

        if self.opened is not None and not isinstance(exc, AccessRefused):
            try:
                self.opened.vault.audit.append(self.opened.principal, "cli.refused", command,
                                               error=" ".join(str(exc).split())[:500])
            except Exception:  # noqa: BLE001 - the refusal itself is still reported on stderr
                pass


class _AuditedGroup(click.Group):
    """The `memo` group: a command that fails with a MemoError once it has unlocked the vault
    (an unknown executive, a policy gate, a rollback found) leaves a ``cli.refused`` entry."""

    def invoke(self, ctx: click.Context) -> Any:
        words = [*getattr(ctx, "_protected_args", []), *ctx.args]
        try:
            return super().invoke(ctx)
        except MemoError as exc:
            if isinstance(ctx.obj, Ctx):
                ctx.obj.refused(_command_path(self, words), exc)
            raise


def _command_path(group: click.Group, words: list[str]) -> str:
    """``vault rekey`` from the words after the global options (never an argument's value)."""
    names: list[str] = []
    cmd: click.Command = group
    for w in words:
        sub = cmd.commands.get(w) if isinstance(cmd, click.Group) else None
        if sub is None:
            break
        names.append(w)
        cmd = sub
    return " ".join(names) or "?"


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


@click.group(cls=_AuditedGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="memo")
@click.option("--home", type=click.Path(path_type=Path), envvar="MEMO_HOME", help="Appliance data directory (env MEMO_HOME; default: XDG data dir).")
@click.option("--user", envvar="MEMO_USER", help="Who you are: which slot to try (env MEMO_USER); only your secret proves it.")
@click.option("--key-file", type=click.Path(path_type=Path), help="Unlock with this key file instead of a passphrase (env MEMO_KEY_FILE).")
@click.pass_context
def cli(ctx: click.Context, home: Path | None, user: str | None, key_file: Path | None) -> None:
    """memo: a private corpus written into the weights of a small memory model.

    Unlock non-interactively with MEMO_PASSPHRASE or --key-file FILE; the slot that opens says who
    you are in the audit log.
    """
    ctx.obj = Ctx(home, key_file, user)


# ---------------------------------------------------------------- init + vault
@cli.command()
@click.option("--no-passphrase", is_flag=True, help="Create the vault with a key file only.")
@click.pass_obj
def init(c: Ctx, no_passphrase: bool) -> None:
    """Create a new encrypted vault; you (--user NAME, default admin) hold its first, administrator slot."""
    from appliance.app.session import create_vault

    passphrase = None if no_passphrase else os.environ.get("MEMO_PASSPHRASE")
    if passphrase is None and not no_passphrase:
        if not sys.stdin.isatty():
            if c.key_file is None:
                raise MemoError("no secret given: set MEMO_PASSPHRASE or pass --key-file FILE (with --no-passphrase)")
        else:
            passphrase = click.prompt("New vault passphrase", hide_input=True, confirmation_prompt=True, err=True)
    session = create_vault(c.settings, Secret(passphrase=passphrase, key_file=c.key_file, principal=c.user))
    vault = session.vault
    out.print(f"created vault {vault.keyring.vault_id} at {vault.home} (unlocks with: {', '.join(vault.keyring.slot_types())}); "
              f"administrator: {session.principal}; policies pinned from {vault.settings.pinned_policies.origin}")


@cli.group()
def vault() -> None:
    """Vault state, integrity and keys."""


@vault.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def vault_status(c: Ctx, as_json: bool) -> None:
    """Counts and sizes of what the vault holds."""
    from appliance.app.vault import status

    st = status(c.session())
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
    from appliance.app.vault import verify

    session = c.session()
    with progress_bar("verify") as bar:
        task = bar.add_task("verify", total=None, rate="")
        report = verify(session, lambda done, total: bar.update(task, completed=done, total=total))
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
    """Change your own secret: a new passphrase (env MEMO_NEW_PASSPHRASE) and/or key file; no data is re-encrypted."""
    from appliance.app.people import rekey

    session = c.session()
    methods = rekey(session, _new_secret(new_key_file, no_passphrase))
    out.print(f"rekeyed: {session.principal} now unlocks with {', '.join(methods)}; your old secret no longer works "
              "(other people's slots are unchanged)")


def _new_secret(key_file: Path | None, no_passphrase: bool, whose: str = "New") -> Secret:
    """A secret for a slot: the passphrase from MEMO_NEW_PASSPHRASE or a prompt, and/or a key file."""
    passphrase = None
    if not no_passphrase:
        passphrase = os.environ.get("MEMO_NEW_PASSPHRASE")
        if passphrase is None:
            if not sys.stdin.isatty():
                raise MemoError("no new passphrase: set MEMO_NEW_PASSPHRASE, or pass --no-passphrase with a key file")
            passphrase = click.prompt(f"{whose} passphrase", hide_input=True, confirmation_prompt=True, err=True)
    return Secret(passphrase=passphrase, key_file=key_file)


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
    from appliance.app.vault import gc

    out.print(f"removed {gc(c.session())} unreferenced object(s)")


# ---------------------------------------------------------------- people
@cli.command("whoami")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def whoami_cmd(c: Ctx, as_json: bool) -> None:
    """Whose slot your secret opens, and your roles in the policy in force."""
    from appliance.app.people import whoami

    me = whoami(c.session())
    if as_json:
        return emit_json(me.to_dict())
    out.print(f"{me.name}: unlocks with {', '.join(me.unlock_methods)}; roles {', '.join(me.roles) or 'none'}"
              + ("" if me.in_policy else " (not named in the policy)"))


@cli.group()
def people() -> None:
    """People and service accounts who unlock the vault (each with their own slot); roles come from the policy."""


@people.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def people_list(c: Ctx, as_json: bool) -> None:
    """Everyone who can unlock the vault, with their kinds of secret and their roles."""
    from appliance.app.people import people as list_people

    rows = list_people(c.session())
    if as_json:
        return emit_json([p.to_dict() for p in rows])
    table = Table("name", "unlocks with", "roles", "in policy", "active API tokens")
    for p in rows:
        table.add_row(escape(p.name), ", ".join(p.unlock_methods), ", ".join(p.roles) or "-", "yes" if p.in_policy else "no",
                      str(p.active_tokens))
    out.print(table)


@people.command("add")
@click.argument("name")
@click.option("--key", "key_file", type=click.Path(path_type=Path), help="Their key file (make one with `memo vault keygen FILE`).")
@click.option("--no-passphrase", is_flag=True, help="A key-file slot only (a service account).")
@click.option("--replace", is_flag=True, help="Replace the secret of someone who already has a slot.")
@click.pass_obj
def people_add(c: Ctx, name: str, key_file: Path | None, no_passphrase: bool, replace: bool) -> None:
    """Give NAME their own slot: a passphrase (env MEMO_NEW_PASSPHRASE or a prompt) and/or a key file."""
    from appliance.app.people import add

    if no_passphrase and key_file is None:
        raise MemoError("--no-passphrase needs --key FILE: a slot opens with a passphrase or a key file")
    person = add(c.session(), name, _new_secret(key_file, no_passphrase, f"{name}'s"), replace)
    out.print(f"{person.name} can now unlock the vault with {', '.join(person.unlock_methods)}; roles in the policy in force: "
              f"{', '.join(person.roles) or 'none'}")
    if not person.in_policy:
        err.print(f"[yellow]note:[/] {escape(person.name)} is not named in the policy: while roles are enforced they can do "
                  "nothing until an administrator names them with a role and pins it (`memo policy pin`)")


@people.command("remove")
@click.argument("name")
@click.pass_obj
def people_remove(c: Ctx, name: str) -> None:
    """Remove NAME's slots: their secret stops opening the vault at once, and their API tokens are revoked."""
    from appliance.app.people import remove

    r = remove(c.session(), name)
    out.print(f"removed {escape(name)}: their passphrase or key file no longer opens the vault"
              + (f"; revoked API token(s) {', '.join(r['tokens_revoked'])}" if r["tokens_revoked"] else ""))


# ---------------------------------------------------------------- ingest + docs
def _readers_help(text: str) -> Callable:
    """Put the document kinds of :data:`appliance.corpus.readers.READERS` into a command's help."""
    def mark(f: Callable) -> Callable:
        from appliance.corpus.readers import reader_names

        f.__doc__ = text.format(kinds=reader_names())
        return f
    return mark


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--allow-forgotten", is_flag=True, help="Ingest again documents that were forgotten.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@_readers_help("Ingest files and folders ({kinds}) into the vault.")
def ingest(c: Ctx, paths: tuple[Path, ...], allow_forgotten: bool, as_json: bool) -> None:
    from appliance.app.corpus import ingest as run_ingest

    session = c.session()
    with progress_bar("ingest") as bar:
        task = bar.add_task("ingest", total=None, rate="")
        state = {"bytes": 0, "chunks": 0}

        def tick(outcome, done: int, total: int) -> None:  # noqa: ANN001
            state["bytes"] += outcome.bytes
            state["chunks"] += outcome.chunks
            elapsed = bar.tasks[task].elapsed or 1e-9
            bar.update(task, completed=done, total=total,
                       rate=f"{state['bytes'] / 2**20 / elapsed:.2f} MB/s {state['chunks'] / elapsed:.0f} chunks/s")

        report = run_ingest(session, list(paths), progress=tick, allow_forgotten=allow_forgotten)
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
    from appliance.app.corpus import documents

    rows = documents(c.session(), include_forgotten)
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
    from appliance.app.corpus import document, document_text

    d = (document_text if with_text else document)(c.session(), doc_id)
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
    from dataclasses import replace

    from appliance.app.corpus import forget

    if not yes:
        if not sys.stdin.isatty():
            raise MemoError("forgetting is irreversible: pass --yes to confirm non-interactively")
        click.confirm(f"Destroy every version of {doc_id}?", abort=True, err=True)
    session = c.session()
    params = replace(session.vault.settings.train, epochs=epochs) if epochs else None
    retrain = candidate if candidate is not None else _serving(session)
    if retrain:
        with progress_bar("retrain") as bar:
            task = bar.add_task("retrain", total=None, rate="")
            res = forget(session, doc_id, True, params, progress=_train_bar(bar, task), message=_say)
    else:
        res = forget(session, doc_id, False)
    r = res.forget
    if res.candidate is not None:
        for x in res.shown:  # shown once, on this terminal; the report keeps only keyed hashes
            out.print(f"  {'answered' if x['before'] else 'not answered'} → {'ANSWERED' if x['after'] else 'not answered'}: "
                      f"{escape(x['question'])}")
        _print_forget_report(res.report)
        out.print(f"candidate {res.candidate} serves only once approved: memo approvals show {res.candidate}")
    elif _serving(session):
        err.print("[yellow]the serving memory still holds what it learned from this document:[/] "
                  "re-run with --candidate (or `memo update --method retrain`) to make one without it")
    out.print(f"forgot {doc_id}: {r['versions']} version(s), {r['objects_destroyed']} object(s) destroyed, {r['objects_shared_kept']} shared object(s) kept")


def _serving(session) -> bool:  # noqa: ANN001
    from appliance.app.serving import serving_version

    return serving_version(session) is not None


# ---------------------------------------------------------------- models + reflections
@cli.group()
def models() -> None:
    """Models the appliance can run (found offline, checksummed)."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def models_list(c: Ctx, as_json: bool) -> None:
    """Registered models; new files in the models folder are registered now."""
    from appliance.app.models import models as list_models

    rows, problems = list_models(c.session())
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
    from appliance.app.models import model

    info = model(c.session(), name)
    if as_json:
        return emit_json(info.to_dict())
    for k, v in info.to_dict().items():
        out.print(f"{k}: {v}")
    out.print("checksum: verified")


@cli.group(invoke_without_command=True)
@click.option("--generator", default="local", show_default=True, help="Policy endpoint (or pool of endpoints) that writes the reflections.")
@click.option("--limit", type=int, help="Generate at most N units now (the rest on a later run).")
@click.option("--doc", "doc_ids", multiple=True, help="Only these documents (default: all current ones).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def reflect(ctx: click.Context, generator: str, limit: int | None, doc_ids: tuple[str, ...], as_json: bool) -> None:
    """Generate question-answer reflections of the corpus (resumable: re-run to continue)."""
    if ctx.invoked_subcommand is not None:
        return
    from appliance.app.memory import reflect as run_reflect

    c: Ctx = ctx.obj
    session = c.session()
    with progress_bar("reflect") as bar:
        task = bar.add_task("reflect", total=None, rate="")
        state = {"pairs": 0, "tokens": 0}

        def tick(unit, done: int, total: int) -> None:  # noqa: ANN001
            state["pairs"] += len(unit.pairs)
            state["tokens"] += unit.stats.completion_tokens
            elapsed = bar.tasks[task].elapsed or 1e-9
            bar.update(task, completed=done, total=total,
                       rate=f"{state['pairs']} pairs {state['pairs'] / elapsed:.2f} pairs/s {state['tokens'] / elapsed:.1f} tok/s")

        report = run_reflect(session, generator, progress=tick, limit_units=limit, doc_ids=set(doc_ids) if doc_ids else None)
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
    from appliance.app.corpus import documents
    from appliance.app.memory import reflect_stats

    session = c.session()
    st = reflect_stats(session)
    if as_json:
        return emit_json(st.to_dict())
    titles = {d.id: d.title for d in documents(session)} if session.may("docs.list") else {}
    out.print(f"{st.units} units, {st.pairs} pairs ({st.pairs - st.probes} trained, {st.probes} held out as probes), "
              f"{st.rejected} rejected (rate {st.rejection_rate:.0%}); coverage {st.covered}/{st.facts} facts "
              f"({st.coverage:.0%}) + {st.composed_facts} composed; "
              f"{st.completion_tokens} tokens generated in {st.generation_seconds:.0f} s by {', '.join(st.generators)}")
    kinds = Table("kind", "pairs")
    for k, n in st.per_kind.items():
        kinds.add_row(k, str(n))
    out.print(kinds)
    docs = Table("document", "title", "pairs", "facts", "coverage")
    for d, n in st.per_doc.items():
        facts, covered = st.per_doc_facts.get(d, [0, 0])
        docs.add_row(d, titles.get(d, "")[:50], str(n), str(facts), f"{covered / facts:.0%}" if facts else "-")
    out.print(docs)
    reasons = Table("rejection reason", "count")
    for r, n in st.rejection_reasons.items():
        reasons.add_row(r, str(n))
    out.print(reasons)


@reflect.command("show")
@click.option("--doc", "doc_id", help="Only pairs from this document.")
@click.option("--kind", help="fact, reverse, current or composed.")
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def reflect_show(c: Ctx, doc_id: str | None, kind: str | None, limit: int, as_json: bool) -> None:
    """Print stored pairs (decrypted) for review."""
    from appliance.app.memory import pairs as load_pairs

    pairs = [p for p in load_pairs(c.session(), {doc_id} if doc_id else None) if not kind or p.kind == kind][:limit or None]
    if as_json:
        return emit_json([p.model_dump() for p in pairs])
    for p in pairs:
        held = " [yellow](held-out probe)[/]" if p.split == "probe" else ""
        out.print(f"[bold]{p.kind}[/]{held} {escape(p.question)}\n   → {escape(p.answer)}  "
                  f"[dim]{', '.join(p.doc_ids)} · {p.wording or '-'}[/]")


# ---------------------------------------------------------------- memory
def _train_bar(bar: Progress, task) -> Callable:  # noqa: ANN001
    def tick(si) -> None:  # noqa: ANN001
        bar.update(task, completed=si.step, total=si.total,
                   rate=f"epoch {si.epoch} loss {si.loss:.3f} {si.examples_per_second:.1f} ex/s {si.tokens_per_second:.0f} tok/s")
    return tick


class _Processes(click.ParamType):
    """``--processes``: a positive number, or ``auto``."""

    name = "N|auto"

    def convert(self, value, param, ctx):  # noqa: ANN001, ANN201
        if isinstance(value, int) or value == "auto":
            return value
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n < 1:
            self.fail(f"{value!r} is not a number of processes (1 or more) or auto", param, ctx)
        return n


_PROCESSES = _Processes()


def _eval_line(ev) -> str:  # noqa: ANN001
    held = "-" if ev.held_out is None else f"{ev.held_out:.0%}"
    trained = "-" if ev.training is None else f"{ev.training:.0%}"
    return f"{ev.label}: held-out recall {held}, training recall {trained} ({ev.seconds:.0f} s)"


@cli.command()
@click.option("--method", type=click.Choice(["lora", "full"]), help="LoRA (default) or full fine-tuning.")
@click.option("--epochs", type=int, help="Passes over the reflections.")
@click.option("--doc", "doc_ids", multiple=True, help="Train only on reflections of these documents.")
@click.option("--processes", type=_PROCESSES, help="Training processes on this machine: N (one per GPU with NCCL; CPU "
              "processes with gloo), or auto: one per visible GPU. Default: the policy's schedules.training.processes, else auto.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def train(c: Ctx, method: str | None, epochs: int | None, doc_ids: tuple[str, ...], processes: int | str | None,
          as_json: bool) -> None:
    """Fine-tune a memory version on the reflections (CUDA if present; several GPUs with --processes; resumable)."""
    from appliance.app.memory import train as run_train
    from appliance.memory.train import stop_summary

    session = c.session()
    with progress_bar("train") as bar:
        task = bar.add_task("train", total=None, rate="")
        trained = run_train(session, method, epochs, set(doc_ids) if doc_ids else None, progress=_train_bar(bar, task),
                            on_eval=lambda ev: bar.console.print(_eval_line(ev)), processes=processes)
    version = trained.version
    if as_json:
        return emit_json(version.to_dict())
    m = version.metrics
    exp = m.get("exposures") or {}
    if trained.processes > 1:
        out.print(f"trained in {trained.processes} processes ({version.lineage.get('backend')})")
    out.print(f"trained {version.id} ({version.method}) on {trained.train_pairs} pairs for {m['facts']} facts "
              f"({trained.probes} held-out probes): {m['epochs']} epochs ({stop_summary(m)}), exposures per fact "
              f"{exp.get('mean', 0):.0f} on average (min {exp.get('min', 0):.0f}); loss {m['train_loss_first']} → "
              f"{m['train_loss_last']}; {m['train_examples_per_second']} examples/s, {m['train_seconds']} s")
    if m.get("held_out_recall") is not None:
        out.print(f"held-out recall {m['held_out_recall']:.0%}, training recall {m['training_recall']:.0%}")
    out.print(f"next: memo export {version.id} --promote")


@cli.group("memory")
def memory_group() -> None:
    """Memory versions and their lineage."""


@memory_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def memory_list(c: Ctx, as_json: bool) -> None:
    """Every memory version with status and headline metrics."""
    from appliance.app.memory import versions

    rows = versions(c.session())
    if as_json:
        return emit_json([{"id": r.id, "parent": r.parent, "base_model": r.base_model, "method": r.method, "status": r.status,
                           "created_at": r.created_at, "created_by": r.created_by, "lineage": r.lineage.model_dump(exclude_unset=True),
                           "metrics": r.metrics} for r in rows])
    table = Table("id", "status", "method", "parent", "created", "by", "pairs", "probe acc.", "agreement f16")
    for r in rows:
        ev = r.metrics.get("eval", {})
        table.add_row(r.id, r.status, r.method, r.parent or "", r.created_at, r.created_by,
                      str((getattr(r.lineage, "reflections", None) or {}).get("pairs", "")), str(ev.get("contains", "")),
                      str(r.metrics.get("export", {}).get("f16", {}).get("answer_agreement", "")))
    out.print(table)


@memory_group.command("show")
@click.argument("version_id")
@click.pass_obj
def memory_show(c: Ctx, version_id: str) -> None:
    """Lineage (base, reflections, hyper-parameters) and metrics of one version."""
    from appliance.app.memory import version

    r = version(c.session(), version_id)
    emit_json({"id": r.id, "parent": r.parent, "base_model": r.base_model, "method": r.method, "status": r.status,
               "created_at": r.created_at, "created_by": r.created_by, "lineage": r.lineage.model_dump(exclude_unset=True), "metrics": r.metrics})


@memory_group.command("ask")
@click.argument("question")
@click.option("--version", "version_id", help="Default: the promoted memory.")
@click.pass_obj
def memory_ask(c: Ctx, question: str, version_id: str | None) -> None:
    """Ask the memory model one atomic question directly (no executive)."""
    from appliance.app.qa import ask_memory

    r, _ = ask_memory(c.session(), question, version_id)
    out.print(r.answer)
    out.print(f"[dim]confidence {r.confidence:.2f}" + (f"; sources: {', '.join(r.sources)}" if r.sources else "") + "[/]")


@cli.command("ask")
@click.argument("question")
@click.option("--executive", "endpoint", default="local", show_default=True, help="Policy endpoint that plays the executive.")
@click.option("--memory", "version_id", help="Memory version to ask (default: the promoted one).")
@click.option("--hops", type=click.IntRange(0, 1), default=1, show_default=True,
              help="1: ask the bridges of a multi-hop question when the memory is unsure; 0: ask the memory once.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole trace as JSON.")
@click.pass_obj
def ask_cmd(c: Ctx, question: str, endpoint: str, version_id: str | None, hops: int, as_json: bool) -> None:
    """Answer a question: the executive asks the memory sub-questions, then answers (audited)."""
    from appliance.app.qa import ask, source_titles
    from appliance.app.serving import open_executive
    from appliance.executive.agent import ExecutiveParams

    session = c.session()
    executive = open_executive(session, endpoint, version_id, ExecutiveParams(max_hops=hops))
    trace = ask(session, executive, question)
    titles = source_titles(session, trace.sources)
    if as_json:
        return emit_json({**trace.to_dict(), "source_titles": titles})
    out.print(f"[bold]{escape(trace.answer)}[/]")
    table = Table("hop", "asked the memory", "memory's answer", "sure", "value stated", "sources", title="trace",
                  title_justify="left")
    for s in trace.sub_answers:
        stated = ("-" if s.grounded is None else "no" if not s.grounded
                  else "cited document" if s.cited else "corrected citation")
        table.add_row(str(s.hop), escape(s.question), escape(s.answer), f"{s.confidence:.2f}", stated,
                      ", ".join(s.sources) or "-")
    out.print(table)
    for doc_id, title in titles.items():
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
    from appliance.app.memory import export
    from appliance.app.serving import promote as promote_version

    session = c.session()
    results = export(session, version_id, types, min_agreement)
    if promote:
        promote_version(session, version_id)
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
    from appliance.app.memory import evaluate
    from appliance.memory.diagnosis import diagnosis_table

    session = c.session()
    with progress_bar("eval") as bar:
        task = bar.add_task("eval", total=None, rate="")
        done = evaluate(session, version_id, base, lambda d, t: bar.update(task, completed=d, total=t))
    target, report, diagnosis = done.target, done.report, done.diagnosis
    if as_json:
        return emit_json({**report.to_dict(with_outcomes=show), "diagnosis": diagnosis.to_dict() if diagnosis else None})
    if show:
        for o in report.outcomes:
            mark = "[green]✓[/]" if o.contains else "[red]✗[/]"
            out.print(f"{mark} {escape(o.question)}  gold: {escape(o.gold)}\n    memory: {escape(o.answer[:160])} "
                      f"[dim]({o.confidence:.2f})[/]")
    out.print(f"{target}: {report.probes} probes, contains {report.contains:.1%}, exact {report.exact:.1%}, "
              f"source named {report.source_accuracy:.1%} ({report.seconds:.0f} s)")
    if diagnosis is not None:
        out.print(diagnosis_table(diagnosis))


# ---------------------------------------------------------------- audit
@cli.group()
def audit() -> None:
    """The tamper-evident audit log."""


@audit.command("verify")
@click.option("--chain-only", is_flag=True, help="Without unlocking: hashes and signatures against --public-key.")
@click.option("--public-key", "public_key", type=click.Path(path_type=Path),
              help="The auditor's pinned copy of audit/public-key.pem (required with --chain-only).")
@click.option("--expect-head", type=click.Path(path_type=Path),
              help="A head saved earlier (--save-head): the log must still hold it (a rolled-back vault fails).")
@click.option("--save-head", type=click.Path(path_type=Path), help="After an OK result, save the signed head to FILE (keep it outside the vault).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def audit_verify(c: Ctx, chain_only: bool, public_key: Path | None, expect_head: Path | None, save_head: Path | None,
                 as_json: bool) -> None:
    """Check every link, signature and payload, the binding to the catalog and any saved head; report the first break."""
    from appliance.app import audit as audit_app

    if chain_only:
        if public_key is None:
            raise MemoError("--chain-only needs --public-key FILE: your pinned copy of the vault's audit/public-key.pem "
                            "(the vault's own copy proves nothing about a vault someone could rewrite)")
        result = audit_app.verify_chain_only(c.settings.home, public_key, expect_head, save_head)
    else:
        result = audit_app.verify(c.session(), expect_head, public_key, save_head)
    if as_json:
        emit_json(result.to_dict())
    elif result.ok:
        out.print(f"OK: {result.entries} entries, chain and signatures intact{', payloads authenticated' if result.payloads_checked else ''}"
                  f"{', extends ' + str(expect_head) if expect_head else ''}{'; head saved to ' + str(save_head) if save_head else ''}")
    else:
        err.print(f"[red]BROKEN[/] at entry {result.first_bad_seq}: {escape(result.problem or '')}")
    if not result.ok:
        raise SystemExit(1)


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
    from appliance.app.audit import AuditFilter, entries as read_entries

    entries = read_entries(c.session(), AuditFilter(actor, action, target, since, until))
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
    from appliance.app.audit import AuditFilter, export

    data = export(c.session(), AuditFilter(actor, action, target, since, until), out_path)
    if out_path:
        err.print(f"exported {data.count(chr(10))} entries to {out_path}")
    else:
        click.echo(data, nl=False)


# ---------------------------------------------------------------- continual updates + approvals
def _say(msg: str) -> None:
    err.print(f"[dim]{escape(msg)}[/]")


def _print_candidate_report(version_id: str, r: Any) -> None:
    """A candidate report (:class:`appliance.approvals.reports.CandidateReport`, or its stored JSON)."""
    from appliance.approvals.reports import CandidateReport

    r = r if isinstance(r, CandidateReport) else CandidateReport.model_validate(r)
    pct = lambda x: "-" if x is None else f"{x:.0%}"  # noqa: E731
    out.print(f"{version_id} vs serving {r.reference or '(none)'}: probes {r.probes}; retention {pct(r.retention)} "
              f"(old accuracy {pct(r.old_accuracy.reference)} → {pct(r.old_accuracy.candidate)}), "
              f"acquisition {pct(r.acquisition)}, superseded values {pct(r.superseded.reference)} → "
              f"{pct(r.superseded.candidate)}")
    if r.per_document:
        table = Table("document", "probes", "serving", "candidate", "delta")
        for d, x in r.per_document.items():
            table.add_row(d, str(x.probes), pct(x.reference), pct(x.candidate),
                          "-" if x.delta is None else f"{x.delta * 100:+.0f} pts")
        out.print(table)


def _print_forget_report(r: Any) -> None:
    """A forgetting report (:class:`appliance.approvals.reports.ForgetReport`)."""
    out.print(f"forgotten {r.doc_id}: {r.forgotten_probes} probe(s) answered {r.forgotten_answered_before:.0%} by "
              f"{r.reference} → {r.forgotten_answered_after:.0%} by the candidate; other documents: "
              f"{r.retained_probes} probes, accuracy {r.retained_accuracy.reference} → {r.retained_accuracy.candidate}, "
              f"retention {r.retention}")


def _update_methods() -> list[str]:
    from appliance.policy import UPDATE_METHODS

    return list(UPDATE_METHODS)


@cli.command("update")
@click.option("--method", type=click.Choice(_update_methods()), default="ties",
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
    from appliance.app.memory import update

    session = c.session()
    with progress_bar("update") as bar:
        task = bar.add_task("train", total=None, rate="")
        result = update(session, method, density, set(doc_ids) or None, epochs, generator, progress=_train_bar(bar, task),
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
    from appliance.app.serving import enforced, reviews

    session = c.session()
    items = reviews(session, show_all)
    gated = enforced(session)
    if as_json:
        return emit_json({"enforced": gated, "versions": [r.state.to_dict() for r in items]})
    if not gated:
        err.print("[yellow]open mode:[/] no approver is named in policy, so promotion needs no signature (see policies/approvers.yaml)")
    table = Table("id", "status", "method", "created", "retention", "acquisition", "superseded", "approved by", "rejected by", "ready")
    blank = lambda x: "" if x is None else str(x)  # noqa: E731
    for r in items:
        x, st, ev = r.version, r.state, r.version.evaluation
        table.add_row(x.id, x.status, x.method, x.created_at, blank(ev.retention),
                      blank(ev.candidate_eval.acquisition if ev.candidate_eval else None), blank(ev.superseded),
                      ", ".join(st.approved_by), ", ".join(st.rejected_by),
                      "yes" if st.satisfied else f"{len(st.approved_by)}/{st.required}" + (" !" if st.rule_problems or st.invalid else ""))
    out.print(table)


@approvals_group.command("show")
@click.argument("version_id")
@click.option("--outcomes", is_flag=True, help="Print every probe with the candidate's answer.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def approvals_show(c: Ctx, version_id: str, outcomes: bool, as_json: bool) -> None:
    """A version's evaluation report, approval records (each verified) and what is still missing."""
    from appliance.app.serving import review

    r = review(c.session(), version_id)
    version, st, recs = r.version, r.state, r.records
    if as_json:
        return emit_json({"version": {"id": version.id, "parent": version.parent, "base_model": version.base_model,
                                      "method": version.method, "status": version.status, "created_at": version.created_at,
                                      "created_by": version.created_by, "lineage": version.lineage.model_dump(exclude_unset=True),
                                      "metrics": version.metrics},
                          "state": st.to_dict(), "records": [x.to_dict() for x in recs]})
    lin, ev = version.lineage, version.evaluation
    out.print(f"{version_id}: {version.status}, {version.method}, parent {version.parent or '-'}, by {version.created_by} at {version.created_at}")
    if lin.merge:
        m = lin.merge
        out.print(f"merge: {m.method} (peft {m.peft_combination_type}, density {m.density}) of {', '.join(m.old)} + task vector {m.task_vector}")
    if lin.update_documents:
        out.print(f"documents: {', '.join(lin.update_documents)}")
    if ev.candidate_eval:
        _print_candidate_report(version_id, ev.candidate_eval)
        if outcomes:
            for name, outs in version.outcomes.items():
                for o in outs:
                    out.print(f"{'[green]✓[/]' if o.ok else '[red]✗[/]'} {escape(f'[{name}]')} {escape(o.question)}  gold: {escape(o.gold)}\n    → {escape(o.answer[:140])}")
    if ev.forget_report:
        _print_forget_report(ev.forget_report)
    if ev.empty:
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
    from appliance.app.memory import evaluate_candidate

    report = evaluate_candidate(c.session(), version_id, reference, set(new_docs) or None, progress=_say)
    _print_candidate_report(version_id, report.evaluation.candidate_eval)


def _decide(c: Ctx, version_id: str, key: Path, decision: str, comment: str, promote: bool, as_json: bool) -> None:
    from appliance.app.serving import decide

    done = decide(c.session(), version_id, _approver_key(key), decision, comment=comment, promote_when_complete=promote)
    rec, st = done.record, done.state
    promoted_now = done.promoted or None
    if as_json:
        return emit_json({"record": rec.to_dict(), "state": st.to_dict(), "promoted": done.promoted})
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
    """Sign an approval of a version as yourself (whose slot unlocked); promotes when complete."""
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
    from appliance.app.serving import rollback

    previous = rollback(c.session(), version_id)
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
    """Create a token for principal USER (it acts with their roles); printed once, never shown again."""
    from appliance.app.tokens import add

    new = add(c.session(), user, expires_days)
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
    from appliance.app.tokens import tokens

    infos = tokens(c.session())
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
    from appliance.app.tokens import revoke

    info = revoke(c.session(), token_id)
    out.print(f"revoked token {info.id} of {escape(info.user)}")


@api_group.group("tls")
def api_tls() -> None:
    """The API's TLS certificate, kept encrypted in the vault (`memo serve --tls-vault`)."""


@api_tls.command("import")
@click.option("--cert", "cert", required=True, type=click.Path(path_type=Path), help="PEM certificate (chain).")
@click.option("--key", "key", required=True, type=click.Path(path_type=Path), help="PEM private key (unencrypted); destroy the file afterwards.")
@click.pass_obj
def api_tls_import(c: Ctx, cert: Path, key: Path) -> None:
    """Store a certificate and its key in the vault (checked: parses, not expired, key matches)."""
    from appliance.app.vault import import_tls

    material = import_tls(c.session(), cert, key)
    out.print(f"stored TLS certificate {escape(material.describe())} in the vault; you may now destroy {key}")


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; off loopback, serve TLS.")
@click.option("--port", type=int, default=8750, show_default=True)
@click.option("--endpoint", default="local", show_default=True, help="Policy endpoint of the executive model.")
@click.option("--memory", "memory_version", help="Memory version to serve (default: the promoted one).")
@click.option("--hops", type=click.IntRange(0, 1), default=1, show_default=True, help="1: ask a multi-hop question's bridges when the memory is unsure; 0: ask it once.")
@click.option("--tls-cert", type=click.Path(path_type=Path), help="Serve HTTPS with this PEM certificate (with --tls-key).")
@click.option("--tls-key", type=click.Path(path_type=Path), help="The certificate's PEM private key.")
@click.option("--tls-vault", is_flag=True, help="Serve HTTPS with the certificate stored by `memo api tls import`.")
@click.option("--tls-client-ca", type=click.Path(path_type=Path), help="Require client certificates signed by this CA (PEM).")
@click.pass_obj
def serve(c: Ctx, host: str, port: int, endpoint: str, memory_version: str | None, hops: int, tls_cert: Path | None,
          tls_key: Path | None, tls_vault: bool, tls_client_ca: Path | None) -> None:
    """Serve the HTTP API (OpenAI-compatible /v1/chat/completions, /v1/ask) until SIGINT/SIGTERM."""
    import ipaddress

    from appliance.api import tls
    from appliance.api.server import ApiServer, serve_until_signalled
    from appliance.app.serving import open_api
    from appliance.executive.agent import ExecutiveParams

    if bool(tls_cert) != bool(tls_key) or (tls_vault and tls_cert) or (tls_client_ca and not (tls_cert or tls_vault)):
        raise MemoError("TLS needs --tls-cert FILE with --tls-key FILE, or --tls-vault (and --tls-client-ca only with one of them)")
    session = c.session()
    v = session.vault
    executive = open_api(session, endpoint, memory_version, ExecutiveParams(max_hops=hops))
    context = None
    if tls_cert or tls_vault:
        material = tls.from_vault(v) if tls_vault else tls.from_files(tls_cert, tls_key)  # type: ignore[arg-type]
        context = tls.server_context(material, tls_client_ca)
    try:
        server = ApiServer(session, executive, host, port, log=lambda line: err.print(escape(line)), tls=context)
    except OSError as exc:
        raise MemoError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port or --host") from None
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and context is None:
        err.print(f"[yellow]warning:[/] listening on {host} without TLS: bearer tokens and answers cross the network "
                  "unencrypted; serve with --tls-cert/--tls-key or --tls-vault")
    actor = session.principal
    v.audit.append(actor, "api.serve.start", executive.memory_version, host=host, port=server.server_address[1],
                   executive=executive.executive_model.identity, memory=executive.memory_model.identity,
                   tls=context is not None, client_certificates=tls_client_ca is not None)
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
@click.argument("directory", required=False, type=click.Path(path_type=Path, file_okay=False))
@click.option("--record", is_flag=True, help="Also unlock the vault and audit the pinned set if it changed (policy.changed).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def policy_check(c: Ctx, directory: Path | None, record: bool, as_json: bool) -> None:
    """Validate the installed policy files (or DIR) and the rules that span files; exit 1 naming FILE:LINE: FIELD."""
    from appliance.app import policy as policy_app

    policy, found = policy_app.check(directory or c.settings.policies_dir)  # a schema error raises: one line, file:line: field
    if record and not found:
        policy_app.record(c.session())
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


@policy_group.command("pin")
@click.argument("directory", required=False, type=click.Path(path_type=Path, file_okay=False))
@click.pass_obj
def policy_pin(c: Ctx, directory: Path | None) -> None:
    """Make DIR's policy files (default: the installed ones) the set in force for this vault (administrators; audited)."""
    from appliance.app.policy import pin

    source = directory or c.settings.policies_dir
    p = pin(c.session(), source)
    out.print(f"pinned {len(p.files)} file(s) from {source}, digest {p.digest[:16]}: now in force "
              f"(roles {'enforced' if p.enforced else 'not enforced (open mode)'}); editing the files changes nothing until "
              "they are pinned again")


@policy_group.command("show")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def policy_show(c: Ctx, as_json: bool) -> None:
    """The policy set in force (pinned in the vault; with no vault yet, the installed set `memo init` pins)."""
    from appliance.app.policy import describe, show
    from appliance.policy import load_policy
    from appliance.vault.store import Vault

    if Vault.exists(c.settings):
        session = c.session()
        data = show(session)
        p = load_policy(session.vault.settings)
    else:
        p = load_policy(c.settings.policies_dir)
        data = describe(p)
    if as_json:
        emit_json(data)
        return
    out.print(f"[bold]policies[/] {'pinned from ' if p.pinned else 'installed, not pinned: '}{p.directory}  digest {p.digest[:16]}")
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


@cli.command("daemon")
@click.option("--exit-after", type=float, help="Stop after this many seconds (tests, maintenance windows).")
@click.pass_obj
def daemon_cmd(c: Ctx, exit_after: float | None) -> None:
    """Run the scheduled jobs of the policy in force until SIGTERM, as the daemon account (systemd: packaging/systemd/memo-daemon.service)."""
    from appliance.app.session import Session
    from appliance.scheduler.daemon import Daemon

    session: Session = c.session()
    Daemon(Session.of(session.vault, "daemon"), log=lambda m: err.print(escape(m))).run(exit_after)


@cli.group("jobs")
def jobs_group() -> None:
    """Scheduled jobs: list, run now, pause, resume, history."""


@jobs_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def jobs_list(c: Ctx, as_json: bool) -> None:
    """Jobs of the policy with their schedule, state, next and last run."""
    from appliance.app.jobs import jobs

    rows = jobs(c.session())
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
    """Run a job now in this shell, as yourself (a training waits for no one: refused while another one runs)."""
    from appliance.app.jobs import run

    result = run(c.session(), name, log=lambda m: err.print(escape(m)))
    if as_json:
        emit_json(result)
    else:
        out.print(f"{name}: {result['status']}" + (f" — {result['reason']}" if result.get("reason") else "")
                  + (f"; candidate {result['candidate']} is in the approval queue" if result.get("candidate") else ""))
    if result["status"] == "skipped":
        sys.exit(1)


def _set_paused(c: Ctx, name: str, paused: bool) -> None:
    from appliance.app.jobs import set_paused

    out.print(set_paused(c.session(), name, paused))


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
    from appliance.app.jobs import history

    rows = history(c.session(), job, limit)
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
    if run.results.get("diagnosis"):
        from appliance.memory.diagnosis import Diagnosis, KindRow, diagnosis_table

        d = dict(run.results["diagnosis"])
        d["per_kind"] = [KindRow(**r) for r in d["per_kind"]]
        out.print(diagnosis_table(Diagnosis(**d)))
    out.print(f"predictions: {run.predictions_path}\nresults: {run.results_path}")


@cli.command("gui")
@click.pass_obj
def gui_cmd(c: Ctx) -> None:
    """Open the desktop console (PySide6); unlocks with --user and --key-file / MEMO_PASSPHRASE / MEMO_KEY_FILE, else asks who you are."""
    from gui.app import main as gui_main

    secret = c.secret(allow_prompt=False)
    sys.exit(gui_main(c.settings.home, secret.key_file, secret.passphrase, c.user))


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
