"""Rescoring a run's stored answers with today's rule (bench/rescore.py)."""

import json
from pathlib import Path

import pytest

from bench.rescore import main, rescore


def _row(system: str, qid: str, prediction: str, answers: list[str], correct: bool, kind: str = "single") -> dict:
    return {"id": qid, "system": system, "prediction": prediction, "answers": answers, "kind": kind,
            "correct": correct, "latency_s": 1.0, "tokens": {}}


def test_a_verdict_the_rule_changed_is_listed_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "predictions.jsonl"
    rows = [_row("memory", "q1", "52 hours", ["52 minutes", "52"], True),  # the old rule's credit
            _row("memory", "q2", "27 days", ["27 days", "27"], True),
            _row("memo", "q1", "The memory does not know.", ["52 minutes", "52"], False),
            _row("memo", "q3", "The memory does not know.", ["unknown"], True, kind="none")]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = rescore(path)
    assert [(c["system"], c["id"], c["was"], c["now"]) for c in out["changed"]] == [("memory", "q1", True, False)]
    assert out["systems"]["memory"]["accuracy_single"] == 0.5 and out["systems"]["memo"]["accuracy_none"] == 1.0
    assert main(["--predictions", str(path), "--json", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["changed"][0]["id"] == "q1"


def test_an_empty_file_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "p.jsonl").write_text("")
    with pytest.raises(SystemExit, match="no answers"):
        rescore(tmp_path / "p.jsonl")
