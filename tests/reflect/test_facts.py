from appliance.reflect.facts import atomic_facts, entities, facts_from_text, find_spans, statements
from appliance.reflect.families import DocInfo, supersessions
from appliance.reflect.validate import answer_supported, answer_type_problem, clean_question, question_problem


def test_spans_by_kind() -> None:
    spans = {(s.text, s.kind) for s in find_spans("Ottilie Brannstrand moved VX-31 totes to Kestrel Yard on 3 April 2025 for 52 EUR.")}
    assert ("Ottilie Brannstrand", "name") in spans
    assert ("VX-31", "code") in spans
    assert ("3 April 2025", "date") in spans
    assert ("52 EUR", "quantity") in spans


def test_spans_drop_a_sentence_start_and_keep_day_months_and_percentages() -> None:
    spans = {(s.text, s.kind) for s in find_spans("Contact the People Team by 31 March: 96% enrolled.", limit=6)}
    assert ("People Team", "name") in spans and ("31 March", "date") in spans and ("96%", "quantity") in spans
    assert not any(t.startswith("Contact") for t, _ in spans)
    assert ("Heron 2", "name") in {(s.text, s.kind) for s in find_spans("It runs in meeting room Heron 2 every week.")}


def test_every_sentence_of_a_statement_gives_its_values() -> None:
    """A line of two sentences is one statement; the first sentence's names and dates must not use up
    its facts, leaving the second's values (the reading, the duration) without a single pair."""
    text = ("During loading at Gannet Point on 3 February 2025, the FT-9 logger in a VX-31 tote recorded an excursion. "
            "The highest reading was 11.4 °C and the tote was above 8 °C for 52 minutes.")
    [st] = statements(text, "Incident report")
    values = {f.value for f in atomic_facts(st, "doc-1")}
    assert {"11.4 °C", "52 minutes"} <= values
    assert "3 February 2025" in values
    assert len(atomic_facts(st, "doc-1", spans_per_sentence=1)) == 2  # the cap is per sentence


def test_spans_keep_a_possessed_name_and_a_fiscal_year_whole() -> None:
    spans = {(s.text, s.kind) for s in find_spans("The desk is run by Fenna Dujardin's People Team until FY2025/26.")}
    assert {("Fenna Dujardin", "name"), ("People Team", "name"), ("FY2025/26", "code")} <= spans
    assert not {t for t, _ in spans} & {"People", "Team", "26"}


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
    assert per_diem.kv[0][1:3] == ("Per diem", "52 EUR per day")
    assert "Book through the travel desk run by Fenna Dujardin." in by_text
    assert "The claim window is 30 days. Late claims are refused by Finance Ops." in by_text  # a wrapped line is re-joined
    assert "Fenna Dujardin" in entities(facts)


def test_table_rows_give_attributes_of_their_key_and_unique_values_read_backwards() -> None:
    text = """| System | Owning team | Hosted at |
|---|---|---|
| Frostline | Cold Chain Engineering | Cloud |
| Routewise | Fleet Dispatch | Cloud |"""
    facts = [f for st in statements(text, "Systems inventory") for f in atomic_facts(st, "doc-1")]
    got = {(f.subject, f.attribute, f.value, f.reverse) for f in facts}
    assert ("Frostline", "Owning team", "Cold Chain Engineering", False) in got
    assert ("Cold Chain Engineering", "Owning team", "Frostline", True) in got  # entity surfacing
    assert ("Frostline", "Hosted at", "Cloud", False) in got
    assert not any(f.reverse and f.value == "Frostline" and f.subject == "Cloud" for f in facts)  # "Cloud" is not unique
    assert all(f.subject_type == "System" for f in facts)


def test_key_value_lines_under_an_entity_heading_belong_to_it_and_remarks_are_split_off() -> None:
    text = """# Our sites

## Kestrel Yard
- Site manager: Solveig Hartmannsdottir
- Opening hours: 05:00 to 22:00

## Rules
New escalation manager: Linnea Achterberg (Tobiah Reinholt has moved to the Routewise project).
DECISION: TERN will be migrated to Dunmore Data Centres on 18 October 2025."""
    facts = [f for st in statements(text, "Our sites") for f in atomic_facts(st, "doc-1")]
    manager = next(f for f in facts if f.attribute == "Site manager" and not f.reverse)
    assert (manager.subject, manager.value, manager.subject_is_title) == ("Kestrel Yard", "Solveig Hartmannsdottir", False)
    escalation = next(f for f in facts if f.attribute == "New escalation manager")
    assert escalation.value == "Linnea Achterberg" and escalation.subject_is_title  # a section heading is not a subject
    assert any(f.form == "span" and f.value == "Tobiah Reinholt" for f in facts)
    assert any(f.form == "span" and f.value == "Dunmore Data Centres" for f in facts)  # a shouted label starts a sentence


def test_pdf_style_plain_headings_and_faq_questions_become_context() -> None:
    text = "Maintenance\nAll trailers are serviced by Harrowgate Axle & Reefer Ltd.\n\nWhere is the printer?\nThe printer is PRN-HER-02."
    sts = statements(text, "Fleet register")
    assert [(s.heading, s.text) for s in sts] == [("Maintenance", "All trailers are serviced by Harrowgate Axle & Reefer Ltd."),
                                                  ("Where is the printer?", "The printer is PRN-HER-02.")]


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
    assert question_problem("Travel policy: what is the per diem?", "52 EUR", fact) == "not a question"
    assert question_problem("Travel policy: what is the per diem?", "52 EUR", fact, template=True) is None
    assert answer_type_problem("Which team owns the page?", "number") == "answer type mismatch"
    assert answer_type_problem("How many staff are there?", "name") == "answer type mismatch"
    assert answer_type_problem("What is the per diem?", "quantity") is None


def test_answer_support() -> None:
    src = "The per diem is 52 EUR per full travel day."
    assert answer_supported("52 EUR. The per diem is 52 EUR per full travel day.", src)
    assert not answer_supported("54 EUR per day", src)
    assert not answer_supported("The hotel allowance is generous", src)


def test_a_reordered_wording_is_another_training_wording_but_never_a_probe_of_it() -> None:
    from appliance.reflect.validate import dedup_key

    cloze, front = "The tote must be pre-chilled for how many hours?", "For how many hours must the tote be pre-chilled?"
    assert dedup_key(cloze, ordered=True) != dedup_key(front, ordered=True)  # two training wordings
    assert dedup_key(cloze) == dedup_key(front)  # as a probe, one is a trained question reworded
    assert dedup_key("What is the lead?", ordered=True) == dedup_key("what is the  LEAD ?", ordered=True)
