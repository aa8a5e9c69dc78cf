"""Audit tab: the compliance officer's view of the hash-chained log.

Filters are those of `memo audit show` (actor, action or its prefix, target, time range, via
:class:`appliance.app.audit.AuditFilter`) plus a free-text search over every field. Verify walks the
chain, signatures and payloads (:func:`appliance.app.audit.verify`, as `memo audit verify`); when it breaks,
the first broken entry is selected and painted red. The table reads entries leniently, so a
tampered entry shows as ``(unreadable)`` in place instead of hiding the rest of the log. Export
writes the filtered entries as `memo audit export` does (decrypted JSONL, itself audited).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PySide6.QtCore import QDateTime, QTimeZone
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QCheckBox,
    QDateTimeEdit,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from gui.state import ConsoleState
from gui.tabs import fill_table, make_table
from gui.workers import BusyBar, Progress

BROKEN = QColor("#f4b4b4")


def _details(e: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in e.details.items() if v is not None)


class AuditTab(QWidget):
    def __init__(self, state: ConsoleState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.entries: list[Any] = []
        self.shown: list[Any] = []
        self.result: Any = None

        self.actor = QLineEdit()
        self.action = QLineEdit()
        self.action.setPlaceholderText("e.g. qa.ask or approval")
        self.target = QLineEdit()
        self.search = QLineEdit()
        self.search.setPlaceholderText("search every field")
        self.use_since, self.use_until = QCheckBox("since"), QCheckBox("until")
        self.since, self.until = QDateTimeEdit(), QDateTimeEdit()
        now = QDateTime.currentDateTimeUtc()
        self.since.setDateTime(now.addDays(-7))
        self.until.setDateTime(now)
        for w in (self.since, self.until):
            w.setDisplayFormat("yyyy-MM-dd HH:mm")
            w.setTimeZone(QTimeZone.utc())
            w.setCalendarPopup(True)
        self.reload_button = QPushButton("Reload")
        self.verify_button = QPushButton("Verify chain")
        self.export_button = QPushButton("Export…")
        self.banner = QLabel("chain not verified yet")
        self.banner.setWordWrap(True)
        self.count = QLabel()
        self.busy = BusyBar()
        self.table = make_table(["seq", "time (UTC)", "actor", "action", "target", "details"], stretch=5)

        filters = QGridLayout()
        filters.addWidget(QLabel("actor"), 0, 0)
        filters.addWidget(self.actor, 0, 1)
        filters.addWidget(QLabel("action"), 0, 2)
        filters.addWidget(self.action, 0, 3)
        filters.addWidget(QLabel("target"), 0, 4)
        filters.addWidget(self.target, 0, 5)
        filters.addWidget(self.use_since, 1, 0)
        filters.addWidget(self.since, 1, 1)
        filters.addWidget(self.use_until, 1, 2)
        filters.addWidget(self.until, 1, 3)
        filters.addWidget(QLabel("search"), 1, 4)
        filters.addWidget(self.search, 1, 5)
        buttons = QHBoxLayout()
        for b in (self.reload_button, self.verify_button, self.export_button):
            buttons.addWidget(b)
        buttons.addWidget(self.count, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(filters)
        layout.addLayout(buttons)
        layout.addWidget(self.banner)
        layout.addWidget(self.busy)
        layout.addWidget(self.table, 1)

        for w in (self.actor, self.action, self.target, self.search):
            w.textChanged.connect(self.apply_filters)
        for c in (self.use_since, self.use_until):
            c.toggled.connect(self.apply_filters)
        for d in (self.since, self.until):
            d.dateTimeChanged.connect(self.apply_filters)
        self.reload_button.clicked.connect(self.reload)
        self.verify_button.clicked.connect(self.verify)
        self.export_button.clicked.connect(self.export)
        state.changed.connect(lambda what: self.reload() if what == "audit" else None)

    # ------------------------------------------------------------------ reading + filters
    def reload(self) -> None:
        from appliance.app.audit import entries

        if not self.state.may("audit.show"):
            self.banner.setText(f"{self.state.actor} may not read the audit log (it needs the auditor or admin role)")
            return
        session = self.state.session
        task = self.state.runner.start("audit.read", lambda _p: entries(session, lenient=True), self._loaded, self._failed)
        self.busy.follow(task, "reading the audit log…")

    def _loaded(self, entries: list[Any]) -> None:
        self.entries = entries
        self.apply_filters()

    def _failed(self, error: str) -> None:
        self.banner.setText(f"error: {error}")

    def filters(self) -> dict[str, str | None]:
        iso = lambda d: d.dateTime().toUTC().toString("yyyy-MM-ddTHH:mm")  # noqa: E731 - same text form as the CLI's --since
        return {"actor": self.actor.text().strip() or None, "action": self.action.text().strip() or None,
                "target": self.target.text().strip() or None,
                "since": iso(self.since) if self.use_since.isChecked() else None,
                "until": iso(self.until) + ":59.999" if self.use_until.isChecked() else None}

    def apply_filters(self) -> None:
        from appliance.app.audit import AuditFilter

        f = AuditFilter(**self.filters())
        needle = self.search.text().strip().lower()
        broken = self.result.first_bad_seq if self.result is not None and not self.result.ok else None
        shown = []
        for e in self.entries:
            if e.seq != broken and not f(e):  # the broken entry is never filtered away
                continue
            if needle and needle not in json.dumps(e.to_dict(), default=str).lower():
                continue
            shown.append(e)
        self.shown = shown
        fill_table(self.table, [[e.seq, e.ts[:23], e.actor, e.action, e.target or "", _details(e)[:300]] for e in shown])
        self.count.setText(f"{len(shown)} of {len(self.entries)} entries")
        self._highlight()

    def row_of(self, seq: int) -> int | None:
        return next((i for i, e in enumerate(self.shown) if e.seq == seq), None)

    def _highlight(self) -> None:
        if self.result is None or self.result.ok or self.result.first_bad_seq is None:
            return
        row = self.row_of(self.result.first_bad_seq)
        if row is None:
            return
        for c in range(self.table.columnCount()):
            item = self.table.item(row, c)
            if item is not None:
                item.setBackground(QBrush(BROKEN))
                item.setToolTip(self.result.problem or "")
        self.table.selectRow(row)
        self.table.scrollToItem(self.table.item(row, 0))

    # ------------------------------------------------------------------ verify + export
    def verify(self) -> None:
        from appliance.app.audit import entries, verify

        session = self.state.session
        self.verify_button.setEnabled(False)
        self.banner.setText("verifying…")

        def work(_p: Progress) -> tuple[Any, list[Any]]:
            return verify(session), entries(session, lenient=True)

        task = self.state.runner.start("audit.verify", work, self._verified, self._failed)
        task.signals.ended.connect(lambda: self.verify_button.setEnabled(True))
        self.busy.follow(task, "verifying the chain, signatures and payloads…")

    def _verified(self, got: tuple[Any, list[Any]]) -> None:
        self.result, self.entries = got
        r = self.result
        if r.ok:
            self.banner.setText(f"OK: {r.entries} entries, chain and signatures intact"
                                f"{', payloads authenticated' if r.payloads_checked else ''}")
            self.banner.setStyleSheet("background: #c8f0c8; padding: 6px;")
        else:
            self.banner.setText(f"BROKEN at entry {r.first_bad_seq}: {r.problem}")
            self.banner.setStyleSheet("background: #f4b4b4; padding: 6px; font-weight: bold;")
        self.apply_filters()

    def export(self) -> None:
        path = self.state.pick_save_path(self, "Export audit entries (decrypted: handle as sensitive)")
        if path is None:
            return
        session, chosen = self.state.session, list(self.shown)

        def work(_p: Progress) -> tuple[int, Path]:
            from appliance.app.audit import export

            export(session, out=path, chosen=chosen)
            return len(chosen), path

        def done(got: tuple[int, Path]) -> None:
            self.banner.setText(f"exported {got[0]} entries to {got[1]} (plaintext: handle it as sensitive)")
            self.reload()

        self.state.runner.start("audit.export", work, done, self._failed)
