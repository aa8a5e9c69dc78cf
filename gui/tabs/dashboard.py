"""Dashboard: the state of the appliance at a glance, for the administrator's first look of the day.

Everything is read in one background task from the same functions the CLI's status commands use
(`memo vault status`, `docs list`, `memory list`, `approvals list`, `jobs list`), plus what the
models would run on now: CUDA for training when present, and the llama.cpp threads the free cores allow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtWidgets import QFormLayout, QGridLayout, QGroupBox, QLabel, QPushButton, QVBoxLayout, QWidget

from gui.state import ConsoleState
from gui.tabs import fill_table, make_table, pct


@dataclass
class Snapshot:
    status: dict[str, Any]
    documents: int
    duplicates: int
    versions: list[dict[str, Any]]
    serving: str | None
    pending: list[str]
    jobs: list[dict[str, Any]] = field(default_factory=list)
    jobs_error: str | None = None
    compute: dict[str, str] = field(default_factory=dict)


def compute_info() -> dict[str, str]:
    """Where models run now: torch's device for training, llama.cpp's thread advice for answers."""
    from appliance.llm.cpu import advise_threads, usable_cores
    from appliance.memory.train import device

    dev = device()
    info = {"training device": dev}
    if dev == "cuda":
        import torch

        info["GPU"] = torch.cuda.get_device_name(0)
    info["CPU cores usable"] = str(usable_cores())
    info["llama.cpp threads now"] = f"{advise_threads()} (of the cores other processes leave free)"
    try:
        info["load average"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        pass
    return info


def take_snapshot(state: ConsoleState) -> Snapshot:
    """What the acting principal may see of the appliance now (a part their roles do not grant is
    left out rather than refused, so a reader's dashboard does not fill the log with refusals)."""
    from appliance.app import corpus, jobs, memory, serving
    from appliance.app import vault as vault_ops

    session = state.session
    may = state.may
    docs = corpus.documents(session) if may("docs.list") else []
    versions = memory.versions(session) if may("memory.list") else []
    snap = Snapshot(
        status=vault_ops.status(session).to_dict() if may("vault.status") else {},
        documents=len(docs),
        duplicates=sum(1 for d in docs if d.duplicate_label),
        versions=[{"id": x.id, "status": x.status, "method": x.method, "created": x.created_at,
                   "probe": x.metrics.get("eval", {}).get("contains"), "retention": x.evaluation.retention} for x in versions],
        serving=next((x.id for x in versions if x.status == "promoted"), None),
        pending=[r.version.id for r in serving.reviews(session)] if may("approvals.list") else [],
    )
    try:
        snap.jobs = jobs.jobs(session) if may("jobs.list") else []
    except Exception as exc:  # noqa: BLE001 - a policy problem must not hide the rest of the dashboard
        snap.jobs_error = str(exc)
    snap.compute = compute_info()
    return snap


class DashboardTab(QWidget):
    def __init__(self, state: ConsoleState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.snapshot: Snapshot | None = None
        self.vault_form = QFormLayout()
        self.memory_form = QFormLayout()
        self.compute_form = QFormLayout()
        self.versions = make_table(["version", "status", "method", "created", "probe acc.", "retention"], stretch=3)
        self.jobs = make_table(["job", "schedule", "state", "next run", "last result"], stretch=4)
        self.message = QLabel()
        self.refresh_button = QPushButton("Refresh")

        def box(title: str, inner: Any) -> QGroupBox:
            g = QGroupBox(title)
            if isinstance(inner, QFormLayout):
                g.setLayout(inner)
            else:
                QVBoxLayout(g).addWidget(inner)
            return g

        grid = QGridLayout()
        grid.addWidget(box("Vault", self.vault_form), 0, 0)
        grid.addWidget(box("Memory", self.memory_form), 0, 1)
        grid.addWidget(box("Compute", self.compute_form), 0, 2)
        grid.addWidget(box("Memory versions", self.versions), 1, 0, 1, 2)
        grid.addWidget(box("Scheduled jobs", self.jobs), 1, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(grid, 1)
        layout.addWidget(self.message)
        layout.addWidget(self.refresh_button)
        self.refresh_button.clicked.connect(self.refresh)
        state.changed.connect(lambda _what: self.refresh())

    def refresh(self) -> None:
        self.refresh_button.setEnabled(False)
        self.message.setText("reading…")
        task = self.state.runner.start("dashboard", lambda _p: take_snapshot(self.state), self.show_snapshot, self._failed)
        task.signals.ended.connect(lambda: self.refresh_button.setEnabled(True))

    def _failed(self, error: str) -> None:
        self.message.setText(f"error: {error}")

    @staticmethod
    def _fill_form(form: QFormLayout, items: list[tuple[str, str]]) -> None:
        while form.rowCount():
            form.removeRow(0)
        for k, val in items:
            label = QLabel(val)
            label.setWordWrap(True)
            form.addRow(k, label)

    def show_snapshot(self, s: Snapshot) -> None:
        self.snapshot = s
        st = s.status
        roles = ", ".join(self.state.session.roles()) or "no roles"
        if not st:
            self._fill_form(self.vault_form, [("state", "unlocked"), ("acting as", f"{self.state.actor} ({roles})"),
                                              ("vault", "its status needs the operator, auditor or admin role")])
        else:
            self._fill_vault(st, s, roles)
        self._fill_rest(s)

    def _fill_vault(self, st: dict[str, Any], s: Snapshot, roles: str) -> None:
        self._fill_form(self.vault_form, [
            ("state", "unlocked"), ("home", st["home"]), ("vault id", st["vault_id"]),
            ("unlocks with", ", ".join(st["unlock_methods"])),
            ("documents", f"{s.documents} current, {st['superseded_versions']} superseded version(s), "
                          f"{st['forgotten_documents']} forgotten"),
            ("duplicates", str(s.duplicates)), ("chunks", str(st["chunks"])),
            ("on disk", f"{st['bytes_on_disk'] / 1e6:.1f} MB in {st['files']} files, {st['objects']} objects"),
            ("audit entries", str(st["audit_entries"])), ("people", str(st["people"])),
            ("acting as", f"{self.state.actor} ({roles})"),
        ])

    def _fill_rest(self, s: Snapshot) -> None:
        self._fill_form(self.memory_form, [
            ("serving", s.serving or "none promoted"),
            ("versions", str(len(s.versions))),
            ("pending approval", ", ".join(s.pending) or "none"),
            ("executive (Ask)", self.state.endpoint),
        ])
        self._fill_form(self.compute_form, list(s.compute.items()))
        fill_table(self.versions, [[x["id"], x["status"], x["method"], x["created"][:19], pct(x["probe"]),
                                    pct(x["retention"])] for x in s.versions])
        fill_table(self.jobs, [[j["name"], j["schedule"], j["state"], j["next_run"] or "-",
                                f"{j['last']['status']} {j['last']['started_at'][:19]}" if j["last"] else "-"] for j in s.jobs])
        self.message.setText(f"jobs: {s.jobs_error}" if s.jobs_error else "")
