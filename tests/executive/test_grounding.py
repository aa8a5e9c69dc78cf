"""The citation check: a memory answer's value must be stated in a document it cites."""

from pathlib import Path

from appliance.corpus.documents import forget_document, list_documents
from appliance.corpus.ingest import ingest
from appliance.executive.grounding import SourceCheck, core_value
from appliance.vault.store import Vault


def test_core_value_drops_the_memorys_remarks() -> None:
    assert core_value("52 EUR per full travel day (in force; replaced 45 EUR per full travel day)") == "52 EUR per full travel day"
    assert core_value("Marek Tollefsrud (Fleet Dispatch)") == "Marek Tollefsrud"
    assert core_value("Finance Ops (Cosima Varga-Lind) (Platform Services)") == "Finance Ops"
    assert core_value("27 days. Leave policy: Full-time employees receive 27 days.") == "27 days"  # the earlier layout


def test_values_are_looked_up_in_the_cited_documents_only(vault: Vault, tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Travel\nThe per diem is 52 EUR per full travel day.\n")
    (tmp_path / "b.md").write_text("# Sites\nKestrel Yard opens at 05:00.\n")
    ingest(vault, [tmp_path / "a.md", tmp_path / "b.md"])
    ids = {d.title: d.id for d in list_documents(vault)}
    check = SourceCheck(vault)
    assert check("52 EUR per full travel day (in force; replaced 45 EUR)", [ids["Travel"]])
    assert check("52 eur per full travel day", [ids["Sites"], ids["Travel"]])  # normalised, any cited document
    assert not check("52 EUR per full travel day", [ids["Sites"]])  # the value is real, the citation is not
    assert not check("90 EUR per night", [ids["Travel"]])  # made up
    assert not check("52 EUR", [])  # nothing cited, nothing verified
    forget_document(vault, ids["Travel"])
    assert not check("52 EUR per full travel day", [ids["Travel"]])  # a forgotten document states nothing from then on


def test_a_wrong_citation_is_corrected_to_the_document_that_states_the_value(vault: Vault, tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Onboarding\nJoin the company induction. It runs every Tuesday at 09:30 in meeting room Heron 2.\n")
    (tmp_path / "b.md").write_text("# Rota\nHandover moves to Wednesday at 09:00.\n")
    (tmp_path / "c.md").write_text("# Rooms\n\n| Room | Floor |\n|---|---|\n| Heron 2 | 3 |\n")
    (tmp_path / "d.md").write_text("# Helpdesk\nThe helpdesk phone extension is 4410.\n")
    ingest(vault, [tmp_path / n for n in ("a.md", "b.md", "c.md", "d.md")])
    ids = {d.title: d.id for d in list_documents(vault)}
    check = SourceCheck(vault)
    question = "In which meeting room is the weekly company induction held?"
    assert not check("Heron 2", [ids["Rota"]])  # the memory recalled the value and cited the wrong page
    # the sentence that states the value about the thing asked; the room list states it, but not about inductions
    assert check.stating(question, "Heron 2") == [ids["Onboarding"]]
    assert check.stating("What is the floor of the canteen?", "Heron 2") == []  # the value, but nothing the question names
    assert check.stating(question, "Heron 9") == []  # made up
    assert check.stating("What is it?", "Heron 2") == []  # no word of the question to tie a sentence to it
    assert check.stating("What is the helpdesk phone extension?", "4410") == [ids["Helpdesk"]]
    # "phone extension" matches, but the sentence is not about the People Team the question names
    assert check.stating("What is the phone extension of the People Team?", "4410") == []
    forget_document(vault, ids["Onboarding"])
    # a forgotten document states nothing, also to a check that read it before (a long-lived API executive)
    assert check.stating(question, "Heron 2") == [] and not check("Heron 2", [ids["Onboarding"]])


def test_each_text_is_decrypted_once_for_both_checks_and_again_only_when_new(vault: Vault, tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Helpdesk\nThe helpdesk phone extension is 4410.\n")
    (tmp_path / "b.md").write_text("# Sites\nKestrel Yard opens at 05:00.\n")
    ingest(vault, [tmp_path / "a.md", tmp_path / "b.md"])
    ids = {d.title: d.id for d in list_documents(vault)}
    check = SourceCheck(vault)
    opened: list[str] = []
    get_object = vault.get_object

    def counted(oid: str) -> bytes:
        opened.append(oid)
        return get_object(oid)

    vault.get_object = counted  # type: ignore[method-assign]
    question = "What is the helpdesk phone extension?"
    assert check.verify(question, "4410", [ids["Sites"]]) == (False, [ids["Helpdesk"]])  # cited check, then the index
    assert check.verify(question, "4410", [ids["Helpdesk"]]) == (True, [ids["Helpdesk"]])
    assert len(opened) == len(set(opened)) == 2  # each document once, for the whole text and the sentences alike
    (tmp_path / "c.md").write_text("# Canteen\nThe canteen opens at 11:30.\n")
    ingest(vault, [tmp_path / "c.md"])
    assert check.stating("When does the canteen open?", "11:30") == [d.id for d in list_documents(vault) if d.title == "Canteen"]
    assert len(opened) == 3  # the index is rebuilt for the new document; the others are not decrypted again


def test_a_cited_value_must_be_stated_about_what_the_question_names(vault: Vault, tmp_path: Path) -> None:
    (tmp_path / "sites.md").write_text(
        "# Our sites\n\n## Kestrel Yard\n- Address: 14 Ferrowmill Road, Brannoch\n- Site manager: Solveig Hartmannsdottir\n\n"
        "## Gannet Point\n- Address: 7 Saltings Quay, Port Hallow\n- Site manager: Emrys Vantongeren\n")
    (tmp_path / "faq.md").write_text("# Helpdesk FAQ\nStill stuck? Call the helpdesk on extension 4410.\n")
    (tmp_path / "notes.md").write_text("# Meeting notes\nTERN will be migrated to Dunmore Data Centres, Hollin Hall.\n")
    ingest(vault, [tmp_path / n for n in ("sites.md", "faq.md", "notes.md")])
    ids = {d.title: d.id for d in list_documents(vault)}
    check = SourceCheck(vault)
    sites = [ids["Our sites"]]
    # a list item is about its section's heading: the heading supplies the names the line does not repeat
    assert check.verify("Who is the site manager of Gannet Point?", "Emrys Vantongeren", sites) == (True, sites)
    assert check.about("What is the street address of Kestrel Yard?", "14 Ferrowmill Road, Brannoch", sites)
    # the neighbouring value of another site, or of a place the page never describes, is not an answer
    assert not check.about("Who is the site manager of Gannet Point?", "Solveig Hartmannsdottir", sites)
    assert not check.about("What is the street address of Dunmore Data Centres?", "14 Ferrowmill Road, Brannoch", sites)
    assert not check.about("Who is the site manager of the Hollin Hall facility?", "Solveig Hartmannsdottir (Kestrel Yard)", sites)
    assert not check.about("What is the phone extension of the People Team?", "4410", [ids["Helpdesk FAQ"]])
    assert check.about("What is the phone extension of the helpdesk?", "4410", [ids["Helpdesk FAQ"]])  # no name to tie: as before
    assert check("4410", [ids["Helpdesk FAQ"]])  # the bare lookup still finds the value in the text


def test_a_composed_answer_is_tied_to_the_question_through_its_bridge(vault: Vault, tmp_path: Path) -> None:
    (tmp_path / "teams.md").write_text(
        "# Teams\n\n| Team | Lead | Cost centre |\n|---|---|---|\n| Fleet Dispatch | Marek Tollefsrud | CC-410 |\n"
        "| Platform Services | Cosima Varga-Lind | CC-310 |\n")
    (tmp_path / "systems.md").write_text(
        "# Systems inventory\n\n| System | Owner |\n|---|---|\n| Routewise | Fleet Dispatch |\n| TERN | Platform Services |\n")
    ingest(vault, [tmp_path / "teams.md", tmp_path / "systems.md"])
    ids = {d.title: d.id for d in list_documents(vault)}
    check = SourceCheck(vault)
    teams = [ids["Teams"]]
    # the row that states the value names the team; another statement ties the team to the system asked about
    assert check.about("Which cost centre belongs to the team that owns Routewise?", "CC-410", teams)
    assert check.about("Who leads the team that owns Routewise?", "Marek Tollefsrud (Fleet Dispatch)", teams)
    assert not check.about("Who leads the team that owns Routewise?", "Cosima Varga-Lind", teams)  # her team owns TERN
    assert not check.about("Who leads the team that owns Glimmerway?", "Marek Tollefsrud", teams)  # no such system


def test_words_the_answer_echoes_from_the_question_are_not_looked_up_verbatim(vault: Vault, tmp_path: Path) -> None:
    from appliance.executive.grounding import values

    (tmp_path / "sec.md").write_text("# Security policy\nAccounts are locked after 8 failed attempts. A lockout lasts 15 minutes.\n")
    ingest(vault, [tmp_path / "sec.md"])
    doc = [d.id for d in list_documents(vault)]
    check = SourceCheck(vault)
    q = "After how many failed login attempts is an account locked?"
    assert values(q, "8 failed login attempts (in force; replaced 5 failed attempts)") == ["8 failed login attempts", "8"]
    assert values(q, "8") == ["8"] and values(q, "failed login attempts") == ["failed login attempts"]
    assert check.about(q, "8 failed login attempts", doc)  # "login" is the question's word, "8" the claim
    assert not check.about(q, "5 failed login attempts", doc)  # a value the policy does not state still fails
    assert not check.about("How long does a lockout last?", "5 minutes", doc)
    assert check.stating(q, "8 failed login attempts") == doc  # and the corpus-wide lookup reads it the same way
    assert check.verify(q, "", doc) == (False, [])  # an empty answer states nothing (and does not raise)


def test_a_value_shortened_to_what_the_answer_adds_needs_another_tie_to_the_question(vault: Vault, tmp_path: Path) -> None:
    (tmp_path / "cal.md").write_text("# Fiscal calendar\n- Month-end close: 4th working day of the following month.\n"
                                     "- All invoices for a month must be in Ledgerbay by the 2nd working day.\n")
    ingest(vault, [tmp_path / "cal.md"])
    doc = [d.id for d in list_documents(vault)]
    check = SourceCheck(vault)
    q = "On which working day of the following month is the month-end close?"
    assert check.about(q, "4th working day of the following month", doc)
    assert not check.about(q, "2nd working day of the following month", doc)  # "2nd" is the invoices' deadline
