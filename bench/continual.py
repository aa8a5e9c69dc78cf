"""Benchmark: continual update of a memory — full retrain vs merging a task vector, in one run.

    .venv/bin/python -m bench.continual [--demo-dir .memo-demo] [--epochs 8] [--methods linear,ties,dare,dare_ties]
                                        [--json bench/results/continual.json]

On a *copy* of a demo vault that holds reflections for the sample corpus (`memo demo --full`, or
`memo reflect`; missing ones are generated): an "old" memory is trained on a few documents, then
new documents arrive — one of them a policy that supersedes an old one — and the memory is brought
up to date two ways, timed:

(a) **full retrain** from the base on the old and new reflections;
(b) **update**: an adapter trained from the old memory on the new reflections (the task vector),
    with a replayed sample of old pairs (``--replay 1`` = as many old as new) or none (``0``, the
    naive task vector), merged into the old memory with each peft method (appliance.memory.merge).

Every model is scored on the same held-out probes (paraphrases): old documents (retention), new
ones (acquisition), and the "… now?" questions of the superseding policy. Prints a table, writes
JSON. Wall times include loading the base model, as a real run would. An existing ``--work`` dir is
resumed: trainings already finished there (same pairs and parameters) are reused with their times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

OLD = ("hr/travel-policy-2024.md", "hr/org-chart.md", "it/systems-inventory.html", "ops/sites.md",
       "finance/expense-approval-limits-2023.md")
NEW = ("hr/travel-policy-2025.md", "hr/leave-policy.txt")


def _docs(vault, suffixes: tuple[str, ...]) -> set[str]:  # noqa: ANN001
    from appliance.corpus.documents import list_documents

    found = {d.source.split("halq-wiki/")[-1]: d.id for d in list_documents(vault)}
    missing = [s for s in suffixes if s not in found]
    if missing:
        raise SystemExit(f"documents not in the demo vault: {', '.join(missing)} (run `memo demo` first)")
    return {found[s] for s in suffixes}


def _train(vault, pairs, params, label, console, **kw):  # noqa: ANN001, ANN003, ANN202
    """train_memory, or the version an earlier run of this benchmark (same --work) already trained
    on exactly these pairs and parameters. Returns (version, training wall seconds, reused)."""
    from appliance.llm.registry import DEFAULT_MODEL
    from appliance.memory.train import _run_id, train_memory
    from appliance.memory.versions import get_version, list_versions

    parent = kw.get("parent")
    base = get_version(vault, parent).base_model if parent else DEFAULT_MODEL
    rid = _run_id(base, parent, pairs, params)
    done = next((v for v in list_versions(vault) if v.lineage.get("run_id") == rid), None)
    if done is not None and done.metrics.get("bench_wall_seconds"):
        console.print(f"  {label}: reusing {done.id} from an earlier run ({done.metrics['bench_wall_seconds']:.0f} s)")
        return done, done.metrics["bench_wall_seconds"], True

    def tick(si) -> None:  # noqa: ANN001
        if si.step == 1 or si.step % 10 == 0 or si.step == si.total:
            console.print(f"  {label} step {si.step}/{si.total} loss {si.loss:.3f} ETA {si.eta_seconds:.0f} s")

    from appliance.memory.versions import update_metrics

    t = time.monotonic()
    v = train_memory(vault, pairs, params, actor="bench", progress=tick, **kw)
    wall = time.monotonic() - t
    update_metrics(vault, v.id, bench_wall_seconds=round(wall, 1))
    return v, wall, False


def main() -> None:  # noqa: C901, PLR0915
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo-dir", type=Path, default=Path(".memo-demo"))
    ap.add_argument("--work", type=Path, help="Where the vault copy goes (default: a temp dir, removed after).")
    ap.add_argument("--epochs", type=int, help="Training epochs (default: the appliance's).")
    ap.add_argument("--methods", default="linear,ties,dare,dare_ties")
    ap.add_argument("--replay", default="1.0,0", help="Replay ratios to compare (old pairs rehearsed per new pair).")
    ap.add_argument("--naive-methods", default="linear,ties", help="Merge methods run for replay 0 (naive task vector).")
    ap.add_argument("--json", type=Path, default=Path("bench/results/continual.json"))
    args = ap.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    console = Console(highlight=False, width=160)

    from dataclasses import replace

    from appliance.config import Settings
    from appliance.demo import demo_paths
    from appliance.memory.candidate_eval import compare, probe_sets
    from appliance.memory.evaluate import TransformersChat
    from appliance.memory.merge import MergeSpec, TaskVectorModel, load_adapter
    from appliance.memory.model_io import load_base, save_adapter
    from appliance.memory.train import set_threads, split_probes
    from appliance.memory.versions import create_version
    from appliance.reflect.store import load_pairs
    from appliance.vault.keys import Secret
    from appliance.vault.store import Vault

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    specs = {m: MergeSpec(m) for m in methods}
    home, key = demo_paths(args.demo_dir)
    work = args.work or Path(tempfile.mkdtemp(prefix="memo-continual-"))
    if not (work / "home").exists():  # an existing --work is resumed: finished trainings are reused
        shutil.copytree(home, work / "home")
        shutil.copy2(key, work / "demo.key")
    vault = Vault.open(Settings.load(work / "home"), Secret(key_file=work / "demo.key"))
    params = vault.settings.train if not args.epochs else replace(vault.settings.train, epochs=args.epochs)
    old_docs, new_docs = _docs(vault, OLD), _docs(vault, NEW)
    have = {d for p in load_pairs(vault, old_docs | new_docs) for d in p.doc_ids}
    if not (old_docs | new_docs) <= have:
        from appliance.llm.connect import open_model
        from appliance.reflect.generate import reflect

        console.print("generating missing reflections …")
        reflect(vault, open_model(vault, "local", "generator"), doc_ids=old_docs | new_docs)
    every = load_pairs(vault, old_docs | new_docs)
    old_pairs = [p for p in every if set(p.doc_ids) <= old_docs]
    new_pairs = [p for p in every if set(p.doc_ids) & new_docs and set(p.doc_ids) <= old_docs | new_docs]
    old_train, _ = split_probes(old_pairs)
    new_train, _ = split_probes(new_pairs)
    sets = probe_sets(old_pairs + new_pairs, new_docs)
    threads = set_threads()
    console.print(f"old: {len(old_docs)} docs, {len(old_train)} training pairs; new: {len(new_docs)} docs, {len(new_train)} "
                  f"training pairs; probes {sets.counts()}; epochs {params.epochs}, batch {params.batch_size}, threads {threads}")

    timings: dict[str, float] = {}
    console.rule("old memory")
    old, timings["old_train"], _ = _train(vault, old_train, params, "old", console)

    from appliance.memory.update import replay_sample

    replays = [float(x) for x in args.replay.split(",") if x.strip()]
    console.rule("update: task vector(s) from the old memory, then merges")
    tvs: dict[float, Any] = {}
    for ratio in replays:
        rehearse = replay_sample(old_train, len(new_train), ratio, params.seed)
        v, wall, _ = _train(vault, new_train + rehearse, params, f"task vector (replay {ratio:g}: {len(rehearse)} old pairs)",
                            console, parent=old.id, lineage_extra={"kind": "task_vector"})
        tvs[ratio] = v
        timings[f"task_vector_train_replay{ratio:g}"] = wall
    t = time.monotonic()
    loaded = load_base(vault, old.base_model)
    tv = TaskVectorModel(loaded.model)
    tv.add(load_adapter(vault, old.id))
    for v in tvs.values():
        tv.add(load_adapter(vault, v.id))
    timings["merge_load"] = (time.monotonic() - t) / (1 + len(tvs))  # one base load + the adapters, per update
    merge_seconds: dict[str, float] = {}
    systems: list[tuple[str, str, float, str]] = []  # (label, adapter, replay, method)
    for ratio, tv_version in tvs.items():
        for m, spec in specs.items():
            if ratio == 0 and m not in args.naive_methods.split(","):
                continue
            label = f"{m}+replay{ratio:g}"
            t = time.monotonic()
            name = tv.merge([old.id], tv_version.id, spec, f"merged_{m}_{ratio:g}".replace(".", "_"))
            adapter = tv.export(name)
            v = create_version(vault, old.id, old.base_model, "merge", "bench",
                               {"merge": {**spec.to_dict(), "old": [old.id], "task_vector": tv_version.id}})
            save_adapter(vault, v.id, adapter.state, adapter.config)
            merge_seconds[label] = time.monotonic() - t
            systems.append((label, name, ratio, m))
            console.print(f"  {label}: merged into {v.id} (rank {adapter.rank}) in {merge_seconds[label]:.1f} s")

    console.rule("full retrain on old + new")
    full, timings["retrain"], _ = _train(vault, old_train + new_train, params, "retrain", console)
    tv.add(load_adapter(vault, full.id))

    console.rule("evaluation (held-out probes)")
    reference = TransformersChat(tv.activate(old.id), loaded.tokenizer, f"old:{old.id}")
    ref_out: dict[str, Any] = {}
    from appliance.memory.candidate_eval import _outcomes

    for name in ("old", "new", "superseded"):
        tv.activate(old.id)
        ref_out[name] = _outcomes(reference, getattr(sets, name), 8)
    reports: dict[str, dict[str, Any]] = {}
    for system, adapter in [("retrain", full.id)] + [(label, name) for label, name, _, _ in systems]:
        tv.activate(adapter)
        model = TransformersChat(tv.peft, loaded.tokenizer, f"{system}:{adapter}")
        reports[system] = compare(model, reference, sets, reference_outcomes=ref_out)
        r = reports[system]
        console.print(f"  {system}: overall {r['overall']}, retention {r['retention']}, acquisition {r['acquisition']}, "
                      f"superseded {r['superseded']['candidate']} ({r['seconds']:.0f} s)")
    ref_acc = {k: (round(sum(o.contains for o in v) / len(v), 4) if v else None) for k, v in ref_out.items()}
    all_ref = ref_out["old"] + ref_out["new"]

    retrain_s = timings["retrain"]
    rows = []
    base_acc = reports["retrain"]["overall"] or 0.0
    for system, r in reports.items():
        info = next(((ratio, m) for label, _, ratio, m in systems if label == system), None)
        wall = retrain_s if info is None else (timings[f"task_vector_train_replay{info[0]:g}"] + timings["merge_load"]
                                              + merge_seconds[system])
        rows.append({
            "system": system if info is None else f"merge:{system}",
            "peft": None if info is None else {**specs[info[1]].to_dict(), "replay": info[0]},
            "accuracy": r["overall"], "old_accuracy": r["old_accuracy"]["candidate"], "retention": r["retention"],
            "acquisition": r["acquisition"], "superseded": r["superseded"]["candidate"],
            "gap_points": round((base_acc - (r["overall"] or 0.0)) * 100, 1),
            "gap_relative": round((base_acc - (r["overall"] or 0.0)) / base_acc, 4) if base_acc else None,
            "wall_s": round(wall, 1), "time_vs_retrain": round(wall / retrain_s, 3),
        })
    table = Table("system", "acc. all", "acc. old", "retention", "acquisition", "superseded", "gap vs retrain", "wall s",
                  "time vs retrain", title="continual update on halq-wiki (held-out paraphrase probes, answer contains gold)")
    table.add_row("old memory (before)", str(round(sum(o.contains for o in all_ref) / len(all_ref), 4)), str(ref_acc["old"]),
                  "-", str(ref_acc["new"]), str(ref_acc["superseded"]), "-", f"{timings['old_train']:.0f}", "-")
    for row in rows:
        table.add_row(row["system"], str(row["accuracy"]), str(row["old_accuracy"]), str(row["retention"]), str(row["acquisition"]),
                      str(row["superseded"]), "-" if row["system"] == "retrain" else f"{row['gap_points']:+.1f} pts ({row['gap_relative']:.0%})",
                      f"{row['wall_s']:.0f}", f"{row['time_vs_retrain']:.0%}")
    console.print(table)
    tv_times = ", ".join(f"replay {r:g}: {timings['task_vector_train_replay' + format(r, 'g')]:.0f} s" for r in tvs)
    console.print(f"update = task-vector training ({tv_times})"
                  f" + base load {timings['merge_load']:.0f} s + merge; retrain = {retrain_s:.0f} s (training wall times include "
                  "loading the base model). Goal: gap ≤ 5 % at ≤ 10 % of retrain time.")
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": threads},
        "old_documents": list(OLD), "new_documents": list(NEW),
        "pairs": {"old_train": len(old_train), "new_train": len(new_train)}, "probes": sets.counts(), "replay": replays,
        "params": {"epochs": params.epochs, "batch_size": params.batch_size, "rank": params.rank, "lr": params.learning_rate},
        "timings_s": {k: round(v, 1) for k, v in timings.items()}, "merge_seconds": {k: round(v, 2) for k, v in merge_seconds.items()},
        "old_memory": ref_acc, "rows": rows,
        "reports": {k: {kk: vv for kk, vv in v.items() if kk != "outcomes"} for k, v in reports.items()},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {args.json}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
