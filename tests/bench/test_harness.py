"""`memo bench`: questions file, predictions/results schema, resuming, the table, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from appliance.bench import harness
from appliance.bench.harness import load_questions, parse_systems, run_bench, summarise
from appliance.demo import demo_paths
from appliance.errors import MemoError
from tests.bench.conftest import QUESTIONS, EchoModel

PRED_KEYS = {"id", "system", "prediction", "latency_s", "sub_questions", "kind", "question", "answers", "correct", "correct_first_sentence",
             "words", "sources", "tokens", "timings", "retrieved", "config", "gold_in_context"}


@pytest.fixture
def echo(monkeypatch: pytest.MonkeyPatch) -> EchoModel:
    model = EchoModel()
    import appliance.llm.connect as connect

    def fake_open(vault, endpoint="local", purpose="generator", sends=None):  # noqa: ANN001, ANN202
        assert purpose == "executive" and "document_text" in sends  # the policy is asked for what RAG sends
        return model

    monkeypatch.setattr(connect, "open_model", fake_open)
    return model


def _quiet() -> Console:
    return Console(file=open(os.devnull, "w"), width=200)  # noqa: SIM115


def test_questions_file_is_checked(tmp_path: Path) -> None:
    bad = tmp_path / "q.jsonl"
    for text, msg in [("", "no questions"), ("{nope\n", "not JSON"), ('{"id": "a", "question": "q?", "answers": []}\n', "answers"),
                      ('{"id": "a", "question": "q?", "answers": ["x"]}\n' * 2, "duplicate id")]:
        bad.write_text(text)
        with pytest.raises(MemoError, match=msg):
            load_questions(bad)
    bad.write_text('{"id": "a", "question": "q?", "answers": ["x"]}\n\n{"id": "b", "question": "r?", "answers": ["y"], "kind": "multi"}\n')
    qs = load_questions(bad)
    assert [(q.id, q.kind) for q in qs] == [("a", "single"), ("b", "multi")]
    assert len(load_questions(bad, limit=1)) == 1


def test_systems_are_checked() -> None:
    assert parse_systems("bm25, dense,bm25") == ["bm25", "dense"] and parse_systems("memory") == ["memory"]
    with pytest.raises(MemoError, match="unknown system"):
        parse_systems("bm25,hippo")


def test_bench_writes_predictions_and_results_and_resumes(tmp_path: Path, small_corpus: Path, questions_file: Path,
                                                         echo: EchoModel) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    run = run_bench(small_corpus, questions_file, ["bm25"], work, out, console=_quiet(), top_k=2)
    home, key = demo_paths(work)
    assert home.is_dir() and key.is_file()  # the demo layout: a demo dir can be a work dir
    rows = [json.loads(line) for line in run.predictions_path.read_text().splitlines()]
    assert [r["id"] for r in rows] == [q["id"] for q in QUESTIONS] and {r["system"] for r in rows} == {"bm25"}
    for r in rows:
        assert set(r) == PRED_KEYS
        assert r["sub_questions"] == [] and isinstance(r["latency_s"], float) and isinstance(r["correct"], bool)
        assert len(r["retrieved"]) == 2 and r["sources"]
    # the echo model repeats its context: the VPN question's passage names gw2
    assert rows[0]["correct"] is True and rows[0]["gold_in_context"] is True
    assert all(r["correct"] == r["gold_in_context"] for r in rows)  # an echo is a perfect reader (of 400 words)
    results = json.loads(run.results_path.read_text())
    s = results["systems"]["bm25"]
    assert results["questions"] == 3 and s["questions"] == 3 and s["questions_multi"] == 1 and s["accuracy_current"] is None
    assert s["accuracy"] == round(sum(r["correct"] for r in rows) / 3, 4)
    assert s["gold_in_context"] == round(sum(r["gold_in_context"] for r in rows) / 3, 4)
    assert s["total_tokens"] == sum(sum(r["tokens"].values()) for r in rows) and s["median_latency_s"] >= 0
    assert echo.calls == 3

    # resumed: nothing asked again; another top-k is another configuration and is asked again
    again = run_bench(small_corpus, questions_file, ["bm25"], work, out, console=_quiet(), top_k=2)
    assert echo.calls == 3 and again.results["systems"]["bm25"]["accuracy"] == s["accuracy"]
    run_bench(small_corpus, questions_file, ["bm25"], work, out, console=_quiet(), top_k=1, limit=2)
    assert echo.calls == 5
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(len(r["retrieved"]) == 1 for r in rows)


def test_killed_run_keeps_finished_answers(tmp_path: Path, small_corpus: Path, questions_file: Path, echo: EchoModel,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    seen = []

    def die_after_two(system, done, total, row):  # noqa: ANN001, ANN202
        seen.append(row["id"])
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_bench(small_corpus, questions_file, ["bm25"], tmp_path / "w", out, console=_quiet(), progress=die_after_two)
    with (out / "predictions.jsonl").open("a") as fh:
        fh.write('{"id": "t3", "system": "bm25", "predi')  # a line torn by the kill
    run_bench(small_corpus, questions_file, ["bm25"], tmp_path / "w", out, console=_quiet())
    assert echo.calls == 3
    assert [json.loads(x)["id"] for x in (out / "predictions.jsonl").read_text().splitlines()] == ["t1", "t2", "t3"]


def test_summary_and_table() -> None:
    rows = [{"id": str(i), "kind": k, "correct": c, "correct_first_sentence": False, "latency_s": float(i), "tokens": {"a": 10, "b": 5}, "words": 4,
             "sub_questions": [{}] * i}
            for i, (k, c) in enumerate([("single", True), ("single", False), ("multi", True), ("current", False)], start=1)]
    s = summarise(rows, prep_seconds=2.5)
    assert s["accuracy"] == 0.5 and s["accuracy_first_sentence"] == 0.0 and s["accuracy_single"] == 0.5 and s["accuracy_multi"] == 1.0 and s["accuracy_current"] == 0.0
    assert s["median_latency_s"] == 2.5 and s["p95_latency_s"] == 4.0 and s["total_tokens"] == 60 and s["tokens"] == {"a": 40, "b": 20}
    assert s["total_seconds"] == 10.0 and s["mean_sub_questions"] == 2.5 and s["prep_seconds"] == 2.5
    console = Console(width=200, record=True)
    console.print(harness.results_table({"questions": 4, "systems": {"memo": s}}))
    text = console.export_text()
    assert "memo" in text and "50.0%" in text and "100.0%" in text and "single 2 / multi 1 / current 1" in text


@pytest.mark.slow
def test_cli_bench_with_real_models(tmp_path: Path, small_corpus: Path, questions_file: Path, bundled_gguf: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMO_")}
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "bench", "--corpus", str(small_corpus), "--questions", str(questions_file),
         "--systems", "bm25,dense", "--work", str(tmp_path / "work"), "--out", str(out), "--limit", "2", "--top-k", "2"],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "predictions:" in proc.stdout and "bm25" in proc.stdout and "dense" in proc.stdout
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [(r["system"], r["id"]) for r in rows] == [("bm25", "t1"), ("bm25", "t2"), ("dense", "t1"), ("dense", "t2")]
    assert all(r["prediction"] and r["tokens"]["executive_prompt"] > 0 for r in rows)
    results = json.loads((out / "results.json").read_text())
    assert list(results["systems"]) == ["bm25", "dense"] and results["systems"]["dense"]["prep_seconds"] > 0


def test_reuse_memory_skips_reflection_and_training(tmp_path: Path, small_corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    import appliance.demo as demo
    import appliance.memory.versions as versions

    def refuse(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("reflection/training must be skipped")

    monkeypatch.setattr(demo, "reflect_stage", refuse)
    monkeypatch.setattr(demo, "memory_stage", refuse)
    monkeypatch.setattr(versions, "promoted", lambda vault: types.SimpleNamespace(id="mem-0009", lineage={"reflections": {"pairs": 7}}))
    console = Console(width=200, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    harness.prepare_work(tmp_path / "w", small_corpus, True, console, reuse_memory=True)
    assert "mem-0009 as promoted (trained on 7 pairs)" in console.export_text()
    monkeypatch.setattr(versions, "promoted", lambda vault: None)  # nothing to reuse: the pipeline runs
    with pytest.raises(AssertionError, match="must be skipped"):
        harness.prepare_work(tmp_path / "w", small_corpus, True, console, reuse_memory=True)
