"""`memo gui` and gui.app.main: unlock from the CLI's secret (or refuse in one line), then the window;
and the audit helpers the console reads the log with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtWidgets import QApplication

from appliance.audit.log import matches
from appliance.vault.store import Vault
from tests.conftest import PASSPHRASE
from tests.test_cli import memo, one_line_error


def test_main_opens_the_console_with_the_given_secret(qtbot, vault: Vault, policies: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    from gui import app as gui_app

    shown: list[object] = []
    monkeypatch.setattr(QApplication, "exec", lambda _self: 0)
    monkeypatch.setattr(gui_app.MainWindow, "show", lambda self: shown.append(self))
    assert gui_app.main(vault.home, None, PASSPHRASE) == 0
    [window] = shown
    assert window.state.vault.keyring.vault_id == vault.keyring.vault_id
    assert [window.tabs.tabText(i) for i in range(window.tabs.count())] == ["Dashboard", "Ask", "Audit", "Approvals", "Executives", "Jobs"]
    window.state.runner.wait_all(60000)
    window.close()


def test_memo_gui_refuses_a_wrong_secret_in_one_line(cli_env: dict[str, str]) -> None:
    assert memo(cli_env, "init").returncode == 0
    one_line_error(memo({**cli_env, "MEMO_PASSPHRASE": "wrong", "QT_QPA_PLATFORM": "offscreen"}, "gui"), "passphrase")


def test_lenient_entries_and_filters(vault: Vault) -> None:
    vault.audit.append("bob", "ingest.document", "doc-1", n=1)
    vault.audit.append("eve", "qa.ask", None)
    entries = list(vault.audit.entries_lenient())
    assert [e.action for e in entries] == ["vault.init", "ingest.document", "qa.ask"]
    assert [e.seq for e in entries if matches(e, action="ingest")] == [2]
    assert [e.seq for e in entries if matches(e, actor="eve", since="2000-01-01")] == [3]
    assert not [e for e in entries if matches(e, until="2000-01-01")]
    raw = vault.audit.path.read_bytes().splitlines(keepends=True)
    rec = json.loads(raw[1])
    rec["ct"] = json.loads(raw[0])["ct"]
    raw[1] = json.dumps(rec).encode() + b"\n"
    vault.audit.path.write_bytes(b"".join(raw))
    entries = list(vault.audit.entries_lenient())
    assert [e.action for e in entries] == ["vault.init", "(unreadable)", "qa.ask"]
    assert "audit entry 2" in entries[1].details["problem"]
