"""`memo bench`: run the pipeline on a corpus, answer a questions file with each system, score it.

Systems:

* ``memo``: the executive (decompose → ask the memory → follow up → synthesise) over the promoted
  memory, through :func:`appliance.executive.session.ask` (audited, channel ``bench``);
* ``bm25`` / ``dense``: retrieval over the vault's chunks, the top-k passages answered by the same
  executive chat model with one fixed prompt (:mod:`appliance.bench.rag`);
* ``memory`` (a diagnostic, not in the default list): the memory model alone, asked the question
  as it is — what the executive adds to (or loses from) the memory.

The work directory has the demo layout (``WORK/home`` vault, ``WORK/demo.key`` key file), so a
demo vault can serve as one. Every stage is resumable: ingestion skips unchanged files,
reflection skips done units, training is skipped when a promoted memory was trained on the current
reflections (the demo's own stages are reused), and predictions already in ``OUT/predictions.jsonl``
for the same system configuration (its ``config`` fingerprint) are not asked again.

Outputs: ``OUT/predictions.jsonl`` (one line per system and question: ``id, system, prediction,
latency_s, sub_questions`` plus ``kind, question, answers, correct, correct_first_sentence, words,
sources, tokens, timings, config``; RAG rows also ``retrieved`` and ``gold_in_context``: whether a
gold answer occurs in the retrieved passages, the ceiling for a perfect reader)
and ``OUT/results.json`` (per system: accuracy overall and per kind, median / p95 latency, tokens,
seconds; the configuration and the machine).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from appliance.bench.scoring import correct, first_sentence, matches, word_count
from appliance.errors import MemoError

SYSTEMS = ("memo", "bm25", "dense", "memory")  # memory: the memory model alone, asked the question as is (a diagnostic)
KINDS = ("single", "multi", "current", "none")  # none: the corpus does not say; the right answer abstains


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    answers: list[str]
    kind: str


def load_questions(path: Path, limit: int | None = None) -> list[Question]:
    """The questions file: one JSON object a line, ``{"id", "question", "answers": [...], "kind"}``."""
    questions: list[Question] = []
    seen: set[str] = set()
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise MemoError(f"{path}: cannot read the questions file ({exc.strerror})") from None
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as exc:
            raise MemoError(f"{path}:{n}: not JSON ({exc.msg})") from None
        if not isinstance(d, dict):
            raise MemoError(f"{path}:{n}: expected a JSON object")
        answers = d.get("answers")
        if not isinstance(d.get("id"), str) or not isinstance(d.get("question"), str) or not d["question"].strip():
            raise MemoError(f"{path}:{n}: needs a string id and a non-empty question")
        kind = str(d.get("kind") or "single")
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers) or (not answers and kind != "none"):
            raise MemoError(f"{path}:{n}: answers must be a non-empty list of strings (empty only for kind none)")
        if kind == "none" and answers:
            raise MemoError(f"{path}:{n}: a question of kind none has no answer: give \"answers\": []")
        if d["id"] in seen:
            raise MemoError(f"{path}:{n}: duplicate id {d['id']!r}")
        seen.add(d["id"])
        questions.append(Question(d["id"], d["question"], answers, kind))
    if not questions:
        raise MemoError(f"{path}: no questions")
    return questions[:limit] if limit else questions


def parse_systems(text: str) -> list[str]:
    systems = [s.strip().lower() for s in text.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown or not systems:
        raise MemoError(f"unknown system(s) {', '.join(unknown) or '(none)'}: choose from {', '.join(SYSTEMS)}")
    return list(dict.fromkeys(systems))


def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def score_row(prediction: str, answers: list[str], kind: str = "") -> dict[str, Any]:
    return {"correct": correct(prediction, answers, kind), "correct_first_sentence": correct(first_sentence(prediction), answers, kind),
            "words": word_count(prediction)}


def _p95(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(0.95 * len(s) + 0.5) - 1))] if s else 0.0


# ------------------------------------------------------------------------------------- systems
@dataclass
class Answer:
    prediction: str
    latency_s: float
    sub_questions: list[dict[str, Any]]
    sources: list[str]
    tokens: dict[str, int]
    timings: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)


class System:
    name: str
    config: str  # fingerprint: predictions made under another configuration are asked again
    prep_seconds: float = 0.0
    description: str = ""

    def answer(self, q: Question) -> Answer:  # pragma: no cover - interface
        raise NotImplementedError


class MemoSystem(System):
    name = "memo"

    def __init__(self, vault, endpoint: str) -> None:  # noqa: ANN001
        from appliance.app.serving import open_executive
        from appliance.app.session import Session

        started = time.monotonic()
        self.vault = vault
        self.session = Session.of(vault, "bench")
        self.executive = open_executive(self.session, endpoint)
        self.prep_seconds = time.monotonic() - started
        ex = self.executive
        self.description = f"executive {ex.executive_model.identity}; memory {ex.memory_version} ({ex.memory_model.identity})"
        self.config = _fingerprint(["memo", ex.executive_model.identity, ex.memory_version, ex.memory_model.identity,
                                    ex.params.__dict__])

    def answer(self, q: Question) -> Answer:
        from appliance.app.qa import ask

        started = time.monotonic()
        trace = ask(self.session, self.executive, q.question)
        latency = time.monotonic() - started
        subs = [{"question": s.question, "answer": s.answer, "sources": s.sources, "hop": s.hop, "confidence": s.confidence,
                 "grounded": s.grounded, "cited": s.cited} for s in trace.sub_answers]
        return Answer(trace.answer, latency, subs, trace.sources, dict(trace.tokens), dict(trace.timings),
                      {"confidence": trace.confidence})


class MemoryOnlySystem(System):
    """The memory model asked the user's question directly: no decomposition, no abstention.

    Not a baseline but a diagnostic: set against ``memo`` it shows what the executive adds or loses.
    """

    name = "memory"

    def __init__(self, vault, memory: MemoSystem | None) -> None:  # noqa: ANN001
        from appliance.app.serving import open_memory
        from appliance.app.session import Session
        from appliance.memory.versions import promoted

        started = time.monotonic()
        if memory is not None:
            self.memory, self.version = memory.executive.memory_model, memory.executive.memory_version
        else:
            current = promoted(vault)
            if current is None:
                raise MemoError("no memory is promoted yet: run `memo train`, then `memo export VERSION --promote`")
            self.memory, self.version = open_memory(Session.of(vault, "bench"), current.id), current.id
        self.prep_seconds = time.monotonic() - started
        self.max_tokens = _executive_params().memory_max_tokens
        self.description = f"memory {self.version} ({self.memory.identity}) alone"
        self.config = _fingerprint(["memory", self.version, self.memory.identity, self.max_tokens])

    def answer(self, q: Question) -> Answer:
        started = time.monotonic()
        r = self.memory.ask([q.question], self.max_tokens)[0]
        latency = time.monotonic() - started
        return Answer(r.answer, latency, [], r.sources,
                      {"memory_prompt": r.prompt_tokens, "memory_completion": r.completion_tokens}, {},
                      {"confidence": r.confidence})


class RagSystem(System):
    def __init__(self, name: str, vault, model, passages, top_k: int, max_tokens: int) -> None:  # noqa: ANN001
        from appliance.bench.rag import RAG_SYSTEM, RagAnswerer, make_retriever

        self.name = name
        retriever = make_retriever(name, passages)
        self.prep_seconds = retriever.index_seconds
        self.rag = RagAnswerer(model, retriever, k=top_k, max_tokens=max_tokens)
        self._by_key = {(p.doc_id, p.seq): p for p in passages}
        corpus = _fingerprint([[p.doc_id, p.seq, p.text] for p in passages])
        self.description = f"executive {model.identity}; top-{top_k} of {len(passages)} chunks"
        self.config = _fingerprint([name, model.identity, top_k, max_tokens, self.rag.context_tokens, RAG_SYSTEM, corpus])

    def gold_in_context(self, row: dict[str, Any]) -> bool:
        """Whether a gold answer occurs in the retrieved passages: the best a perfect reader could do."""
        text = "\n".join(self._by_key[(h["doc_id"], h["seq"])].indexed_text for h in row.get("retrieved", [])
                         if (h["doc_id"], h["seq"]) in self._by_key)
        return matches(text, row["answers"])

    def answer(self, q: Question) -> Answer:
        r = self.rag.answer(q.question)
        retrieved = [{"doc_id": h.passage.doc_id, "seq": h.passage.seq, "score": round(h.score, 4)} for h in r.hits]
        return Answer(r.answer, r.seconds, [], r.sources, r.tokens, r.timings, {"retrieved": retrieved})


# ------------------------------------------------------------------------------------- pipeline
def prepare_work(work: Path, corpus: Path, with_memory: bool, console: Console, generator: str = "local",
                 reuse_memory: bool = False):  # noqa: ANN201
    """Open (or create) the work vault, ingest the corpus, and for memo reflect, train, export, promote.

    Each stage is skipped when already done (see :mod:`appliance.demo`). ``reuse_memory``: when a
    memory is already promoted, answer with it as it is (no reflection or training, even if the
    reflections changed since): for a vault prepared beforehand, where retraining would take hours.
    """
    from appliance.demo import demo_paths, ingest_stage, memory_stage, open_demo_vault, reflect_stage

    corpus = Path(corpus)
    if not corpus.is_dir():
        raise MemoError(f"{corpus}: not a directory; --corpus takes the folder of documents")
    home, key = demo_paths(work)
    console.print(f"work vault: {home} (key file {key})")
    console.rule("ingest")
    vault = open_demo_vault(work)
    ingest_stage(vault, corpus, console)
    if with_memory and reuse_memory:
        from appliance.memory.versions import promoted

        current = promoted(vault)
        if current is not None:
            pairs = current.lineage.get("reflections", {}).get("pairs")
            console.print(f"memory: {current.id} as promoted (trained on {pairs} pairs); reflection and training skipped (--reuse-memory)")
            return vault
        console.print("no promoted memory to reuse: running reflection and training")
    if with_memory:
        console.rule("reflections (all documents)")
        pairs = reflect_stage(vault, console, None, generator)
        console.rule("memory")
        version, train_pairs, probes = memory_stage(vault, pairs, console)
        console.print(f"memory: {version.id} ({len(train_pairs)} training pairs, {len(probes)} held-out probes)")
    return vault


def _executive_params():  # noqa: ANN202
    """memo's executive defaults: RAG answers get its final-answer budget, the memory alone its memory budget."""
    from appliance.executive.agent import ExecutiveParams

    return ExecutiveParams()


