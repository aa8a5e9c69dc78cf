"""What the tabs of one console window share: the session (the unlocked vault and the person whose
slot unlocked it), the background task runner, the executive chosen in the Executives tab, and the
functions that ask the user for files and passphrases.

The askers are plain callables so that tests (and the screenshot script) can answer without a
real dialog; the window's defaults open the usual Qt dialogs. Nothing here is global: each window
owns its state, and a second window on another vault would not see it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QFileDialog, QInputDialog, QLineEdit, QWidget

from appliance.llm.connect import DEFAULT_ENDPOINT
from gui.workers import TaskRunner

if TYPE_CHECKING:
    from appliance.app.session import Session
    from appliance.executive.agent import Executive, ExecutiveParams
    from appliance.vault.store import Vault

ExecutiveFactory = Callable[["Session", str, "str | None", "ExecutiveParams"], "Executive"]
PickFile = Callable[[QWidget, str], "Path | None"]
AskText = Callable[[QWidget, str], "str | None"]


def default_executive_factory(session: "Session", endpoint: str, memory_version: str | None,
                              params: "ExecutiveParams") -> "Executive":
    """The same call as `memo ask`: the policy-approved executive and the memory version's GGUF."""
    from appliance.app.serving import open_executive

    return open_executive(session, endpoint, memory_version, params)


def dialog_open_file(parent: QWidget, title: str) -> Path | None:
    path, _ = QFileDialog.getOpenFileName(parent, title)
    return Path(path) if path else None


def dialog_save_file(parent: QWidget, title: str) -> Path | None:
    path, _ = QFileDialog.getSaveFileName(parent, title, "audit.jsonl", "JSON lines (*.jsonl)")
    return Path(path) if path else None


def dialog_passphrase(parent: QWidget, prompt: str) -> str | None:
    text, ok = QInputDialog.getText(parent, "Passphrase", prompt, QLineEdit.EchoMode.Password)
    return text if ok else None


class ConsoleState(QObject):
    """Shared by the tabs of one window; signals tell the other tabs what changed."""

    endpoint_changed = Signal(str)
    changed = Signal(str)  # "audit", "versions", "jobs", ...: something another tab may want to reload

    def __init__(self, session: "Session", runner: TaskRunner | None = None,
                 executive_factory: ExecutiveFactory = default_executive_factory,
                 pick_key_file: PickFile = dialog_open_file, pick_save_path: PickFile = dialog_save_file,
                 ask_passphrase: AskText = dialog_passphrase, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.runner = runner or TaskRunner(self)
        self.executive_factory = executive_factory
        self.pick_key_file = pick_key_file
        self.pick_save_path = pick_save_path
        self.ask_passphrase = ask_passphrase
        self._endpoint = DEFAULT_ENDPOINT

    @property
    def vault(self) -> "Vault":
        return self.session.vault

    @property
    def actor(self) -> str:
        """Who is acting: the principal whose slot unlocked the vault."""
        return self.session.principal

    def may(self, use_case: str) -> bool:
        """Whether the policy in force lets the acting principal do ``use_case`` (asked without
        auditing, so a tab can leave out what its user may not see instead of being refused)."""
        try:
            return self.session.may(use_case)
        except Exception:  # noqa: BLE001 - an unreadable policy: the action itself reports it
            return True

    @property
    def endpoint(self) -> str:
        """The policy endpoint the Ask tab uses as executive."""
        return self._endpoint

    def set_endpoint(self, name: str) -> None:
        if name != self._endpoint:
            self._endpoint = name
            self.endpoint_changed.emit(name)
