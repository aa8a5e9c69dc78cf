"""Template wordings: generic, from a fact's own structure (no model involved)."""

from appliance.reflect.facts import atomic_facts, statements
from appliance.reflect.wordings import (cloze, composed_questions, fronted, kv_questions, looks_like_person, now_questions,
                                        span_questions)


def facts(text: str, title: str = "Doc"):  # noqa: ANN201
    return [f for st in statements(text, title) for f in atomic_facts(st, "doc-1")]


def test_attribute_of_an_entity_in_several_wordings() -> None:
    text = "| Team | Lead |\n|---|---|\n| Fleet Dispatch | Marek Tollefsrud |\n| Finance Ops | Cosima Varga-Lind |"
    lead = next(f for f in facts(text, "Org chart") if f.attribute == "Lead" and not f.reverse)
    qs = [q for q, _ in kv_questions(lead, plain=True)]
    assert "What is the lead of Fleet Dispatch?" in qs and "Who is the lead of Fleet Dispatch?" in qs
    assert "Fleet Dispatch: what is the lead?" in qs and "According to the Org chart, what is the lead of Fleet Dispatch?" in qs
    assert all("Marek" not in q for q in qs)
    reverse = next(f for f in facts(text, "Org chart") if f.reverse and f.value == "Fleet Dispatch")
    rq = [q for q, _ in kv_questions(reverse, plain=True)]
    assert "Which team has the lead Marek Tollefsrud?" in rq and "What is the team of Marek Tollefsrud?" in rq


def test_document_level_attributes_name_the_document_unless_plain() -> None:
    f = next(f for f in facts("## Allowances\n- Hotel cap: 125 EUR per night", "Travel Policy 2025"))
    assert f.subject_is_title
    plain = [q for q, _ in kv_questions(f, plain=True)]
    assert "What is the hotel cap?" in plain and "What is the hotel cap in the Travel Policy 2025?" in plain
    assert "What is the hotel cap?" not in [q for q, _ in kv_questions(f, plain=False)]
    # a superseded document is only asked about as itself
    old = [q for q, _ in kv_questions(f, plain=True, qualify="Travel Policy (2024)")]
    assert old and all("2024" in q for q in old)
    assert [q for q, _ in now_questions(f)] == ["What is the hotel cap now?", "What is the current hotel cap?"]


def test_cloze_replaces_the_span_with_a_question_phrase() -> None:
    got = {f.value: cloze(f) for f in facts(
        "Full-time employees receive 27 days of annual leave per year.\n\n"
        "Pre-chill the empty tote in cold room CR-3 for at least 4 hours.\n\n"
        "Fit a fresh FT-9 tag and start it. The tag reports to Frostline.\n\n"
        "The travel desk is run by Fenna Dujardin's People Team.")}
    assert got["27 days"] == "Full-time employees receive how many days of annual leave per year?"
    assert got["CR-3"] == "Pre-chill the empty tote in which cold room for at least 4 hours?"
    assert got["Frostline"] == "Fit a fresh FT-9 tag and start it. The tag reports to what?"  # the sentence it leans on comes along
    assert got["Fenna Dujardin"] == "The travel desk is run by whose People Team?"


def test_span_questions_carry_the_documents_context() -> None:
    f = next(f for f in facts("# Leave\n## Sick leave\nIf you are sick, notify your line manager by 08:00 on day one.", "LEAVE POLICY"))
    qs = [q for q, _ in span_questions(f, plain=True)]
    assert qs[0] == "Leave policy — Sick leave: If you are sick, notify your line manager by what time on day one?"
    assert "If you are sick, notify your line manager by what time on day one?" in qs
    # a sentence has only its own words: it is also asked as what its document says
    assert "According to the Leave policy, if you are sick, notify your line manager by what time on day one?" in qs
    old = [q for q, _ in span_questions(f, plain=True, qualify="Leave policy (2023)")]
    assert "According to the Leave policy (2023), if you are sick, notify your line manager by what time on day one?" in old
    assert all("2023" in q for q in old)


