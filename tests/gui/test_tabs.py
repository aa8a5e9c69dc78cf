"""The console's tabs driven through their main actions against a real vault (offscreen Qt):
audit verification (intact and tampered), signed approve/reject/rollback, executives from policy
only, jobs run now/pause/history, the dashboard, and the unlock dialog."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtWidgets import QLineEdit

from appliance.approvals.keys import parse_public_key
from appliance.approvals.records import records, state
from appliance.errors import MemoError
from appliance.memory.versions import get_version, promoted, update_metrics
from appliance.vault.store import Vault
from tests.conftest import PASSPHRASE
from tests.gui.conftest import wait_idle


def _actions(vault: Vault) -> list[str]:
    return [e.action for e in vault.audit.entries()]


# ------------------------------------------------------------------ audit
def test_audit_verifies_filters_exports_and_highlights_the_first_broken_entry(qtbot, make_window, vault, tmp_path) -> None:  # noqa: ANN001
    for i in range(6):
        vault.audit.append("bob" if i % 2 else "carol", "test.event", f"doc-{i}", n=i)
    out = tmp_path / "export.jsonl"
    w = make_window(actor=vault.principal, pick_save_path=lambda _parent, _title: out)  # the vault's own slot: no new entry
    tab = w.audit
    tab.verify_button.click()
    wait_idle(qtbot, w)
    assert tab.result.ok and tab.banner.text().startswith("OK: 7 entries")
    assert tab.table.rowCount() == 7

    tab.actor.setText("bob")
    assert [e.seq for e in tab.shown] == [3, 5, 7]
    tab.actor.setText("")
    tab.search.setText("doc-4")
    assert [e.seq for e in tab.shown] == [6]
    tab.search.setText("")
    tab.action.setText("test")  # a prefix, as `memo audit show --action`
    assert len(tab.shown) == 6
    tab.export_button.click()
    wait_idle(qtbot, w)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["seq"] for x in lines] == [2, 3, 4, 5, 6, 7] and lines[0]["details"] == {"n": 0}
    assert _actions(vault)[-1] == "audit.export"
    tab.action.setText("")

    # tamper with entry 4: another entry's ciphertext (hash no longer matches)
    raw = vault.audit.path.read_bytes().splitlines(keepends=True)
    rec = json.loads(raw[3])
    rec["ct"] = json.loads(raw[2])["ct"]
    raw[3] = json.dumps(rec, separators=(",", ":")).encode() + b"\n"
    vault.audit.path.write_bytes(b"".join(raw))
    tab.actor.setText("carol")  # the broken entry shows even when a filter would hide it
    tab.verify_button.click()
    wait_idle(qtbot, w)
    assert not tab.result.ok and tab.result.first_bad_seq == 4
    assert tab.banner.text().startswith("BROKEN at entry 4")
    row = tab.row_of(4)
    assert row is not None and tab.table.currentRow() == row
    assert tab.table.item(row, 0).text() == "4"
    assert tab.table.item(row, 0).background().color().name() == "#f4b4b4"
    assert tab.table.item(row, 3).text() == "(unreadable)"  # its payload no longer decrypts: shown in place
    assert tab.row_of(5) is None and tab.row_of(6) is not None  # bob filtered out, carol after the break still listed


# ------------------------------------------------------------------ approvals
def _candidate(vault: Vault, seed: int) -> Any:
    """A version with real (tiny) weights and a real evaluation report (scripted models)."""
    from appliance.memory.candidate_eval import compare, probe_sets
    from tests.approvals.conftest import make_version
    from tests.memory.test_update import D_NEW, PAIRS, Scripted

    v = make_version(vault, seed=seed)
    report = compare(Scripted("cand", {"Who runs Alpha?": "Ann.", "What is the per diem now?": "52 EUR."}),
                     Scripted("serving", {"Who runs Alpha?": "Ann."}), probe_sets(PAIRS, {D_NEW}))
    outcomes = report.pop("outcomes")
    update_metrics(vault, v.id, candidate_eval=report, candidate_eval_outcomes=outcomes)
    return get_version(vault, v.id)


def test_approvals_sign_approve_reject_and_roll_back(qtbot, make_window, vault, keys) -> None:  # noqa: ANN001
    v1, v2 = _candidate(vault, 1), _candidate(vault, 2)
    picked: list[Path] = []
    chosen = {"key": keys["alice"][0]}

    def pick(_parent: Any, _title: str) -> Path:
        picked.append(chosen["key"])
        return chosen["key"]

    w = make_window(actor="alice", pick_key_file=pick)
    tab = w.approvals
    tab.refresh()
    wait_idle(qtbot, w)
    assert [it.version.id for it in tab.items] == [v1.id, v2.id]
    tab.select(v1.id)
    assert "retention" in tab.summary.text() and "acquisition" in tab.summary.text()
    assert tab.chart.labels and tab.deltas.rowCount() == len(tab.chart.labels)  # per-document chart and deltas

    # a key that is not alice's: refused, nothing recorded
    chosen["key"] = keys["bob"][0]
    tab.approve_button.click()
    wait_idle(qtbot, w)
    assert "not alice's" in tab.message.text() and records(vault, v1.id) == []

    chosen["key"] = keys["alice"][0]
    tab.comment.setText("retention fine")
    tab.approve_button.click()
    wait_idle(qtbot, w)
    assert "is now the serving memory" in tab.message.text(), tab.message.text()
    [rec] = records(vault, v1.id)
    assert rec.valid and rec.principal == "alice" and rec.decision == "approve" and json.loads(rec.message)["comment"] == "retention fine"
    parse_public_key(keys["alice"][1]).verify(base64.b64decode(rec.signature), rec.message.encode())
    assert get_version(vault, v1.id).status == "promoted" and promoted(vault).id == v1.id

    tab.show_all.setChecked(True)  # decided versions leave the pending list; keep them in view
    wait_idle(qtbot, w)
    tab.select(v2.id)
    tab.reject_button.click()
    wait_idle(qtbot, w)
    assert "rejected" in tab.message.text()
    [rec2] = records(vault, v2.id)
    assert rec2.valid and rec2.decision == "reject"
    assert get_version(vault, v2.id).status == "rejected" and not state(vault, v2.id).satisfied
    wait_idle(qtbot, w)  # the list reloads: the selected version's details follow
    assert tab.selected_id() == v2.id and tab.summary.text().startswith(f"{v2.id}: rejected")
    assert [tab.records.item(0, c).text() for c in (0, 1, 3)] == ["reject", "alice", "valid"]
    acts = _actions(vault)
    assert {"approval.approve", "approval.reject", "memory.promote"} <= set(acts)
    assert picked == [keys["bob"][0], keys["alice"][0], keys["alice"][0]]

    # a third version approved and promoted retires v1; roll back to it
    v3 = _candidate(vault, 3)
    tab.refresh()
    wait_idle(qtbot, w)
    tab.select(v3.id)
    tab.approve_button.click()
    wait_idle(qtbot, w)
    assert promoted(vault).id == v3.id and get_version(vault, v1.id).status == "retired"
    tab.show_all.setChecked(True)
    wait_idle(qtbot, w)
    tab.select(v1.id)
    tab.rollback_button.click()
    wait_idle(qtbot, w)
    assert promoted(vault).id == v1.id, tab.message.text()
    assert "memory.rollback" in _actions(vault)


# ------------------------------------------------------------------ executives
def test_executives_lists_only_policy_endpoints_and_cannot_add_others(qtbot, make_window) -> None:  # noqa: ANN001
    w = make_window()
    tab = w.executives
    tab.reload()
    assert tab.names() == ["local", "gpu-server"]  # writer-only is not approved as executive
    assert not tab.findChildren(QLineEdit)  # no field to type a URL into
    for bad in ("http://evil.example/v1", "writer-only", "unknown"):
        with pytest.raises(MemoError, match="not an executive approved in policy"):
            tab.connect_endpoint(bad)
    assert w.state.endpoint == "local"
    tab.select("gpu-server")
    tab.use_button.click()
    assert w.state.endpoint == "gpu-server" and w.ask.executive_label.text() == "gpu-server"
    # the external one is approved, but nothing listens: the test reports the failure, the window lives on
    tab.test_button.click()
    wait_idle(qtbot, w)
    assert tab.result.text().startswith("FAILED") and tab.last_test is None


@pytest.mark.slow
def test_executive_test_connection_for_the_local_model(qtbot, make_window, bundled_gguf) -> None:  # noqa: ANN001
    w = make_window()
    tab = w.executives
    tab.reload()
    tab.select("local")
    tab.test_button.click()
    wait_idle(qtbot, w, timeout=180000)
    assert tab.last_test is not None, tab.result.text()
    assert tab.result.text().startswith("OK: local") and "smollm2" in tab.last_test["identity"].lower()


# ------------------------------------------------------------------ jobs
def test_jobs_list_run_now_pause_resume_and_history(qtbot, make_window, vault, inbox) -> None:  # noqa: ANN001
    (inbox / "note.md").write_text("# Note\n\nThe night shift is led by Dana Ortiz.\n")
    w = make_window(actor="root")
    tab = w.jobs
    tab.refresh()
    wait_idle(qtbot, w)
    assert [r["name"] for r in tab.rows] == ["ingest", "retention"]
    assert tab.rows[0]["state"] == "scheduled" and tab.rows[0]["schedule"] == "every 60s"
    tab.select_job("ingest")
    tab.run_button.click()
    qtbot.waitUntil(lambda: tab.message.text().startswith("run "), timeout=60000)
    wait_idle(qtbot, w)
    assert "succeeded" in tab.message.text(), tab.message.text()
    assert not (inbox / "note.md").exists()  # ingested, then deleted from the inbox
    from appliance.corpus.documents import list_documents

    assert [d.title for d in list_documents(vault)] == ["Note"]
    tab.refresh()
    wait_idle(qtbot, w)
    assert tab.history and tab.history[0]["job"] == "ingest" and tab.history[0]["trigger"] == "manual"
    assert tab.history_table.item(0, 3).text() == "succeeded"
    tab.select_job("ingest")
    tab.pause_button.click()
    wait_idle(qtbot, w)
    assert tab.rows[0]["state"] == "paused", tab.message.text()
    tab.select_job("ingest")
    tab.resume_button.click()
    wait_idle(qtbot, w)
    assert tab.rows[0]["state"] == "scheduled", tab.message.text()
    acts = _actions(vault)
    assert {"job.start", "job.finish", "job.pause", "job.resume"} <= set(acts)


# ------------------------------------------------------------------ dashboard + unlock
def test_dashboard_shows_vault_memory_jobs_and_compute(qtbot, make_window) -> None:  # noqa: ANN001
    w = make_window(refresh=True)
    wait_idle(qtbot, w)
    s = w.dashboard.snapshot
    assert s is not None and s.serving is None and s.documents == 0
    assert [j["name"] for j in s.jobs] == ["ingest", "retention"]
    assert s.compute["training device"] in ("cpu", "cuda") and int(s.compute["CPU cores usable"]) >= 1
    assert w.dashboard.vault_form.rowCount() > 5


def test_unlock_dialog_refuses_a_wrong_passphrase_and_opens_with_the_right_one(qtbot, vault) -> None:  # noqa: ANN001
    from gui.unlock import UnlockDialog

    d = UnlockDialog(vault.home)
    d._kdf = vault.settings.kdf
    qtbot.addWidget(d)
    d.passphrase.setText("wrong")
    d.unlock()
    qtbot.waitUntil(lambda: d.buttons.isEnabled() and d.error.text() != "unlocking…", timeout=30000)
    assert d.session is None and d.error.text()
    d.passphrase.setText(PASSPHRASE)
    with qtbot.waitSignal(d.accepted, timeout=30000):
        d.unlock()
    assert d.session is not None and d.session.vault.keyring.vault_id == vault.keyring.vault_id
    assert d.session.principal == vault.principal  # who the console acts as: whose slot opened
    assert d.passphrase.text() == ""  # not kept in the widget


def test_jobs_show_the_live_progress_of_a_run_in_another_process(qtbot, make_window, vault) -> None:  # noqa: ANN001
    """A daemon's run, as the shared job store records it, shows with its progress on the next poll."""
    from appliance.scheduler.runs import RunStore

    runs = RunStore(vault.home)
    run_id = runs.start("retention", "retention", "scheduled", "memo-daemon")
    runs.progress(run_id, "pruning memory versions 2/5")
    w = make_window(actor="root")
    tab = w.jobs
    qtbot.waitUntil(lambda: tab.live.text().startswith("running: retention"), timeout=10000)  # the 1 s poll
    assert "pruning memory versions 2/5" in tab.live.text()
    row = [r["name"] for r in tab.rows].index("retention")
    assert tab.jobs.item(row, 3).text() == "running" and tab.jobs.item(row, 6).text() == "pruning memory versions 2/5"
    runs.finish(run_id, "succeeded", {"did": True})
    qtbot.waitUntil(lambda: tab.live.text() == "no job running", timeout=10000)
    assert tab.history[0]["status"] == "succeeded"
