"""Bridge questions read off a question's relative clauses (no model)."""

import pytest

from appliance.executive.bridges import bridges, substitute


@pytest.mark.parametrize(("question", "phrase", "first", "outer"), [
    ("Where is the office of the person who approves hotel bookings?", "the person who approves hotel bookings",
     "Who approves hotel bookings?", "Where is the office of Ada Lind?"),
    ("Which budget code belongs to the unit that runs the clinic?", "the unit that runs the clinic",
     "Which unit runs the clinic?", "Which budget code belongs to Ada Lind?"),
    ("What is the fax number of the supplier that our scanners are bought from?",
     "the supplier that our scanners are bought from", "Our scanners are bought from which supplier?",
     "What is the fax number of Ada Lind?"),
    ("Who chairs the board in which the merger was approved?", "the board in which the merger was approved",
     "The merger was approved in which board?", "Who chairs Ada Lind?"),
    ("Who manages the ward where the outbreak started?", "the ward where the outbreak started",
     "The outbreak started at which ward?", "Who manages Ada Lind?"),
])
def test_a_relative_clause_becomes_a_question_and_the_outer_question_takes_its_answer(
        question: str, phrase: str, first: str, outer: str) -> None:
    [b] = bridges(question)
    assert (b.phrase, b.question) == (phrase, first)
    assert substitute(question, b.phrase, "Ada Lind (in force; replaced Bo Berg)") == outer


def test_no_clause_no_bridge() -> None:
    assert bridges("What is the hotel cap per night?") == []
    assert bridges("In which town is trailer TR-604 based?") == []
