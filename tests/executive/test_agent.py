"""The query protocol: the original question always reaches the memory, plans are checked, traces are complete."""

from __future__ import annotations

import pytest

from appliance.errors import MemoError
from appliance.executive.agent import Executive, ExecutiveParams, clean_questions
from appliance.executive.trace import Trace
from appliance.llm.llamacpp import LlamaCppModel


def test_clean_questions_keeps_new_well_formed_questions_only() -> None:
    asked = ["Who approves travel over 2,000 EUR?"]
    proposed = [
        "who approves  travel over 2,000 EUR?",  # the same question again
        "Who approves travel over 2,000 EUR",  # a statement, not a question
        "The manager of the person who approves travel?",  # fine
        "Which office is Marek based in?",
        "Which office is Marek based at?",  # a rephrasing of the one before
        42,  # not text
        "Why?",  # too short to stand alone
        "Where does the finance team sit?",  # over the limit
    ]
    kept = clean_questions(proposed, asked, limit=2)
    assert kept == ["The manager of the person who approves travel?", "Which office is Marek based in?"]


def test_trace_round_trips_through_json_shape() -> None:
    from appliance.executive.trace import SubAnswer

    t = Trace("q?", "a", [SubAnswer("q?", "a", ["doc-0123456789ab"], 0.5, 0)], ["doc-0123456789ab"], "mem-0001",
              "exec", "mem", 1.0, {"memory_s": 0.5}, {"memory_prompt": 3})
    assert Trace.from_dict(t.to_dict()) == t


@pytest.mark.parametrize("question", ["", "   ", "x" * 2001])
def test_bad_questions_are_refused_before_any_model_call(bundled_model: LlamaCppModel, question: str) -> None:
    ex = Executive(bundled_model, bundled_model, "test")
    with pytest.raises(MemoError, match="question"):
        ex.answer(question)


def test_answer_asks_the_original_question_first_and_accounts_for_everything(bundled_model: LlamaCppModel) -> None:
    ex = Executive(bundled_model, bundled_model, "test", ExecutiveParams(max_sub_questions=2, max_hops=1,
                                                                          memory_max_tokens=32, answer_max_tokens=32))
    question = "Who leads the team that runs the helpdesk, and where are they based?"
    trace = ex.answer(question)
    assert trace.sub_answers[0].question == question and trace.sub_answers[0].hop == 0
    assert all(s.answer for s in trace.sub_answers)
    assert len(trace.sub_answers) <= 1 + 2 + 1  # original + plan + one follow-up
    assert all(s.hop <= 1 for s in trace.sub_answers)
    assert trace.answer.strip()
    assert set(trace.timings) == {"decompose_s", "memory_s", "follow_up_s", "synthesise_s"}
    # every call is counted: one memory batch at least, and decomposition + synthesis on the executive
    assert trace.tokens["memory_prompt"] > 0 and trace.tokens["memory_completion"] > 0
    assert trace.tokens["executive_prompt"] > trace.tokens["memory_prompt"]
    assert trace.executive == bundled_model.identity and trace.memory_version == "test"
    assert trace.seconds >= sum(trace.timings.values()) * 0.9


def test_no_decomposition_and_no_hops_is_one_memory_call(bundled_model: LlamaCppModel) -> None:
    ex = Executive(bundled_model, bundled_model, "test", ExecutiveParams(max_sub_questions=0, max_hops=0,
                                                                          memory_max_tokens=24, answer_max_tokens=24))
    trace = ex.answer("What is the capital of France?")
    assert [s.question for s in trace.sub_answers] == ["What is the capital of France?"]
    assert "Paris" in trace.sub_answers[0].answer
