"""Screenshots of every console tab, with real data, for docs/screenshots/ and the README.

    .venv/bin/python scripts/screenshots.py [--demo-dir .memo-demo] [--out docs/screenshots]

Works on a copy of the demo vault (`memo demo` makes it: a promoted memory mem-0001 and the key
file demo.key), never on the original. In the copy it: asks one question through the real
executive and memory; makes a candidate memory (mem-0001's adapter at 0.7 strength — a real,
slightly weaker model, labelled as such in its lineage) and evaluates it against mem-0001 for real
(transformers, minutes on 2 cores); names an approver (a key made here) who, in the Approvals tab,
tries to approve it (the policy's retention gate refuses) and signs its rejection; tests the local executive; runs the ingest job on a one-file
inbox; verifies the audit chain. Qt runs offscreen unless QT_QPA_PLATFORM says otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from PySide6.QtWidgets import QApplication  # noqa: E402

QUESTION = "Who leads Fleet Dispatch?"


def say(msg: str) -> None:
    print(f"[screenshots] {msg}", flush=True)


def wait(app: QApplication, cond, timeout: float = 900.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for the console")
        app.processEvents()
        time.sleep(0.02)
    app.processEvents()


def idle(app: QApplication, window) -> None:  # noqa: ANN001
    wait(app, lambda: not window.state.runner.busy())


def make_candidate(vault, parent: str, actor: str) -> str:  # noqa: ANN001
    """mem-0001's LoRA adapter at 0.7 strength as a new version, then its real candidate evaluation."""
    from safetensors.torch import load

    from appliance.memory.model_io import adapter_files, save_adapter
    from appliance.memory.update import evaluate_candidate
    from appliance.memory.versions import create_version, get_version, set_status

    src = get_version(vault, parent)
    weights, cfg = adapter_files(parent)
    import json

    state = {k: (v * 0.7 if "lora_B" in k else v) for k, v in load(vault.read_file(weights)).items()}
    lineage = {**src.lineage, "note": f"screenshot demo: {parent}'s adapter at 0.7 strength"}
    v = create_version(vault, None, src.base_model, "lora", actor, lineage)
    save_adapter(vault, v.id, state, json.loads(vault.read_file(cfg)))
    set_status(vault, v.id, "candidate")
    say(f"evaluating candidate {v.id} against {parent} (transformers; minutes on a busy CPU)")
    evaluate_candidate(vault, v.id, parent, progress=say, actor=actor)
    return v.id


def write_policies(directory: Path, inbox: Path, approver_public: str | None, approver: str = "admin") -> None:
    """The shipped policies, with the schedule's inbox moved to a temp folder and, when given, an approver."""
    if directory.exists():
        shutil.rmtree(directory)
    shutil.copytree(REPO / "policies", directory)
    sched = directory / "schedules.yaml"
    sched.write_text(sched.read_text().replace("/var/lib/memo-inbox", str(inbox)).replace("settle: 5s", "settle: 0s"))
    if approver_public:
        appr = directory / "approvers.yaml"
        appr.write_text(appr.read_text().replace(
            "principals: []", f'principals:\n  - {{name: {approver}, roles: [approver, admin], public_key: "{approver_public}"}}'))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo-dir", type=Path, default=REPO / ".memo-demo")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    args = ap.parse_args()
    if not (args.demo_dir / "demo.key").exists():
        raise SystemExit(f"no demo vault in {args.demo_dir}: run `memo demo` first")
    work = Path(tempfile.mkdtemp(prefix="memo-shots-"))
    demo = work / "demo"
    subprocess.run(["cp", "-a", str(args.demo_dir), str(demo)], check=True)  # the original is never touched
    inbox = work / "inbox"
    inbox.mkdir()
    (inbox / "night-shift.md").write_text("# Night shift 2026\n\nThe night shift dispatcher on call is Dana Ortiz.\n")
    policies = work / "policies"
    write_policies(policies, inbox, None)  # open mode while mem-0001 (promoted in open mode) answers

    from appliance.app.policy import pin
    from appliance.approvals.keys import generate
    from appliance.config import Settings
    from gui.app import MainWindow
    from gui.unlock import open_session

    app = QApplication.instance() or QApplication(sys.argv[:1])
    session = open_session(Settings.load(demo / "home"), None, None, demo / "demo.key")  # the demo key's slot acts
    vault, actor = session.vault, session.principal
    pin(session, policies)  # what an administrator does: the copy's policy set, audited
    key = work / "admin.key"
    public = generate(key)
    window = MainWindow(session, pick_key_file=lambda _p, _t: key)
    window.resize(1360, 860)
    window.show()
    idle(app, window)
    args.out.mkdir(parents=True, exist_ok=True)

    def shot(name: str) -> None:
        window.tabs.setCurrentWidget(window.tab(name))
        idle(app, window)
        for _ in range(5):
            app.processEvents()
        path = args.out / f"{name}.png"
        window.grab().save(str(path))
        say(f"wrote {path}")

    # Ask: the real executive (policy endpoint local) through the promoted memory
    window.ask.question.setText(QUESTION)
    window.ask.ask()
    wait(app, lambda: window.ask.last_trace is not None or window.ask.error.text() != "")
    idle(app, window)
    shot("ask")

    # Executives: test the local executive
    window.executives.reload()
    window.executives.select("local")
    window.executives.test_selected()
    idle(app, window)
    shot("executives")

    # Jobs: run the ingest job on the one-file inbox
    window.jobs.refresh()
    idle(app, window)
    window.jobs.select_job("ingest")
    window.jobs.run_selected()
    wait(app, lambda: window.jobs.message.text().startswith(("run ", "error")))
    window.jobs.refresh()
    idle(app, window)
    window.jobs.select_job("ingest")
    shot("jobs")

    # Approvals: a real candidate and its evaluation; an approver named in policy reads it and signs
    # (the weakened candidate loses retention, so the policy gate refuses an approval: it is rejected)
    candidate = make_candidate(vault, "mem-0001", actor)
    write_policies(policies, inbox, public, actor)
    pin(session, policies)
    window.approvals.show_all.setChecked(True)
    idle(app, window)
    window.approvals.select(candidate)
    window.approvals.promote_box.setChecked(False)
    window.approvals.decide("approve")
    idle(app, window)
    refused = window.approvals.message.text()
    say(f"approve: {refused}")
    window.approvals.select(candidate)
    window.approvals.comment.setText("loses retention against mem-0001; keep serving mem-0001")
    window.approvals.decide("reject")
    idle(app, window)
    window.approvals.select(candidate)
    shot("approvals")

    # Audit: verify the chain, newest entries in view
    window.audit.verify()
    idle(app, window)
    window.audit.table.scrollToBottom()
    shot("audit")

    window.dashboard.refresh()
    shot("dashboard")
    window.close()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
