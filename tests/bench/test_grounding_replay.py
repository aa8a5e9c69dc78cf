"""The grounding replay: a bench run's passed answers checked again by today's corpus check."""

import json
from pathlib import Path

from bench.grounding_replay import replay


def _row(qid: str, kind: str, question: str, answer: str, correct: bool) -> dict:
    sub = {"question": question, "answer": answer, "sources": [], "hop": 0, "confidence": 0.9, "grounded": True, "cited": True}
    return {"id": qid, "system": "memo", "kind": kind, "question": question, "prediction": answer, "correct": correct,
            "sub_questions": [sub]}


def test_an_answer_not_stated_about_what_the_question_names_becomes_an_abstention(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "faq.md").write_text("# Helpdesk FAQ\nStill stuck? Call the helpdesk on extension 4410.\n")
    rows = [_row("a", "single", "What is the phone extension of the helpdesk?", "4410", True),
            _row("b", "none", "What is the phone extension of the People Team?", "4410", False),
            {"id": "b", "system": "bm25", "kind": "none", "question": "x?", "prediction": "4410", "correct": False,
             "sub_questions": []}]
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = replay(predictions, corpus)
    assert result["kinds"] == {"none": {"questions": 1, "before": 0, "after": 1},
                               "single": {"questions": 1, "before": 1, "after": 1}}  # bm25's row is not memo's
    assert [c["id"] for c in result["changed"]] == ["b"]
