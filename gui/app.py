"""The memo console: a main window with one tab per job an administrator or compliance officer
does every day, over the same appliance functions as the `memo` CLI.

``main()`` (behind `memo gui`) opens the vault from the CLI's --home/--user/--key-file (or MEMO_*
env) when given, else asks who you are and your passphrase or key file with
:class:`gui.unlock.UnlockDialog`, then shows :class:`MainWindow` acting as whoever unlocked.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from PySide6.QtWidgets import QApplication, QLabel, QMainWindow, QTabWidget

from gui.state import ConsoleState
from gui.tabs.approvals import ApprovalsTab
from gui.tabs.ask import AskTab
from gui.tabs.audit import AuditTab
from gui.tabs.dashboard import DashboardTab
from gui.tabs.executives import ExecutivesTab
from gui.tabs.jobs import JobsTab

TABS = ("dashboard", "ask", "audit", "approvals", "executives", "jobs")


class MainWindow(QMainWindow):
    """Six tabs sharing one :class:`ConsoleState` over ``session`` (an unlocked vault and the person
    whose slot unlocked it); extra keyword arguments go to the state (tests inject the executive
    factory and the file/passphrase askers)."""

    def __init__(self, session: Any, refresh: bool = True, **state_options: Any) -> None:
        super().__init__()
        self.state = ConsoleState(session, parent=self, **state_options)
        vault = session.vault
        self.setWindowTitle(f"memo console — {vault.home} (vault {vault.keyring.vault_id[:8]})")
        self.resize(1280, 820)
        self.dashboard = DashboardTab(self.state)
        self.ask = AskTab(self.state)
        self.audit = AuditTab(self.state)
        self.approvals = ApprovalsTab(self.state)
        self.executives = ExecutivesTab(self.state)
        self.jobs = JobsTab(self.state)
        self.tabs = QTabWidget()
        for name, tab in zip(TABS, self.tab_widgets()):
            self.tabs.addTab(tab, name.capitalize())
        self.setCentralWidget(self.tabs)
        roles = ", ".join(self.state.session.roles()) or "no roles"
        self.status = QLabel(f"acting as {self.state.actor} ({roles}) · vault unlocked")
        self.statusBar().addPermanentWidget(self.status)
        self.state.changed.connect(self._versions_changed)
        if refresh:
            self.refresh_all()

    def tab_widgets(self) -> list[Any]:
        return [self.dashboard, self.ask, self.audit, self.approvals, self.executives, self.jobs]

    def tab(self, name: str) -> Any:
        return self.tab_widgets()[TABS.index(name)]

    def refresh_all(self) -> None:
        self.executives.reload()
        self.dashboard.refresh()
        self.audit.reload()
        self.approvals.refresh()
        self.jobs.refresh()
        self._versions_changed("versions")

    def _versions_changed(self, what: str) -> None:
        if what != "versions" or not self.state.may("memory.list"):
            return
        from appliance.app.memory import versions

        session = self.state.session
        self.state.runner.start("versions", lambda _p: [v.id for v in versions(session)], self.ask.set_versions)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        """Stop polling and cancel what runs; a model call in flight finishes in the background."""
        self.jobs.timer.stop()
        for t in self.state.runner.live():
            t.cancel()
        self.state.runner.wait_all(2000)
        super().closeEvent(event)


def main(home: Path | None = None, key_file: Path | None = None, passphrase: str | None = None,
         user: str | None = None) -> int:
    """Open the console; with a key file or passphrase given, skip the unlock dialog."""
    from gui.unlock import UnlockDialog, open_session

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("memo console")
    if key_file is not None or passphrase:
        from appliance.config import Settings

        session = open_session(Settings.load(home), user, passphrase, key_file)
    else:
        dialog = UnlockDialog(home, user=user)
        if dialog.exec() != UnlockDialog.DialogCode.Accepted or dialog.session is None:
            return 1
        session = dialog.session
    window = MainWindow(session)
    window.show()
    return app.exec()


if __name__ == "__main__":
    raise SystemExit(main())