def test_composed_questions_describe_the_bridge() -> None:
    inventory = facts("| System | Owning team |\n|---|---|\n| Routewise | Fleet Dispatch |\n| Frostline | Cold Chain Engineering |")
    org = facts("| Team | Lead |\n|---|---|\n| Fleet Dispatch | Marek Tollefsrud |\n| Finance Ops | Cosima Varga-Lind |")
    first = next(f for f in inventory if f.subject == "Routewise")
    second = next(f for f in org if f.subject == "Fleet Dispatch" and not f.reverse)
    qs = [q for q, _ in composed_questions(first, second, "Fleet Dispatch")]
    assert "Who is the lead of the owning team of Routewise?" in qs
    centres = facts("| Cost centre | Team |\n|---|---|\n| CC-220 | Fleet Dispatch |\n| CC-410 | Cold Chain Engineering |")
    centre = next(f for f in centres if f.reverse and f.subject == "Fleet Dispatch")
    assert "What is the cost centre of the owning team of Routewise?" in [q for q, _ in composed_questions(first, centre, "Fleet Dispatch")]
    sentence = next(f for f in facts("All trailers are serviced by Harrowgate Axle & Reefer Ltd.") if f.value.startswith("Harrowgate"))
    vendors = facts("| Vendor | Vendor code |\n|---|---|\n| Harrowgate Axle & Reefer Ltd | V-2291 |\n| Polarmark | V-1187 |")
    code = next(f for f in vendors if f.attribute == "Vendor code" and not f.reverse and f.subject.startswith("Harrowgate"))
    assert [q for q, _ in composed_questions(sentence, code, sentence.value)] == [
        "All trailers are serviced by the vendor. What is the vendor code of that vendor?"]


def test_people_are_told_from_organisations() -> None:
    assert looks_like_person("Marek Tollefsrud") and looks_like_person("Cosima Varga-Lind")
    assert not looks_like_person("Fleet Dispatch") and not looks_like_person("Harrowgate Axle & Reefer Ltd")


def test_fronted_inverts_the_auxiliary_of_a_one_clause_sentence() -> None:
    got = {f.value: fronted(f) for f in facts(
        "An empty tote must be pre-chilled in cold room CR-3 for at least 4 hours.\n\n"
        "The maximum transit time of a tote is 36 hours.\n\n"
        "Unused leave can be carried over and must be used by 31 March.\n\n"
        "If you are sick, notify your line manager by 08:00.\n\n"
        "The helpdesk is staffed Monday to Friday from 07:30 to 17:00.")}
    # a preposition before the value moves to the front with it
    assert got["CR-3"] == "In which cold room must an empty tote be pre-chilled for at least 4 hours?"
    assert got["36 hours"] == "How many hours is the maximum transit time of a tote?"
    assert got["31 March"] is None  # two auxiliaries: which clause to invert is not clear
    assert got["08:00"] is None  # a subordinate clause first
    assert got["07:30"] == "From what time is the helpdesk staffed Monday to Friday to 17:00?"
    f = next(f for f in facts("The tote must be pre-chilled for 4 hours.", "Shipping checklist") if f.value == "4 hours")
    assert ("For how many hours must the tote be pre-chilled?", "fronted") in span_questions(f, plain=True)


def test_participle_attributes_are_asked_as_participles() -> None:
    [f] = [f for f in facts("| System | Hosted at |\n|---|---|\n| Ledgerbay | Kestrel Yard server room |") if not f.reverse]
    qs = [q for q, _ in kv_questions(f, plain=True)]
    assert "Ledgerbay is hosted at what?" in qs and "What is Ledgerbay hosted at?" in qs
    [g] = [g for g in facts("| Team | Lead |\n|---|---|\n| Fleet Dispatch | Marek Tollefsrud |") if not g.reverse]
    assert not any(n.startswith("verb") for _, n in kv_questions(g, plain=True))  # a noun keeps the noun forms


