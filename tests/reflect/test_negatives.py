"""Unanswerable questions read off the corpus's structure, never contradicting what it says."""

from appliance.reflect.facts import AtomicFact, atomic_facts, statements
from appliance.reflect.negatives import negative_questions, negatives, prose_entities

SYSTEMS = """# Systems inventory

| System | Owning team | Vendor code | Lead |
|---|---|---|---|
| Frostline | Cold Chain Engineering | V-1001 | Ottilie Brannstrand |
| Ledgerbay | Finance Ops | V-2002 | Cosima Varga-Lind |
| Routewise | Fleet Dispatch | V-3003 | Marek Tollefsrud |
| Hatchway | Platform Services | V-4004 | Isaura Penhallow |
| Sentra | Site Safety | V-5005 | Priya Oyelaran-Moss |
"""

SITES = """# Our sites

Deliveries to the Saint Brivael Clinic leave Kestrel Yard every Tuesday.

Meeting room Heron 2 is booked under reference HX-7.

The Copper Lantern has no vendor code yet.

This SOP is reviewed every year. Ring the Cold Chain Engineering desk for help.
"""


def _facts() -> list[AtomicFact]:
    out: list[AtomicFact] = []
    for doc_id, text, title in (("doc-a", SYSTEMS, "Systems inventory"), ("doc-b", SITES, "Our sites")):
        for st in statements(text, title):
            out += atomic_facts(st, doc_id)
    return out


def test_names_met_only_in_prose_are_found_and_fragments_are_not() -> None:
    facts = _facts()
    found = prose_entities(facts, {f.subject for f in facts if f.form == "kv"})
    assert {"Saint Brivael Clinic", "Heron 2", "Copper Lantern"} <= set(found)  # "The" at a sentence start is not kept
    assert found["Saint Brivael Clinic"] == "doc-b"
    assert not any(n.startswith(("This", "Ring")) for n in found)  # sentence fragments are not names
    assert "Frostline" not in found  # a tabled entity has its own negatives


def test_prose_negatives_ask_only_what_no_sentence_about_the_name_could_answer() -> None:
    prose = {(n.subject, n.attribute) for n in negatives(_facts(), per_entity=2) if n.reason == "prose"}
    assert ("Saint Brivael Clinic", "Vendor code") in prose  # no code in its sentence
    # its sentence names a place: a name-valued attribute (owning team, lead) could be hiding there
    assert not {("Saint Brivael Clinic", "Owning team"), ("Saint Brivael Clinic", "Lead")} & prose
    assert ("Heron 2", "Vendor code") not in prose  # its sentence carries a code (HX-7)
    assert ("Copper Lantern", "Vendor code") not in prose  # its sentence talks about its vendor code
    assert not any(s == "Frostline" for s, _ in prose)
    questions = [q for n in negatives(_facts(), per_entity=2) if n.subject == "Saint Brivael Clinic" for q, _ in negative_questions(n)]
    assert "What is the vendor code of Saint Brivael Clinic?" in questions


def test_tabled_entities_keep_their_other_kind_negatives_and_a_limit_holds() -> None:
    negs = negatives(_facts(), per_entity=2)
    said = {(f.subject, f.attribute) for f in _facts() if f.form == "kv"}
    assert negs and not {(n.subject, n.attribute) for n in negs} & said  # nothing the corpus gives
    assert len(negatives(_facts(), per_entity=2, limit=3)) == 3
