"""The Ask tab with a real model: the bundled GGUF plays executive and memory (as in the API tests),
injected through the console's executive factory; the window keeps running its event loop while
the question is answered, and the question is audited like any other."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QTimer

from appliance.executive.agent import Executive, ExecutiveParams
from appliance.llm.llamacpp import LlamaCppModel
from appliance.llm.registry import ModelRegistry
from appliance.vault.store import Vault
from tests.gui.conftest import wait_idle
from tests.llm.conftest import TEST_OPTIONS

# short generations: the console's plumbing is under test, not a 135M model's answers
PARAMS = ExecutiveParams(max_sub_questions=1, max_hops=0, memory_max_tokens=16, plan_max_tokens=40, answer_max_tokens=16)

pytestmark = pytest.mark.slow


@pytest.fixture
def model(vault: Vault, bundled_gguf: Path) -> Iterator[LlamaCppModel]:
    m = LlamaCppModel.load(ModelRegistry(vault), options=TEST_OPTIONS)
    yield m
    m.close()


def test_ask_answers_with_trace_off_the_gui_thread_and_is_audited(qtbot, make_window, vault, model) -> None:  # noqa: ANN001
    opened: list[tuple[str, Any]] = []

    def factory(_vault: Vault, endpoint: str, version: str | None, _params: ExecutiveParams) -> Executive:
        opened.append((endpoint, version))
        return Executive(model, model, "test", PARAMS)

    w = make_window(actor="dana", executive_factory=factory)
    tab = w.ask
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start()
    tab.question.setText("What is the capital of France?")
    started = time.monotonic()
    tab.ask_button.click()
    assert not tab.ask_button.isEnabled() and tab.busy.isVisibleTo(tab)  # the click returned at once: work is elsewhere
    assert time.monotonic() - started < 0.5
    qtbot.waitUntil(lambda: tab.last_trace is not None or tab.error.text() != "", timeout=240000)
    timer.stop()
    assert tab.error.text() == ""
    trace = tab.last_trace
    elapsed = ticks[-1] - started
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    # the event loop kept turning for the whole answer (a blocked GUI thread would leave one long gap)
    assert len(ticks) > 10 and max(gaps) < max(1.0, elapsed / 3), (len(ticks), max(gaps), elapsed)
    assert opened == [("local", None)]
    assert tab.answer.text() == trace.answer and trace.answer
    assert tab.trace.rowCount() == len(trace.sub_answers) >= 1
    assert tab.trace.item(0, 1).text() == trace.sub_answers[0].question
    assert "answered by executive" in tab.footer.text() and trace.executive in tab.footer.text()
    wait_idle(qtbot, w)
    [entry] = [e for e in vault.audit.entries() if e.action == "qa.ask"]
    assert entry.actor == "dana" and entry.details["channel"] == "gui" and entry.details["question"] == trace.question

    # a second question reuses the opened executive
    tab.question.setText("Who leads Fleet Dispatch?")
    tab.ask_button.click()
    qtbot.waitUntil(lambda: tab.last_trace is not trace, timeout=240000)
    assert len(opened) == 1
    wait_idle(qtbot, w)


def test_cancel_gives_control_back_at_once_and_the_next_question_waits_for_the_model(qtbot, make_window, model) -> None:  # noqa: ANN001
    w = make_window(executive_factory=lambda *_a: Executive(model, model, "test", PARAMS))
    tab = w.ask
    tab.question.setText("What is the capital of France?")
    tab.ask_button.click()
    task = tab.busy.task
    assert task is not None
    with qtbot.waitSignal(task.signals.cancelled, timeout=5000):
        tab.busy.cancel_button.click()
    assert tab.ask_button.isEnabled() and not tab.busy.isVisibleTo(tab)
    # asking again at once: the new question waits for the model the cancelled one still holds
    tab.question.setText("Who leads Fleet Dispatch?")
    tab.ask_button.click()
    qtbot.waitUntil(lambda: tab.last_trace is not None or tab.error.text() != "", timeout=240000)
    assert tab.error.text() == "" and tab.last_trace.question == "Who leads Fleet Dispatch?"
    wait_idle(qtbot, w, timeout=240000)
