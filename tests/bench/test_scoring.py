"""The answer-matching rule of `memo bench` (see appliance.bench.scoring)."""

import pytest

from appliance.bench.scoring import first_sentence, matches, normalise, word_count


@pytest.mark.parametrize("text, expected", [
    ("11.4 °C", "11.4 c"),
    ("1,500 EUR", "1500 eur"),
    ("12,345,678", "12345678"),
    ("V-3050", "v 3050"),
    ("08:00", "08:00"),
    ("gw2.halq.example", "gw2 halq example"),
    ("  The   CFO. ", "the cfo"),
    ("Ｈｅｄｄａ", "hedda"),  # NFKC folds full-width letters
    ("", ""),
])
def test_normalise(text: str, expected: str) -> None:
    assert normalise(text) == expected


def test_aliases_any_one_matches() -> None:
    gold = ["Polarmark R5", "R5"]
    assert matches("Trailer TR-611 has a Polarmark R5 unit.", gold)
    assert matches("It is the R5.", gold)
    assert not matches("It has a Polarmark R7.", gold)


def test_case_punctuation_whitespace_do_not_matter() -> None:
    assert matches("the helpdesk is reached on EXTENSION\n4410!", ["extension 4410"])
    assert matches("Hedda Lindqvist (CFO)", ["Hedda Lindqvist"])
    assert matches("Pager: 0800–4492", ["0800-4492"])  # en dash vs hyphen: both are punctuation


@pytest.mark.parametrize("prediction", ["20,000 km", "20000 km", "every 20,000 km or 6 months", "20 000 km"])
def test_thousands_separators(prediction: str) -> None:
    # "20 000" (plain space) is two numbers, not one: only commas and no-break spaces are separators
    assert matches(prediction, ["20,000 km", "20000"]) is (prediction != "20 000 km")


def test_whole_words_only() -> None:
    assert matches("You may carry over 5 days.", ["5"])
    assert not matches("You may carry over 15 days.", ["5"])
    assert not matches("5.5 days", ["5"])
    assert not matches("Heron 22", ["Heron 2"])
    assert matches("0.34 EUR per km", ["0.34"])
    assert not matches("0.345 EUR", ["0.34"])


@pytest.mark.parametrize("prediction", ["", "   ", "I don't know.", "The memory does not know.", "twenty-seven"])
def test_negatives(prediction: str) -> None:
    assert not matches(prediction, ["27 days", "27"])


def test_empty_gold_never_matches() -> None:
    assert not matches("anything", ["", "  ", "--"])


def test_word_count() -> None:
    assert word_count("The CFO, Hedda Lindqvist.") == 4
    assert word_count("") == 0


def test_first_sentence() -> None:
    assert first_sentence("It costs 0.34 EUR per km. Before 2025 it was 0.31 EUR.") == "It costs 0.34 EUR per km."
    assert first_sentence("\n\nBeacon\nQuestion: what else?") == "Beacon"
    assert first_sentence("") == ""
    long = "The helpdesk is open from 07:30. Question: what is the extension? Answer: 4410"
    assert matches(long, ["4410"]) and not matches(first_sentence(long), ["4410"])


def test_a_bare_number_alias_does_not_credit_another_unit() -> None:
    gold = ["52 minutes", "52", "52 min"]
    assert matches("The tote was above 8 °C for 52 minutes.", gold)
    assert matches("52", gold) and matches("52 min", gold) and matches("for 52 of them", gold)
    assert not matches("52 hours", gold)  # a wrong quantity, not the gold in other words
    assert matches("52 hours, then 52 minutes", gold)  # any right occurrence counts, as containment does
    assert not matches("20,000 kg", ["20,000 km", "20000"])
    assert matches("You may carry over 5 days.", ["5"])  # no unit in the gold: nothing to tell apart