def open_systems(vault, systems: Iterable[str], endpoint: str, top_k: int) -> list[System]:  # noqa: ANN001
    from appliance.bench.rag import load_passages

    opened: list[System] = []
    memo: MemoSystem | None = None
    if "memo" in systems:
        memo = MemoSystem(vault, endpoint)
    rag_model = None
    passages = None
    for name in systems:
        if name == "memo":
            opened.append(memo)  # type: ignore[arg-type]
            continue
        if name == "memory":
            opened.append(MemoryOnlySystem(vault, memo))
            continue
        if rag_model is None:
            # the same executive model memo uses; RAG sends document text to it, which the policy
            # must allow for an external endpoint (checked by open_model before any connection)
            from appliance.llm.connect import open_model

            if memo is not None and endpoint == "local":
                rag_model = memo.executive.executive_model
            else:
                rag_model = open_model(vault, endpoint, purpose="executive", sends=("questions", "document_text"))
            passages = load_passages(vault)
        opened.append(RagSystem(name, vault, rag_model, passages, top_k, _executive_params().answer_max_tokens))
    return opened


# ------------------------------------------------------------------------------------- results
def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill: that answer is asked again
            continue
    return rows


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    from appliance.crypto.atomic import atomic_write

    atomic_write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())


def summarise(rows: list[dict[str, Any]], prep_seconds: float = 0.0) -> dict[str, Any]:
    """Accuracy overall and per kind, latency median/p95, tokens and seconds for one system's rows."""
    lat = [r["latency_s"] for r in rows]
    out: dict[str, Any] = {
        "questions": len(rows),
        "accuracy": round(sum(r["correct"] for r in rows) / len(rows), 4) if rows else 0.0,
        "accuracy_first_sentence": round(sum(r.get("correct_first_sentence", False) for r in rows) / len(rows), 4) if rows else 0.0,
    }
    for kind in KINDS:
        mine = [r for r in rows if r.get("kind") == kind]
        out[f"accuracy_{kind}"] = round(sum(r["correct"] for r in mine) / len(mine), 4) if mine else None
        out[f"questions_{kind}"] = len(mine)
    answerable = [r for r in rows if r.get("kind") != "none"]
    out["accuracy_answerable"] = round(sum(r["correct"] for r in answerable) / len(answerable), 4) if answerable else None
    out.update(
        median_latency_s=round(statistics.median(lat), 3) if lat else 0.0,
        p95_latency_s=round(_p95(lat), 3),
        total_tokens=sum(sum(v for v in r.get("tokens", {}).values() if isinstance(v, int)) for r in rows),
        tokens=_sum_dicts(r.get("tokens", {}) for r in rows),
        total_seconds=round(sum(lat), 2),
        prep_seconds=round(prep_seconds, 2),
        gold_in_context=(round(sum(r["gold_in_context"] for r in rows) / len(rows), 4)
                         if rows and all("gold_in_context" in r for r in rows) else None),
        mean_answer_words=round(statistics.mean(r.get("words", 0) for r in rows), 1) if rows else 0.0,
        mean_sub_questions=round(statistics.mean(len(r.get("sub_questions") or []) for r in rows), 2) if rows else 0.0,
    )
    return out


