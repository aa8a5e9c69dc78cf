from appliance.reflect.facts import entities, facts_from_text, find_spans
from appliance.reflect.families import DocInfo, supersessions
from appliance.reflect.validate import answer_supported, answer_type_problem, clean_question, question_problem


def test_spans_by_kind() -> None:
    spans = {(s.text, s.kind) for s in find_spans("Ottilie Brannstrand moved VX-31 totes to Kestrel Yard on 3 April 2025 for 52 EUR.")}
    assert ("Ottilie Brannstrand", "name") in spans
    assert ("VX-31", "code") in spans
    assert ("3 April 2025", "date") in spans
    assert ("52 EUR", "quantity") in spans


def test_facts_keep_context_tables_and_front_matter() -> None:
    text = """---
owner: People Team
effective: 1 March 2025
---

# Travel policy

## Allowances

| Item | Rate |
|------|------|
| Per diem | 52 EUR per day |
| Hotel cap | 125 EUR per night |

- Book through the travel desk run by Fenna Dujardin.

The claim window is 30 days. Late claims
are refused by Finance Ops."""
    facts = facts_from_text(text, "Travel policy 2025")
    by_text = {f.text: f for f in facts}
    assert "owner: People Team" in by_text
    per_diem = by_text["Per diem: 52 EUR per day"]
    assert per_diem.context == "Travel policy 2025 — Allowances"
    assert [s.text for s in per_diem.spans][0] == "52 EUR per day"
    assert "Book through the travel desk run by Fenna Dujardin." in by_text
    assert "Late claims are refused by Finance Ops." in by_text  # a wrapped line is re-joined
    assert "Fenna Dujardin" in entities(facts)


def test_supersession_by_year_version_and_statement() -> None:
    docs = [
        DocInfo("a", "Travel Policy (2024)", "Per diem 45 EUR.", ""),
        DocInfo("b", "Travel Policy 2025", "This policy supersedes the Travel Policy (2024).", ""),
        DocInfo("c", "Password Policy v2", "Minimum 14 characters.", ""),
        DocInfo("d", "Password Policy v1", "Minimum 10 characters.", ""),
        DocInfo("e", "Shipping checklist", "Pack totes.", ""),
        DocInfo("f", "Shipping checklist (copy)", "Pack totes carefully.", ""),
        DocInfo("g", "Canteen menu", "Soup.", ""),
    ]
    got = {(s.old_id, s.new_id) for s in supersessions(docs)}
    assert got == {("a", "b"), ("d", "c")}


def test_question_validation() -> None:
    fact = "Travel policy: Per diem: 52 EUR per day"
    assert clean_question('Question: "What is the per diem?"\nMore text') == "What is the per diem?"
    assert question_problem("What is the per diem?", "52 EUR", fact) is None
    assert question_problem("Is the per diem 52 EUR?", "52 EUR", fact) == "answer in question"
    assert question_problem("What is the answer to this question?", "52 EUR", fact) == "meta question"
    assert question_problem("Per diem rules", "52 EUR", fact) == "not a question"
    assert question_problem("Who won the football cup?", "52 EUR", fact) == "not grounded in source"
    assert question_problem("What is the per diem?", "52 EUR", fact, original="What is the per diem?") == "paraphrase identical"
    assert answer_type_problem("Which team owns the page?", "number") == "answer type mismatch"
    assert answer_type_problem("How many staff are there?", "name") == "answer type mismatch"
    assert answer_type_problem("What is the per diem?", "quantity") is None


def test_answer_support() -> None:
    src = "The per diem is 52 EUR per full travel day."
    assert answer_supported("52 EUR. The per diem is 52 EUR per full travel day.", src)
    assert not answer_supported("54 EUR per day", src)
    assert not answer_supported("The hotel allowance is generous", src)
