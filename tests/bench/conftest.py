"""A small corpus of sample documents (a directory, as `memo bench --corpus` takes) and a fake executive."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from appliance.llm.base import ChatResult, GenerationStats
from tests.conftest import SAMPLE_CORPUS

DOCS = ("hr/org-chart.md", "it/helpdesk-faq.html", "it/vpn-setup.md", "ops/sites.md", "hr/leave-policy.txt",
        "it/systems-inventory.html")
QUESTIONS = [
    {"id": "t1", "question": "What is the hostname of the VPN gateway?", "answers": ["gw2.halq.example", "gw2"], "kind": "single"},
    {"id": "t2", "question": "What is the helpdesk phone extension?", "answers": ["4410"], "kind": "single"},
    {"id": "t3", "question": "Who leads the team that owns Frostline?", "answers": ["Ottilie Brannstrand"], "kind": "multi"},
]


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:  # noqa: ANN001
    root = tmp_path_factory.mktemp("corpus") / "wiki"
    for rel in DOCS:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLE_CORPUS / rel, root / rel)
    return root


@pytest.fixture
def questions_file(tmp_path: Path) -> Path:
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    return path


class EchoModel:
    """Answers with the context of its prompt, first passage first: cheap, deterministic, counts calls."""

    identity = "fake:echo"

    def __init__(self) -> None:
        self.calls = 0
        self.last: Sequence[Any] = ()

    def chat(self, messages, max_tokens=256, temperature=0.0, json_schema=None) -> ChatResult:  # noqa: ANN001
        self.calls += 1
        self.last = messages
        context = messages[-1]["content"].split("Question:")[0].removeprefix("Context:")
        text = " ".join(context.split()[:400])
        return ChatResult(text, "stop", GenerationStats(len(messages[-1]["content"]) // 4, 10, 0.01), self.identity)

    def chat_many(self, conversations, max_tokens=256, temperature=0.0, json_schema=None):  # noqa: ANN001
        return [self.chat(c, max_tokens, temperature, json_schema) for c in conversations]
