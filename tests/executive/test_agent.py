"""The query protocol: the question reaches the memory as it is, bridges are asked when the memory is
unsure, an unsure memory abstains, and the memory's value survives the executive's phrasing."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.errors import MemoError
from appliance.executive.agent import UNKNOWN_ANSWER, Executive, ExecutiveParams, clean_questions
from appliance.executive.trace import Trace
from appliance.llm.llamacpp import LlamaCppModel
from appliance.vault.store import Vault


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

    t = Trace("q?", "a", [SubAnswer("q?", "a", ["doc-0123456789ab"], 0.5, 0, 0.9)], ["doc-0123456789ab"], "mem-0001",
              "exec", "mem", 1.0, {"memory_s": 0.5}, {"memory_prompt": 3}, 0.9)
    assert Trace.from_dict(t.to_dict()) == t


@pytest.mark.parametrize("question", ["", "   ", "x" * 2001])
def test_bad_questions_are_refused_before_any_model_call(bundled_model: LlamaCppModel, question: str) -> None:
    ex = Executive(bundled_model, bundled_model, "test")
    with pytest.raises(MemoError, match="question"):
        ex.answer(question)


def test_a_sure_memory_answers_in_one_call_and_its_value_survives(bundled_model: LlamaCppModel) -> None:
    q = "What is the capital of France?"
    ex = Executive(bundled_model, bundled_model, "mem-test", ExecutiveParams(confident=0.0, abstain_below=0.0, answer_max_tokens=40))
    trace = ex.answer(q)
    [only] = trace.sub_answers
    assert only.question == q and only.hop == 0 and 0 < only.confidence <= 1
    assert only.answer in trace.answer or trace.answer == only.answer  # phrased, the memory's words kept verbatim
    assert trace.confidence == pytest.approx(only.confidence)
    assert trace.tokens["memory_prompt"] > 0 and trace.tokens["executive_prompt"] > 0  # the phrasing call is counted
    assert trace.seconds >= sum(trace.timings.values()) * 0.9


def test_an_unsure_memory_is_asked_the_bridge_and_then_the_outer_question(bundled_model: LlamaCppModel) -> None:
    q = "Who leads the team that owns Routewise?"
    params = ExecutiveParams(confident=1.01, abstain_below=0.0, phrase=False, memory_max_tokens=12)
    trace = Executive(bundled_model, bundled_model, "mem-test", params).answer(q)
    hops = [(s.hop, s.question) for s in trace.sub_answers]
    assert hops[:2] == [(0, q), (1, "Which team owns Routewise?")]
    bridge_answer = trace.sub_answers[1].answer
    assert hops[2] == (2, "Who leads " + bridge_answer.split(" (")[0].rstrip(".") + "?")
    assert trace.answer in {s.answer for s in trace.sub_answers}  # always one of the memory's own answers


def test_an_unsure_memory_abstains_instead_of_inventing(bundled_model: LlamaCppModel) -> None:
    q = "What is the phone extension of the People Team?"
    params = ExecutiveParams(confident=1.01, abstain_below=1.01, phrase=False, memory_max_tokens=12)
    trace = Executive(bundled_model, bundled_model, "mem-test", params).answer(q)
    assert trace.answer == UNKNOWN_ANSWER and trace.confidence == 0.0 and trace.sources == []
    assert trace.sub_answers[0].question == q


def test_no_hops_is_one_memory_call(bundled_model: LlamaCppModel) -> None:
    ex = Executive(bundled_model, bundled_model, "test", ExecutiveParams(max_hops=0, memory_max_tokens=24, phrase=False,
                                                                          abstain_below=0.0))
    trace = ex.answer("What is the capital of France?")
    assert [s.question for s in trace.sub_answers] == ["What is the capital of France?"]
    assert "Paris" in trace.sub_answers[0].answer and 0 < trace.sub_answers[0].confidence <= 1


def test_a_wrongly_cited_answer_is_given_with_the_document_that_states_it(bundled_model: LlamaCppModel, vault: Vault,
                                                                          tmp_path: Path) -> None:
    from appliance.corpus.documents import list_documents
    from appliance.corpus.ingest import ingest
    from appliance.executive.grounding import SourceCheck
    from appliance.memory.recall import Memory

    q = "In which city is the Eiffel Tower?"
    memory = Memory(bundled_model, version="mem-test")  # no source table: whatever it cites is not a document
    said = memory.ask([q], 24)[0].answer
    (tmp_path / "guide.md").write_text(f"# Guide\n\nEvery city guide repeats it: {said}\n")
    (tmp_path / "other.md").write_text(f"# Other\n\n{said}\n")  # the value, but not with a word of the question
    ingest(vault, [tmp_path / "guide.md", tmp_path / "other.md"])
    guide = next(d.id for d in list_documents(vault) if d.title == "Guide")

    def ask(uncited_below: float) -> Trace:
        params = ExecutiveParams(max_hops=0, phrase=False, memory_max_tokens=24, abstain_below=0.0, uncited_below=uncited_below)
        return Executive(bundled_model, memory, "mem-test", params, grounding=SourceCheck(vault)).answer(q)

    trace = ask(0.0)
    [only] = trace.sub_answers
    assert only.cited is False and only.grounded is True and only.sources == [guide]
    assert trace.answer == said and trace.sources == [guide]
    assert ask(1.01).answer == UNKNOWN_ANSWER  # an answer its own citation did not back needs more confidence
