"""Jobs tab: the daemon's scheduled jobs (policies/schedules.yaml) with their state, next and last
run; run one now, pause and resume, the run history, and the live progress of a running job.

It calls what `memo jobs list|run|pause|resume|history` calls (:mod:`appliance.app.jobs`): the
policy's schedule, the run store for state and history (shared with a running daemon through its
SQLite file, so a run started by the daemon shows its progress here too), and one run of a job in
this process, as the console's user. Schedules themselves are policy: an administrator pins them
(`memo policy pin`, audited), not the console.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from gui.state import ConsoleState
from gui.tabs import fill_table, make_table
from gui.workers import BusyBar, Progress

POLL_MS = 1000


def _detail(r: dict[str, Any]) -> str:
    s = r.get("summary") or {}
    return str(r.get("error") or (f"candidate {s['candidate']}" if s.get("candidate") else s.get("reason", "")) or "")


class JobsTab(QWidget):
    def __init__(self, state: ConsoleState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.rows: list[dict[str, Any]] = []
        self.history: list[dict[str, Any]] = []
        self._polling = False
        self._again = False

        self.jobs = make_table(["job", "task", "schedule", "state", "next run", "last run", "progress"], stretch=6)
        self.run_button = QPushButton("Run now")
        self.pause_button = QPushButton("Pause")
        self.resume_button = QPushButton("Resume")
        self.refresh_button = QPushButton("Refresh")
        self.live = QLabel("no job running")
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.busy = BusyBar()
        self.history_table = make_table(["run", "job", "trigger", "status", "started", "finished", "detail"], stretch=6)

        buttons = QHBoxLayout()
        for b in (self.run_button, self.pause_button, self.resume_button, self.refresh_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        jobs_box = QGroupBox("Scheduled jobs (policy: schedules.yaml)")
        jl = QVBoxLayout(jobs_box)
        jl.addWidget(self.jobs)
        jl.addLayout(buttons)
        jl.addWidget(self.live)
        jl.addWidget(self.busy)
        jl.addWidget(self.message)
        hist_box = QGroupBox("History")
        QVBoxLayout(hist_box).addWidget(self.history_table)
        layout = QVBoxLayout(self)
        layout.addWidget(jobs_box, 3)
        layout.addWidget(hist_box, 2)

        self.run_button.clicked.connect(self.run_selected)
        self.pause_button.clicked.connect(lambda: self.set_paused(True))
        self.resume_button.clicked.connect(lambda: self.set_paused(False))
        self.refresh_button.clicked.connect(self.refresh)
        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()

    # ------------------------------------------------------------------ reading
    def selected_job(self) -> str | None:
        row = self.jobs.currentRow()
        return self.rows[row]["name"] if 0 <= row < len(self.rows) else None

    def select_job(self, name: str) -> None:
        for i, r in enumerate(self.rows):
            if r["name"] == name:
                self.jobs.selectRow(i)

    def refresh(self) -> None:
        """Re-read jobs and history in the background. A poll never overlaps the previous one; a
        refresh asked for meanwhile (after a pause, say) runs when it ends, since the poll in flight
        may have read the state before the change."""
        if self._polling:
            self._again = True
            return
        if not self.state.may("jobs.list"):
            self.message.setText(f"{self.state.actor} may not see the scheduled jobs (operator, auditor or admin role)")
            return
        self._polling, self._again = True, False
        session = self.state.session

        def read(_p: Progress) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            from appliance.app.jobs import history, jobs

            return jobs(session), history(session, None, 50)

        task = self.state.runner.start("jobs.refresh", read, self._show, self._read_failed)
        task.signals.ended.connect(self._poll_ended)

    def _poll_ended(self) -> None:
        self._polling = False
        if self._again:
            self.refresh()

    def _read_failed(self, error: str) -> None:
        self.message.setText(f"error: {error}")

    def _show(self, result: tuple[list[dict[str, Any]], list[dict[str, Any]]]) -> None:
        selected = self.selected_job()
        self.rows, self.history = result
        fill_table(self.jobs, [[r["name"], r["task"], r["schedule"], r["state"], r["next_run"] or "-",
                                f"{r['last']['status']} {r['last']['started_at'][:19]}" if r["last"] else "-",
                                r["progress"] or ""] for r in self.rows])
        if selected:
            self.select_job(selected)
        fill_table(self.history_table, [[h["id"], h["job"], h["trigger"] + (f" of {h['resumes']}" if h["resumes"] else ""),
                                         h["status"], h["started_at"][:19], (h["finished_at"] or "-")[:19], _detail(h)]
                                        for h in self.history])
        running = [r for r in self.rows if r["state"] == "running"]
        self.live.setText("; ".join(f"running: {r['name']} — {r['progress'] or 'started'}" for r in running) or "no job running")

    # ------------------------------------------------------------------ actions
    def run_selected(self) -> None:
        name = self.selected_job()
        if name is None:
            self.message.setText("select a job first")
            return
        session = self.state.session

        def run(p: Progress) -> dict[str, Any]:
            from appliance.app.jobs import run as run_job

            return run_job(session, name, log=p.say)

        self.run_button.setEnabled(False)
        self.message.setText(f"{name}: running…")
        task = self.state.runner.start(f"jobs.run {name}", run, self._ran, self._failed)
        task.signals.ended.connect(lambda: self.run_button.setEnabled(True))
        self.busy.follow(task, f"running {name} (cancel stops waiting; the run finishes and is recorded)")
        self.refresh()

    def _ran(self, result: dict[str, Any]) -> None:
        extra = f" — {result['reason']}" if result.get("reason") else ""
        extra += f"; candidate {result['candidate']} is in the approval queue" if result.get("candidate") else ""
        self.message.setText(f"run {result.get('run', '-')}: {result['status']}{extra}")
        self.state.changed.emit("jobs")
        self.state.changed.emit("audit")
        self.refresh()

    def _failed(self, error: str) -> None:
        self.message.setText(f"error: {error}")
        self.refresh()

    def set_paused(self, paused: bool) -> None:
        name = self.selected_job()
        if name is None:
            self.message.setText("select a job first")
            return
        session = self.state.session

        def apply(_p: Progress) -> str:
            from appliance.app.jobs import set_paused

            return set_paused(session, name, paused)

        def done(text: str) -> None:
            self.message.setText(text)
            self.refresh()

        self.state.runner.start(f"jobs.pause {name}", apply, done, self._failed)
