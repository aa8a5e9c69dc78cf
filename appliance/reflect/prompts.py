"""Prompts for the generator. Few-shot and narrow, because the default generator is tiny.

Each prompt is a chat whose long, shared part (system + examples) comes first, so llama.cpp reuses
its cached prefix across calls and spends its time on generating, not on re-reading.
``PROMPT_VERSION`` is part of every stored reflection unit: changing a prompt re-generates.
"""

from __future__ import annotations

from appliance.llm.base import Message

PROMPT_VERSION = "2026-12-02.1"

_QUESTION_SYSTEM = (
    "You write one short quiz question about a fact. The given answer must answer the question. "
    "Never put the answer in the question. Reply with the question only."
)
_QUESTION_SHOTS = [
    ("Fact: Kestrel Yard opens at 06:00 on weekdays.", "06:00", "When does Kestrel Yard open on weekdays?"),
    ("Fact: The travel desk is run by Fenna Dujardin's People Team.", "Fenna Dujardin", "Whose team runs the travel desk?"),
    ("Fact: System: Ledgerbay; Owning team: Finance Ops; Hosted at: Cloud", "Finance Ops", "Which team owns Ledgerbay?"),
]

_PARAPHRASE_SYSTEM = "Rewrite the question with different words. Keep every name and its meaning. Reply with the new question only."
_PARAPHRASE_SHOTS = [
    ("When does Kestrel Yard open on weekdays?", "At what time does Kestrel Yard open on a weekday?"),
    ("How often are the vans serviced?", "What is the service interval for the vans?"),
]

_RELATION_SYSTEM = (
    "You write one question that needs BOTH facts to answer. The given answer must answer it. "
    "Never put the answer in the question. Reply with the question only."
)
_RELATION_SHOTS = [
    (
        "Fact 1: Team: Fleet Dispatch; Lead: Marek Tollefsrud\nFact 2: System: Routewise; Owning team: Fleet Dispatch",
        "Marek Tollefsrud",
        "Who leads the team that owns Routewise?",
    ),
]


def _shots(system: str, shots: list[tuple[str, ...]], fmt) -> list[Message]:  # noqa: ANN001
    messages: list[Message] = [{"role": "system", "content": system}]
    for shot in shots:
        user, answer = fmt(*shot)
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return messages


def question_prompt(fact: str, answer: str) -> list[Message]:
    fmt = lambda f, a, q: (f"{f}\nAnswer: {a}", q)  # noqa: E731
    return _shots(_QUESTION_SYSTEM, _QUESTION_SHOTS, fmt) + [{"role": "user", "content": f"Fact: {fact}\nAnswer: {answer}"}]


def paraphrase_prompt(question: str) -> list[Message]:
    fmt = lambda q, p: (q, p)  # noqa: E731
    return _shots(_PARAPHRASE_SYSTEM, _PARAPHRASE_SHOTS, fmt) + [{"role": "user", "content": question}]


def relation_prompt(fact1: str, fact2: str, answer: str) -> list[Message]:
    fmt = lambda f, a, q: (f"{f}\nAnswer: {a}", q)  # noqa: E731
    return _shots(_RELATION_SYSTEM, _RELATION_SHOTS, fmt) + [
        {"role": "user", "content": f"Fact 1: {fact1}\nFact 2: {fact2}\nAnswer: {answer}"}
    ]
