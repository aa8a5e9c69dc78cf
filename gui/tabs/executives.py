"""Executives tab: choose which policy-approved model plays the executive, and test it.

Only endpoints that policies/executives.yaml approves for the ``executive`` purpose are listed,
local (llama.cpp on a registered model) or external (an OpenAI-compatible server, with the data
it may receive). There is deliberately no field for a URL: an external endpoint is approved by an
administrator editing the policy file (versioned, audited as policy.changed), never from a
desktop. Testing opens the model exactly as `memo ask` would (:func:`appliance.app.qa.test_endpoint`:
the policy gate with what the executive sends), so the policy gate is the one being tested, then
asks for a word.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from appliance.errors import MemoError
from gui.state import ConsoleState
from gui.tabs import fill_table, make_table
from gui.workers import BusyBar


class ExecutivesTab(QWidget):
    def __init__(self, state: ConsoleState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.endpoints: list[Any] = []
        self.policy: Any = None
        self.last_test: dict[str, Any] | None = None

        self.table = make_table(["endpoint", "kind", "model", "where", "may receive", "policy file", "in use"], stretch=2)
        self.use_button = QPushButton("Use as executive")
        self.test_button = QPushButton("Test connection")
        self.reload_button = QPushButton("Reload policy")
        self.result = QLabel()
        self.result.setWordWrap(True)
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.busy = BusyBar()

        buttons = QHBoxLayout()
        for b in (self.use_button, self.test_button, self.reload_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        box = QGroupBox("Executives approved by policy")
        bl = QVBoxLayout(box)
        bl.addWidget(self.table)
        bl.addLayout(buttons)
        bl.addWidget(self.busy)
        bl.addWidget(self.result)
        layout = QVBoxLayout(self)
        layout.addWidget(box, 1)
        layout.addWidget(self.note)

        self.use_button.clicked.connect(self.use_selected)
        self.test_button.clicked.connect(self.test_selected)
        self.reload_button.clicked.connect(self.reload)
        state.endpoint_changed.connect(lambda _n: self._fill())

    def reload(self) -> None:
        from appliance.app.policy import executives

        if not self.state.may("ask"):
            self.endpoints, self.policy = [], None
            self.result.setText(f"{self.state.actor} may not ask questions, so no executive is offered")
            self._fill()
            return
        try:
            self.endpoints, self.policy = executives(self.state.session)
        except MemoError as exc:
            self.endpoints, self.policy = [], None
            self.result.setText(f"policy error: {exc}")
        self._fill()
        where = self.policy.edit_file() if self.policy else "policies/executives.yaml"
        self.note.setText(f"Only endpoints approved for the executive purpose in {where} are offered. To add one, an "
                          "administrator edits that file (URL, model, purposes, data allowed to leave) and pins it "
                          "(`memo policy pin`, audited). The console cannot add or connect to an unapproved endpoint.")

    def _fill(self) -> None:
        fill_table(self.table, [[ep.name, "external" if ep.external else "local", ep.model, ep.url or "this machine (llama.cpp)",
                                 ", ".join(ep.data_allowed_to_leave) if ep.external else "nothing leaves",
                                 str(self.policy.file_of(ep)) if self.policy else "", "✓" if ep.name == self.state.endpoint else ""]
                                for ep in self.endpoints])

    def names(self) -> list[str]:
        return [ep.name for ep in self.endpoints]

    def selected_name(self) -> str | None:
        row = self.table.currentRow()
        return self.endpoints[row].name if 0 <= row < len(self.endpoints) and self.table.selectedItems() else None

    def select(self, name: str) -> None:
        if name not in self.names():
            raise MemoError(f"{name!r} is not an executive approved in policy")
        self.table.selectRow(self.names().index(name))

    def connect_endpoint(self, name: str) -> None:
        """Make ``name`` the Ask tab's executive; refused unless policy approves it as executive."""
        if name not in self.names():
            raise MemoError(f"{name!r} is not an executive approved in policy; an administrator adds endpoints to "
                            f"{self.policy.edit_file() if self.policy else 'policies/executives.yaml'}")
        self.state.set_endpoint(name)
        self.result.setText(f"the Ask tab now uses {name} as executive")

    def use_selected(self) -> None:
        name = self.selected_name()
        if name is None:
            self.result.setText("select an endpoint first")
            return
        self.connect_endpoint(name)

    def test_selected(self) -> None:
        name = self.selected_name()
        if name is None:
            self.result.setText("select an endpoint first")
            return
        from appliance.app.qa import test_endpoint

        session = self.state.session
        self.test_button.setEnabled(False)
        self.result.setText(f"testing {name}…")
        task = self.state.runner.start(f"executive.test {name}", lambda _p: test_endpoint(session, name), self._tested,
                                       self._failed)
        task.signals.ended.connect(lambda: self.test_button.setEnabled(True))
        self.busy.follow(task, f"opening {name} and asking for one word…")

    def _tested(self, r: dict[str, Any]) -> None:
        self.last_test = r
        self.result.setText(f"OK: {r['endpoint']} answered {r['reply']!r} in {r['seconds']} s "
                            f"(opened in {r['open_s']} s, {r['tokens_per_s']} tok/s) — {r['identity']}")

    def _failed(self, error: str) -> None:
        self.last_test = None
        self.result.setText(f"FAILED: {error}")