def test_a_header_that_is_a_question_is_asked_as_it_stands() -> None:
    table = "| Vendor | What they supply |\n|---|---|\n| Oxbow Courier Services | Overflow courier capacity |"
    [f] = [f for f in facts(table, "Vendor list") if not f.reverse]
    assert kv_questions(f, plain=True) == [("Oxbow Courier Services: what they supply?", "wh-header"),
                                           ("What they supply — Oxbow Courier Services?", "wh-header-dash"),
                                           ("What does Oxbow Courier Services supply?", "wh-clause")]
    [rev] = [r for r in facts(table, "Vendor list") if r.reverse]
    assert ("Which vendor supplies Overflow courier capacity?", "wh-clause-reverse") in kv_questions(rev, plain=True)
    assert ("Overflow courier capacity: which vendor?", "wh-header-reverse-colon") in kv_questions(rev, plain=True)
    # a bare "Who" / "How" is still asked as the table shows it: every fact keeps a trained wording
    who, back = facts("| Who | How |\n|---|---|\n| Helpdesk | Extension 4410 |")
    assert kv_questions(who, plain=True) == [("Helpdesk: how?", "wh-header"), ("How — Helpdesk?", "wh-header-dash")]
    assert ("Extension 4410: who?", "wh-header-reverse-colon") in kv_questions(back, plain=True)


def test_a_question_is_tied_to_a_document_by_its_title_as_the_document_has_it() -> None:
    from appliance.reflect.wordings import _strip_title, document_prefix, in_document

    for title in ("LEAVE POLICY V2 - HQ Wiki", "IT FAQ", "Travel & Expenses Policy (2024)", "The Sites"):
        assert _strip_title(_strip_title(title)) == _strip_title(title)  # callers may pass a stripped title again
    assert in_document("LEAVE POLICY V2 - HQ Wiki", "How many days?") == "In the Leave policy V2, how many days?"
    assert in_document("Leave policy V2", "How many days?") == "In the Leave policy V2, how many days?"
    assert document_prefix("The Sites") == "In The Sites, "


def test_cloze_asks_in_the_sentence_where_the_value_is_its_own_span() -> None:
    """"10" is a fact of the third sentence; the first holds it only inside "10 working days"."""
    text = ("Leave requests are submitted in Hatchway at least 10 working days before the first day of leave. "
            "Your line manager approves the request in Hatchway. Requests for more than 10 consecutive days need "
            "approval from your team lead as well.")
    ten = next(f for f in facts(text, "Leave policy") if f.value == "10")
    assert cloze(ten) == "Requests for more than what number consecutive days need approval from your team lead as well?"
    days = next(f for f in facts(text, "Leave policy") if f.value == "10 working days")
    assert cloze(days).startswith("Leave requests are submitted in Hatchway at least how many working days")


def test_an_instruction_is_asked_question_phrase_first() -> None:
    from appliance.reflect.wordings import imperative

    got = {f.value: imperative(f) for f in facts(
        "Pre-chill the empty tote in cold room CR-3 for at least 4 hours.\n\n"
        "Set up the Keyhaven authenticator app with the helpdesk.\n\n"
        "Install the Gatepost VPN client, version 3.2 or newer.\n\n"
        "Move the stock to CR-2 if the excursion lasts longer than 15 minutes.\n\n"
        "Collect your badge from reception. Badges are printed from Sentra.", "SOP")}
    assert got["4 hours"] == "For at least how many hours should you pre-chill the empty tote in cold room CR-3?"
    assert got["CR-3"] == "In which cold room should you pre-chill the empty tote for at least 4 hours?"
    assert got["Keyhaven"] == "Which authenticator app should you set up with the helpdesk?"
    assert got["Gatepost VPN"] == "Which client should you install?"  # the next step after the comma is left out
    assert got["3.2"] is None  # an aside after a comma is not the instruction's object
    assert got["CR-2"] == "To what should you move the stock if the excursion lasts longer than 15 minutes?"
    assert got["15 minutes"] is None  # inside the condition
    assert got["Sentra"] is None  # its own sentence is not an instruction


