"""Approvals tab: each candidate memory with its evaluation, signed approve/reject, and rollback.

The approver reads what `memo approvals show` prints — retention, acquisition, superseded values,
per-document accuracy (as a chart: serving memory vs candidate) and every signature on record,
each verified against the policy — then signs with their Ed25519 key file. Deciding goes through
:func:`appliance.app.serving.decide` (the same checks as the CLI: only a policy approver, only
their own key, evaluation gates), promotion once the policy's approvals are complete, and rollback
through :func:`appliance.app.serving.rollback`. The key file is chosen with an
injectable picker; a passphrase-protected key asks for its passphrase.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import (
    QCheckBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from gui.charts import BarChart, Series
from gui.state import ConsoleState
from gui.tabs import fill_table, make_table, pct
from gui.workers import BusyBar, Progress


def _load(session: Any, show_all: bool) -> list[Any]:
    """Versions (pending, or all) with their approval state and records, as `memo approvals list/show`."""
    from appliance.app.serving import reviews

    return reviews(session, show_all)


def _probes(counts: Any) -> str:
    if isinstance(counts, dict):
        return ", ".join(f"{n} {k}" for k, n in counts.items())
    return "-" if counts is None else str(counts)


def report_lines(version: Any) -> list[str]:
    """The evaluation report in words (the CLI's `_print_candidate_report` / forget report), from
    the typed :class:`appliance.approvals.reports.VersionReport`."""
    lines = [f"{version.id}: {version.status}, {version.method}, parent {version.parent or '-'}, "
             f"by {version.created_by} at {version.created_at[:19]}"]
    lin = version.lineage
    if lin.merge:
        m = lin.merge
        lines.append(f"merge: {m.method} (density {m.density}) of {', '.join(m.old)} + task vector {m.task_vector}")
    if lin.update_documents:
        lines.append(f"documents: {', '.join(lin.update_documents)}")
    r = version.evaluation.candidate_eval
    if r:
        lines.append(f"vs serving {r.reference or '(none)'}: retention {pct(r.retention)} "
                     f"(old accuracy {pct(r.old_accuracy.reference)} → {pct(r.old_accuracy.candidate)}), "
                     f"acquisition {pct(r.acquisition)}, superseded values {pct(r.superseded.reference)} → "
                     f"{pct(r.superseded.candidate)}; probes: {_probes(r.probes)}")
    f = version.evaluation.forget_report
    if f:
        lines.append(f"forgets {f.doc_id}: its probes answered {pct(f.forgotten_answered_before)} → "
                     f"{pct(f.forgotten_answered_after)}; retention on other documents {pct(f.retention)}")
    if not r and not f:
        lines.append(f"no evaluation report: memo approvals evaluate {version.id}")
    return lines


PAST = {"approve": "approved", "reject": "rejected"}


class ApprovalsTab(QWidget):
    def __init__(self, state: ConsoleState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.items: list[dict[str, Any]] = []

        self.show_all = QCheckBox("all versions (not only those waiting)")
        self.versions = make_table(["version", "status", "method", "retention", "acquisition", "approvals"])
        self.summary = QLabel("select a version")
        self.summary.setWordWrap(True)
        self.chart = BarChart("accuracy per document: serving vs candidate")
        self.deltas = make_table(["document", "probes", "serving", "candidate", "delta"], stretch=0)
        self.records = make_table(["decision", "by", "at", "signature"], stretch=3)
        self.gate = QLabel()
        self.gate.setWordWrap(True)
        self.comment = QLineEdit()
        self.comment.setPlaceholderText("comment recorded with the signature")
        self.promote_box = QCheckBox("export and promote once the policy's approvals are complete")
        self.promote_box.setChecked(True)
        self.approve_button = QPushButton("Approve (sign)…")
        self.reject_button = QPushButton("Reject (sign)…")
        self.rollback_button = QPushButton("Roll back to this version")
        self.refresh_button = QPushButton("Refresh")
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.busy = BusyBar()

        left = QWidget()
        ll = QVBoxLayout(left)
        ll.addWidget(self.show_all)
        ll.addWidget(self.versions, 1)
        ll.addWidget(self.refresh_button)
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.addWidget(self.summary)
        charts = QHBoxLayout()
        charts.addWidget(self.chart, 3)
        charts.addWidget(self.deltas, 2)
        rl.addLayout(charts, 2)
        rec_box = QGroupBox("Signatures (each verified against policy)")
        QVBoxLayout(rec_box).addWidget(self.records)
        rl.addWidget(rec_box, 1)
        rl.addWidget(self.gate)
        rl.addWidget(self.comment)
        rl.addWidget(self.promote_box)
        actions = QHBoxLayout()
        for b in (self.approve_button, self.reject_button, self.rollback_button):
            actions.addWidget(b)
        rl.addLayout(actions)
        rl.addWidget(self.busy)
        rl.addWidget(self.message)
        split = QSplitter()
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(1, 3)
        split.setSizes([470, 890])
        QVBoxLayout(self).addWidget(split)

        self.show_all.toggled.connect(self.refresh)
        self.refresh_button.clicked.connect(self.refresh)
        self.versions.itemSelectionChanged.connect(self.show_selected)
        self.approve_button.clicked.connect(lambda: self.decide("approve"))
        self.reject_button.clicked.connect(lambda: self.decide("reject"))
        self.rollback_button.clicked.connect(self.rollback)
        state.changed.connect(lambda what: self.refresh() if what in ("versions", "jobs") else None)

    # ------------------------------------------------------------------ list + details
    def refresh(self) -> None:
        if not self.state.may("approvals.list"):
            self.message.setText(f"{self.state.actor} may not see approvals (approver, operator, auditor or admin role)")
            return
        session, show_all = self.state.session, self.show_all.isChecked()
        self.state.runner.start("approvals.list", lambda _p: _load(session, show_all), self._loaded, self._failed)

    def _failed(self, error: str) -> None:
        self.message.setText(f"error: {error}")

    def _loaded(self, items: list[dict[str, Any]]) -> None:
        selected = self.selected_id()
        self.items = items
        rows = []
        for it in items:
            x, st = it.version, it.state
            ready = "ready" if st.satisfied else f"{len(st.approved_by)}/{st.required}" + (" !" if st.rule_problems or st.invalid else "")
            ev = x.evaluation.candidate_eval
            rows.append([x.id, x.status, x.method, pct(x.evaluation.retention), pct(ev.acquisition if ev else None), ready])
        fill_table(self.versions, rows)
        if selected:
            self.select(selected)
        elif items:
            self.versions.selectRow(0)
        self.show_selected()  # the same row stays selected (no selection signal) but its details changed

    def selected(self) -> Any | None:
        row = self.versions.currentRow()
        return self.items[row] if 0 <= row < len(self.items) and self.versions.selectedItems() else None

    def selected_id(self) -> str | None:
        it = self.selected()
        return it.version.id if it else None

    def select(self, version_id: str) -> None:
        for i, it in enumerate(self.items):
            if it.version.id == version_id:
                self.versions.selectRow(i)
                return

    def show_selected(self) -> None:
        it = self.selected()
        if it is None:
            self.summary.setText("no version selected" if self.items else "no version is waiting for a decision")
            self.chart.clear()
            fill_table(self.deltas, [])
            fill_table(self.records, [])
            self.gate.setText("")
            return
        x, st = it.version, it.state
        self.summary.setText("\n".join(report_lines(x)))
        per_doc = x.evaluation.candidate_eval.per_document if x.evaluation.candidate_eval else {}
        docs = sorted(per_doc)
        self.chart.set_data(docs, [Series("serving", [per_doc[d].reference for d in docs], "#8da0cb"),
                                   Series("candidate", [per_doc[d].candidate for d in docs], "#fc8d62")], 0.0, 1.0)
        fill_table(self.deltas, [[d, per_doc[d].probes, pct(per_doc[d].reference), pct(per_doc[d].candidate),
                                  "-" if per_doc[d].delta is None else f"{per_doc[d].delta * 100:+.0f} pts"] for d in docs])
        fill_table(self.records, [[r.decision, r.principal, r.created_at[:19], "valid" if r.valid else f"INVALID: {r.problem}"]
                                  for r in it.records])
        gate = f"approvals: {len(st.approved_by)} of {st.required} required" + ("" if st.enforced else " (open mode: not enforced)")
        if st.rule_problems:
            gate += "; policy: " + "; ".join(st.rule_problems)
        if st.satisfied:
            gate += "; ready to serve"
        self.gate.setText(gate)

    # ------------------------------------------------------------------ decisions
    def _private_key(self) -> Any:
        """The approver's key: picked by the injectable file picker; a passphrase is asked if needed."""
        import os

        from appliance.approvals.keys import load_private
        from appliance.errors import MemoError

        path = self.state.pick_key_file(self, "Your approver key file")
        if path is None:
            return None
        try:
            return load_private(path, os.environ.get("MEMO_APPROVER_PASSPHRASE"))
        except MemoError as exc:
            if "passphrase-protected" not in str(exc):
                raise
            secret = self.state.ask_passphrase(self, f"Passphrase for {path}")
            return None if secret is None else load_private(path, secret)

    def decide(self, decision: str) -> None:
        version_id = self.selected_id()
        if version_id is None:
            self.message.setText("select a version first")
            return
        from appliance.errors import MemoError

        try:
            key = self._private_key()
        except MemoError as exc:
            self.message.setText(f"error: {exc}")
            return
        if key is None:
            self.message.setText("no key chosen: nothing signed")
            return
        session, comment = self.state.session, self.comment.text()
        promote_after = decision == "approve" and self.promote_box.isChecked()

        def work(p: Progress) -> str:
            from appliance.app.serving import decide, promote

            done = decide(session, version_id, key, decision, comment=comment)
            rec, st = done.record, done.state
            text = (f"{PAST[decision]} {version_id} as {rec.principal} (signature recorded and audited); "
                    f"{len(st.approved_by)} of {st.required} approval(s)")
            if promote_after and st.satisfied:
                p.say(f"{version_id} has its approvals: exporting and promoting…")
                promote(session, version_id)
                text += f"; {version_id} is now the serving memory"
            elif decision == "approve" and not st.satisfied:
                text += f"; still needs {st.required - len(st.approved_by)} more approval(s) from another approver"
            return text

        self._run(f"approvals.{decision}", work, f"signing the {decision} of {version_id}…")

    def rollback(self) -> None:
        version_id = self.selected_id()
        if version_id is None:
            self.message.setText("select a version first")
            return
        session = self.state.session

        def work(_p: Progress) -> str:
            from appliance.app.serving import rollback

            previous = rollback(session, version_id)
            return f"{version_id} is the serving memory again (was: {previous or 'none'})"

        self._run("rollback", work, f"rolling back to {version_id}…")

    def _run(self, name: str, work: Any, label: str) -> None:
        buttons = (self.approve_button, self.reject_button, self.rollback_button)
        for b in buttons:
            b.setEnabled(False)
        task = self.state.runner.start(name, work, self._decided, self._failed)

        def ended() -> None:
            for b in buttons:
                b.setEnabled(True)

        task.signals.ended.connect(ended)
        self.busy.follow(task, label)

    def _decided(self, text: str) -> None:
        self.message.setText(text)
        self.comment.clear()
        self.state.changed.emit("versions")
        self.state.changed.emit("audit")