def _sum_dicts(dicts: Iterable[dict[str, Any]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            if isinstance(v, int):
                total[k] = total.get(k, 0) + v
    return total


def results_table(results: dict[str, Any]) -> Table:
    systems = results["systems"]
    counts = next(iter(systems.values()), {}) if systems else {}
    kinds = " / ".join(f"{k} {counts.get(f'questions_{k}', 0)}" for k in KINDS)
    table = Table("system", "accuracy", "answerable", *(f"{k}" for k in KINDS), "1st sentence", "gold in top-k", "words/answer", "median s", "p95 s",
                  "tokens", "answer s", "prep s", title=f"{results['questions']} questions ({kinds})")

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.1%}"

    for name, s in systems.items():
        table.add_row(name, pct(s["accuracy"]), pct(s.get("accuracy_answerable")), *(pct(s.get(f"accuracy_{k}")) for k in KINDS), pct(s.get("accuracy_first_sentence")), pct(s.get("gold_in_context")),
                      f"{s['mean_answer_words']:.1f}",
                      f"{s['median_latency_s']:.2f}", f"{s['p95_latency_s']:.2f}", f"{s['total_tokens']:,}",
                      f"{s['total_seconds']:.0f}", f"{s['prep_seconds']:.1f}")
    return table


@dataclass
class BenchRun:
    results: dict[str, Any]
    predictions_path: Path
    results_path: Path

    @property
    def table(self) -> Table:
        return results_table(self.results)


def run_bench(corpus: Path, questions_file: Path, systems: list[str], work: Path, out: Path,
              limit: int | None = None, endpoint: str = "local", top_k: int = 4,
              console: Console | None = None, progress: Callable[[str, int, int, dict], None] | None = None,
              reuse_memory: bool = False, diagnose: bool = True) -> BenchRun:
    """Prepare the work vault, answer every question with every system (resuming), write and return results."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    console = console or Console()
    questions = load_questions(questions_file, limit)
    systems = parse_systems(",".join(systems))
    vault = prepare_work(work, corpus, bool({"memo", "memory"} & set(systems)), console, reuse_memory=reuse_memory)
    console.rule("answers")
    opened = open_systems(vault, systems, endpoint, top_k)

    out.mkdir(parents=True, exist_ok=True)
    pred_path, res_path = out / "predictions.jsonl", out / "results.json"
    wanted = {q.id for q in questions}
    configs = {s.name: s.config for s in opened}
    old = _read_jsonl(pred_path)
    # rows of systems not run now are kept as they are; rows of a system run now are reused only
    # under the same configuration
    kept_other = [r for r in old if r.get("system") not in configs]
    done = {(r["system"], r["id"]): r for r in old
            if r.get("system") in configs and r.get("config") == configs[r["system"]] and r.get("id") in wanted}
    _write_jsonl(pred_path, kept_other + list(done.values()))

    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for system in opened:
        console.print(f"{system.name}: {system.description}")
        todo = [q for q in questions if (system.name, q.id) not in done]
        if len(todo) < len(questions):
            console.print(f"  {len(questions) - len(todo)} answers reused from {pred_path}")
        with pred_path.open("a", encoding="utf-8") as fh:
            for i, q in enumerate(todo, start=1):
                a = system.answer(q)
                row = {
                    "id": q.id, "system": system.name, "prediction": a.prediction, "latency_s": round(a.latency_s, 3),
                    "sub_questions": a.sub_questions, "kind": q.kind, "question": q.question, "answers": q.answers,
                    **score_row(a.prediction, q.answers, q.kind), "sources": a.sources, "tokens": a.tokens, "timings": a.timings, **a.extra, "config": system.config,
                }
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                fh.flush()
                done[(system.name, q.id)] = row
                if progress:
                    progress(system.name, i, len(todo), row)

    order = {q.id: i for i, q in enumerate(questions)}
    by_id = {q.id: q for q in questions}
    # reused rows are scored again: the rule (or the gold list) may have changed since they were written
    ours = sorted(({**r, "answers": by_id[r["id"]].answers, "kind": by_id[r["id"]].kind,
                    **score_row(r["prediction"], by_id[r["id"]].answers, by_id[r["id"]].kind)} for r in done.values()),
                  key=lambda r: (systems.index(r["system"]), order[r["id"]]))
    for system in opened:
        if isinstance(system, RagSystem):
            for r in ours:
                if r["system"] == system.name:
                    r["gold_in_context"] = system.gold_in_context(r)
    _write_jsonl(pred_path, kept_other + ours)

    previous = json.loads(res_path.read_text()) if res_path.exists() else {}
    table_systems: dict[str, Any] = {}
    for s in opened:
        rows = [r for r in ours if r["system"] == s.name]
        table_systems[s.name] = {**summarise(rows, s.prep_seconds), "description": s.description, "config": s.config}
    for name, prev in previous.get("systems", {}).items():  # systems from an earlier run, same questions
        if name not in table_systems and prev.get("questions_file") == str(questions_file) and prev.get("questions") == len(questions):
            table_systems[name] = prev
    for s in table_systems.values():
        s.setdefault("questions_file", str(questions_file))
    results = {
        "questions_file": str(questions_file), "corpus": str(corpus), "questions": len(questions),
        "work": str(work), "executive_endpoint": endpoint, "top_k": top_k, "scoring": "appliance.bench.scoring (normalised whole-word containment of any gold answer or alias)",
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "started_at": started_at,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "systems": {n: table_systems[n] for n in [*systems, *[k for k in table_systems if k not in systems]]},
    }
    memory_system = next((s for s in opened if isinstance(s, (MemoSystem, MemoryOnlySystem))), None)
    if memory_system is not None and diagnose:
        console.print("diagnosis: held-out probes and a sample of training questions …")
        results["diagnosis"] = bench_diagnosis(vault, memory_system, table_systems)
    from appliance.crypto.atomic import atomic_write

    atomic_write(res_path, (json.dumps(results, indent=2, ensure_ascii=False) + "\n").encode())
    vault.audit.append(vault.principal, "bench.run", None, questions=len(questions), systems=systems,
                       accuracy={n: s["accuracy"] for n, s in table_systems.items()})
    return BenchRun(results, pred_path, res_path)


def bench_diagnosis(vault, system: System, table_systems: dict[str, Any]) -> dict[str, Any]:  # noqa: ANN001
    """The memory's diagnosis (coverage, exposures, training and held-out recall) with memo against the
    memory alone per question kind, from this run."""
    from appliance.memory.diagnosis import diagnose
    from appliance.memory.evaluate import evaluate
    from appliance.memory.train import split_probes
    from appliance.memory.versions import get_version
    from appliance.reflect.store import load_pairs

    memory = system.executive.memory_model if isinstance(system, MemoSystem) else system.memory
    version = get_version(vault, system.executive.memory_version if isinstance(system, MemoSystem) else system.version)
    pairs = load_pairs(vault)
    _, probes = split_probes(pairs)
    d = diagnose(vault, memory, version, pairs, evaluate(memory, probes))
    d.bench = {kind: {name: table_systems[name].get(f"accuracy_{kind}") for name in ("memo", "memory", "bm25", "dense")
                      if name in table_systems} for kind in KINDS}
    return d.to_dict()