def test_a_statement_is_not_read_as_an_instruction() -> None:
    from appliance.reflect.wordings import imperative

    for f in facts("The helpdesk raises a ticket in Beacon.\n\nAll totes go to Little Osier.\n\nDo not scan the tote into Routewise."):
        assert imperative(f) is None, f.value


def test_a_statement_without_an_auxiliary_is_asked_with_does() -> None:
    from appliance.reflect.wordings import do_support

    got = {f.value: do_support(f) for f in facts(
        "The tag reports to Frostline.\n\n"
        "Multi-factor authentication uses the Keyhaven authenticator app.\n\n"
        "FY2025/26 runs from 1 April 2025 to 31 March 2026.\n\n"
        "Empty totes come back via Little Osier for cleaning.\n\n"
        "The VX-31 keeps medicines between 2 °C and 8 °C.\n\n"
        "This rota supersedes the Q4 2024 on-call rota.", "Doc")}
    assert got["Frostline"] == "To what does the tag report?"
    assert got["Keyhaven"] == "Which authenticator app does multi-factor authentication use?"
    assert got["1 April 2025"] == "From what date does FY2025/26 run to 31 March 2026?"
    assert "do empty totes come back for cleaning?" in got["Little Osier"]  # "totes" is not the verb, "come" is
    assert got["2 °C"] is None and got["8 °C"] is None  # a coordination is not asked half
    assert got.get("Q4") is None  # a part of a longer name


def test_a_plural_subject_is_asked_with_do() -> None:
    from appliance.reflect.wordings import do_support

    got = {f.value: do_support(f) for f in facts(
        "Full-time employees receive 27 days of annual leave per calendar year, plus public holidays.\n\n"
        "Passwords expire after 90 days.\n\n"
        "Claims reach the approver within 5 working days of submission.\n\n"
        "Totes older than 5 years are scrapped.\n\n"
        "Drivers must complete 12 hours of training.\n\n"
        "They return the keys to Kestrel Yard.", "Doc")}
    # the "of" phrase goes to the front with what is asked; the rest of the clause stays in place
    assert got["27 days"] == "How many days of annual leave do full-time employees receive per calendar year?"
    assert got["90 days"] == "After how many days do passwords expire?"
    assert got["5 working days"] == "Within how many working days of submission do claims reach the approver?"
    assert got["5 years"] is None  # "older" is no verb
    assert got["12 hours"] is None  # an auxiliary: the fronted wording's business
    assert got["Kestrel Yard"] is None  # a pronoun subject says nothing about what is asked


def test_a_compound_sentence_is_asked_one_clause_at_a_time() -> None:
    """Each clause with a subject of its own is a fact of its own: its question carries no other fact's value."""
    text = ("The highest reading was 11.4 °C and the tote was above 8 °C for 52 minutes.\n\n"
            "Products were quarantined and the customer was informed by Fenna Dujardin.\n\n"
            "A shuttle bus leaves Gannet Point at 17:15 and Little Osier at 17:30.\n\n"
            "Unused leave can be carried over and must be used by 31 March.")
    got = {f.value: f for f in facts(text, "Incident report")}
    assert cloze(got["11.4 °C"]) == "The highest reading was what temperature?"
    assert fronted(got["11.4 °C"]) == "What temperature was the highest reading?"
    assert cloze(got["52 minutes"]) == "The tote was above 8 °C for how many minutes?"
    assert fronted(got["52 minutes"]) == "For how many minutes was the tote above 8 °C?"
    assert cloze(got["Fenna Dujardin"]) == "The customer was informed by whom?"
    # not two clauses: a coordinated object, and one subject with two verbs, stay whole
    assert cloze(got["Little Osier"]).startswith("A shuttle bus leaves Gannet Point at 17:15 and")
    assert cloze(got["31 March"]) == "Unused leave can be carried over and must be used by what date?"


def test_a_value_inside_a_subordinate_clause_is_not_fronted() -> None:
    [f] = [f for f in facts("The claim window was shortened so that Finance Ops can close each month on time.")
           if f.value == "Finance Ops"]
    assert fronted(f) is None  # "What was the claim window shortened so that can close …?" asks nothing
