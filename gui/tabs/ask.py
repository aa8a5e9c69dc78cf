"""Ask tab: a question answered by the executive through the memory, with the whole trace.

The answer comes from :func:`appliance.executive.session.ask`, the function behind `memo ask`,
`memo serve` and this console alike, so the question is audited (``qa.ask``, channel ``gui``) the
same way whichever door it came in by. The executive is opened once per (endpoint, memory version,
hops) and reused: loading the models costs more than a short answer.

The executive factory is injectable (:class:`gui.state.ConsoleState`): the real console opens the
policy endpoint chosen in the Executives tab with the promoted memory; tests pass the bundled model.
"""

from __future__ import annotations

import threading
from typing import Any

from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from gui.state import ConsoleState
from gui.tabs import fill_table, make_table
from gui.workers import BusyBar, Progress

PROMOTED = "(serving memory)"


class AskTab(QWidget):
    def __init__(self, state: ConsoleState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self._executives: dict[tuple[str, str | None, int], Any] = {}
        # a model answers one call at a time: a cancelled answer still generating holds this lock
        self._models_busy = threading.Lock()
        self.last_trace: Any = None
        self.titles: dict[str, str] = {}

        self.question = QLineEdit()
        self.question.setPlaceholderText("Ask the memory, e.g. Who leads the team that owns Routewise?")
        self.ask_button = QPushButton("Ask")
        self.memory = QComboBox()
        self.memory.addItem(PROMOTED)
        self.hops = QSpinBox()
        self.hops.setRange(0, 1)
        self.hops.setValue(1)
        self.executive_label = QLabel(state.endpoint)
        self.busy = BusyBar()
        self.answer = QLabel("")
        self.answer.setWordWrap(True)
        self.answer.setStyleSheet("font-size: 15px; font-weight: bold; padding: 6px;")
        self.trace = make_table(["hop", "asked the memory", "memory's answer", "sources"], stretch=2)
        self.sources = make_table(["document", "title"], stretch=1)
        self.footer = QLabel("")
        self.error = QLabel("")
        self.error.setStyleSheet("color: #b00020;")
        self.error.setWordWrap(True)

        row = QHBoxLayout()
        row.addWidget(self.question, 1)
        row.addWidget(self.ask_button)
        opts = QFormLayout()
        opts.addRow("executive (Executives tab)", self.executive_label)
        opts.addRow("memory version", self.memory)
        opts.addRow("bridge hops", self.hops)
        answer_box = QGroupBox("Answer")
        al = QVBoxLayout(answer_box)
        al.addWidget(self.answer)
        al.addWidget(self.footer)
        trace_box = QGroupBox("Trace: sub-questions put to the memory")
        QVBoxLayout(trace_box).addWidget(self.trace)
        src_box = QGroupBox("Sources cited")
        QVBoxLayout(src_box).addWidget(self.sources)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addLayout(opts)
        layout.addWidget(self.busy)
        layout.addWidget(self.error)
        layout.addWidget(answer_box)
        layout.addWidget(trace_box, 3)
        layout.addWidget(src_box, 1)

        self.ask_button.clicked.connect(self.ask)
        self.question.returnPressed.connect(self.ask)
        state.endpoint_changed.connect(self.executive_label.setText)

    def set_versions(self, version_ids: list[str]) -> None:
        current = self.memory.currentText()
        self.memory.clear()
        self.memory.addItems([PROMOTED, *version_ids])
        if current in version_ids:
            self.memory.setCurrentText(current)

    def ask(self) -> None:
        question = self.question.text().strip()
        if not question or not self.ask_button.isEnabled():
            return
        from appliance.app.qa import ask, source_titles
        from appliance.executive.agent import ExecutiveParams

        state = self.state
        version = None if self.memory.currentText() == PROMOTED else self.memory.currentText()
        key = (state.endpoint, version, self.hops.value())
        cache = self._executives

        busy = self._models_busy

        def work(p: Progress) -> tuple[Any, dict[str, str]]:
            if not busy.acquire(blocking=False):
                p.say("waiting for the cancelled answer's generation to finish…")
                busy.acquire()
            try:
                p.check()
                executive = cache.get(key)
                if executive is None:
                    p.say(f"opening executive {key[0]} and memory {version or 'serving'}…")
                    executive = state.executive_factory(state.session, key[0], version, ExecutiveParams(max_hops=key[2]))
                    cache[key] = executive
                p.check()
                p.say("answering: the executive is asking the memory…")
                trace = ask(state.session, executive, question)
                return trace, source_titles(state.session, trace.sources)
            finally:
                busy.release()

        self.ask_button.setEnabled(False)
        self.error.setText("")
        task = state.runner.start("ask", work, self.show_trace, self._failed)
        task.signals.ended.connect(lambda: self.ask_button.setEnabled(True))
        self.busy.follow(task, "answering (cancel stops waiting; the answer is still audited)")

    def _failed(self, error: str) -> None:
        self.error.setText(f"error: {error}")

    def show_trace(self, result: tuple[Any, dict[str, str]]) -> None:
        trace, titles = result
        self.last_trace, self.titles = trace, titles
        self.answer.setText(trace.answer)
        fill_table(self.trace, [[s.hop, s.question, s.answer, ", ".join(s.sources) or "-"] for s in trace.sub_answers])
        fill_table(self.sources, list(titles.items()))
        tokens = sum(trace.tokens.values())
        self.footer.setText(f"answered by executive {trace.executive} · memory {trace.memory_version} ({trace.memory}) · "
                            f"{trace.seconds:.1f} s · {tokens} tokens · audited as qa.ask")
        self.state.changed.emit("audit")
