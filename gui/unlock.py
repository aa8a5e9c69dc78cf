"""The unlock dialog: which appliance home, who you are, and your passphrase or key file.

Unlocking derives the key with Argon2id (64 MiB, about a second), so it runs in a worker thread
while the dialog stays responsive. The secret is handed to
:func:`appliance.app.session.open_session` — the same call the CLI makes — and never stored by the
console; the slot it opens names the person the console then acts as.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from appliance.config import Settings
from appliance.vault.keys import Secret
from gui.workers import Progress, TaskRunner


def open_session(settings: Settings, user: str | None, passphrase: str | None, key_file: Path | None) -> Any:
    """Unlock the vault in ``settings.home`` as ``user`` with a passphrase or a key file (the CLI's
    ``Ctx.session``): the slot that opens names who the console acts as."""
    from appliance.app.session import open_session as unlock
    from appliance.errors import MemoError

    if not passphrase and key_file is None:
        raise MemoError("enter your passphrase or choose your key file")
    return unlock(settings, Secret(passphrase=passphrase or None, key_file=key_file, principal=user or None), channel="gui")


def _path_row(edit: QLineEdit, pick: Any) -> QWidget:
    w = QWidget()
    row = QHBoxLayout(w)
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(edit, 1)
    browse = QPushButton("Browse…")
    browse.clicked.connect(pick)
    row.addWidget(browse)
    return w


class UnlockDialog(QDialog):
    """Accepts with ``self.session`` set once the vault opened; a wrong secret is shown inline."""

    def __init__(self, home: Path | None = None, key_file: Path | None = None, parent: QWidget | None = None,
                 user: str | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("memo — unlock the vault")
        self.session: Any = None
        self.runner = TaskRunner(self, threads=1)
        settings = Settings.load(home)
        self._kdf = settings.kdf
        self.home = QLineEdit(str(settings.home))
        self.user = QLineEdit(user or os.environ.get("MEMO_USER", ""))
        self.user.setPlaceholderText("your name in this vault (memo people list)")
        self.passphrase = QLineEdit()
        self.passphrase.setEchoMode(QLineEdit.EchoMode.Password)
        env_key = os.environ.get("MEMO_KEY_FILE")
        self.key_file = QLineEdit(str(key_file) if key_file else env_key or "")
        self.key_file.setPlaceholderText("or a key file (memo vault keygen)")
        self.error = QLabel()
        self.error.setStyleSheet("color: #b00020;")
        self.error.setWordWrap(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Unlock")

        form = QFormLayout()
        form.addRow("appliance home", _path_row(self.home, self._pick_home))
        form.addRow("who you are", self.user)
        form.addRow("passphrase", self.passphrase)
        form.addRow("key file", _path_row(self.key_file, self._pick_key))
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.error)
        layout.addWidget(self.buttons)
        self.buttons.accepted.connect(self.unlock)
        self.buttons.rejected.connect(self.reject)

    def _pick_home(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Appliance home (MEMO_HOME)", self.home.text())
        if d:
            self.home.setText(d)

    def _pick_key(self) -> None:
        f, _ = QFileDialog.getOpenFileName(self, "Vault key file")
        if f:
            self.key_file.setText(f)

    def settings(self) -> Settings:
        return Settings(home=Path(self.home.text()).expanduser(), kdf=self._kdf)

    def unlock(self) -> None:
        settings = self.settings()
        user = self.user.text().strip() or None
        passphrase = self.passphrase.text() or None
        key_file = Path(self.key_file.text()).expanduser() if self.key_file.text().strip() else None
        self.buttons.setEnabled(False)
        self.error.setText("unlocking…")

        def work(_p: Progress) -> Any:
            return open_session(settings, user, passphrase, key_file)

        task = self.runner.start("unlock", work, self._opened, self._failed)
        task.signals.ended.connect(lambda: self.buttons.setEnabled(True))

    def _opened(self, session: Any) -> None:
        self.session = session
        self.passphrase.clear()
        self.accept()

    def _failed(self, error: str) -> None:
        self.error.setText(error)
