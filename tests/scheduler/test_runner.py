"""Job runs in-process: inbox ingest, audit of every step, roles, policy changes without restart,
the training lock across processes, interrupted runs, the persistent job store, retention."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from appliance.app.jobs import Runner
from appliance.errors import MemoError
from appliance.scheduler.daemon import Daemon
from appliance.scheduler.lock import TrainingBusy, TrainingLock
from appliance.scheduler.runs import RunStore
from tests.conftest import passphrase_of, session_as
from tests.scheduler.conftest import write_policies

INGEST = "    - {name: ingest, task: ingest, every: 2s}\n"
ALL = INGEST + ("    - {name: reflect, task: reflect, every: 3s}\n    - {name: update, task: update, every: 5s}\n"
                "    - {name: retrain, task: retrain, every: 1h}\n    - {name: retention, task: retention, cron: '30 3 * * *'}\n")


def actions(vault) -> list[str]:  # noqa: ANN001
    return [e.action for e in vault.audit.entries()]


def test_inbox_is_ingested_deleted_and_audited(sched_env) -> None:  # noqa: ANN001
    vault, inbox = sched_env["vault"], sched_env["inbox"]
    write_policies(sched_env["policies"], inbox, INGEST)
    runner = Runner(session_as(vault, "memo-daemon", "daemon"))
    assert runner.run("ingest")["status"] == "idle"  # nothing there: recorded, not audited
    assert "job.start" not in actions(vault)
    (inbox / "sub").mkdir()
    (inbox / "a.md").write_text("# Alpha\n\nAlpha is led by Ann Quist.\n")
    (inbox / "sub" / "b.txt").write_text("Beta sits in Bree.\n")
    (inbox / "c.exe").write_bytes(b"\x00\x01")
    result = runner.run("ingest")
    assert result["status"] == "succeeded" and result["added"] == 2 and result["rejected_to_folder"] == 1
    assert sorted(p.relative_to(inbox).as_posix() for p in inbox.rglob("*") if p.is_file()) == ["rejected/c.exe"]
    acts = actions(vault)
    assert acts.index("job.start") < acts.index("ingest.start") < acts.index("ingest.finish") < acts.index("job.finish")
    start = next(e for e in vault.audit.entries() if e.action == "job.start")
    assert start.actor == "memo-daemon" and start.details["task"] == "ingest" and start.details["files"] == 3
    from appliance.corpus.documents import list_documents

    assert len(list_documents(vault)) == 2
    hist = RunStore(sched_env["home"]).history("ingest")
    assert [h["status"] for h in hist] == ["succeeded", "idle"]
    assert oct(os.stat(RunStore(sched_env["home"]).path).st_mode & 0o777) == "0o600"


def test_move_after_ingest_and_settle(sched_env) -> None:  # noqa: ANN001
    vault, inbox, pol = sched_env["vault"], sched_env["inbox"], sched_env["policies"]
    write_policies(pol, inbox, INGEST)
    text = (pol / "schedules.yaml").read_text().replace("settle: 0", "settle: 1h").replace("  generator", "  after_ingest: move\n  generator")
    (pol / "schedules.yaml").write_text(text)
    (inbox / "a.md").write_text("# A\n\nAlpha.\n")
    assert Runner(session_as(vault, "memo-daemon", "daemon")).run("ingest")["status"] == "idle"  # still being copied
    old = time.time() - 7200
    os.utime(inbox / "a.md", (old, old))
    assert Runner(session_as(vault, "memo-daemon", "daemon")).run("ingest")["status"] == "succeeded"
    assert (inbox / "ingested" / "a.md").exists() and not (inbox / "a.md").exists()


def test_roles_are_enforced_for_jobs(sched_env) -> None:  # noqa: ANN001
    vault, inbox = sched_env["vault"], sched_env["inbox"]
    write_policies(sched_env["policies"], inbox, INGEST)
    with pytest.raises(MemoError, match="'rita' may not operate"):
        Runner(session_as(vault, "rita", "daemon")).run("ingest", "manual")
    with pytest.raises(MemoError, match="no job named 'nope'"):
        Runner(session_as(vault, "root", "daemon")).run("nope", "manual")


def test_policy_edits_take_effect_without_restart_and_are_audited(sched_env) -> None:  # noqa: ANN001
    vault, inbox, pol = sched_env["vault"], sched_env["inbox"], sched_env["policies"]
    write_policies(pol, inbox, INGEST)
    runner = Runner(session_as(vault, "memo-daemon", "daemon"))
    runner.run("ingest")
    assert actions(vault).count("policy.changed") == 1
    (pol / "schedules.yaml").write_text((pol / "schedules.yaml").read_text().replace("every: 2s", "every: 7s"))
    runner.run("ingest")
    runner.run("ingest")
    changes = [e for e in vault.audit.entries() if e.action == "policy.changed"]
    assert len(changes) == 2 and changes[1].details["changed"] == ["schedules.yaml"]
    # a broken edit: no job runs, audited once, one line naming the file
    (pol / "schedules.yaml").write_text((pol / "schedules.yaml").read_text().replace("every: 7s", "every: often"))
    for _ in range(2):
        with pytest.raises(MemoError, match=r"schedules\.yaml:\d+: schedules\.jobs\.0\.every"):
            runner.run("ingest")
    assert actions(vault).count("policy.invalid") == 1
    # a rule that spans files: refused too
    (pol / "schedules.yaml").write_text((pol / "schedules.yaml").read_text().replace("every: often", "every: 7s")
                                        .replace("actor: memo-daemon", "actor: rita"))
    with pytest.raises(MemoError, match="policy problem, no job runs until it is fixed: .*schedules.actor: 'rita' may not operate"):
        runner.run("ingest")


def test_training_lock_excludes_other_processes(sched_env) -> None:  # noqa: ANN001
    vault, inbox, home = sched_env["vault"], sched_env["inbox"], sched_env["home"]
    write_policies(sched_env["policies"], inbox, ALL)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from appliance.scheduler.lock import TrainingLock\n"
        f"l = TrainingLock(Path({str(home / 'scheduler')!r})); l.acquire('other shell'); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(TrainingBusy, match=f"other shell, pid {holder.pid}"):
            TrainingLock(home / "scheduler").acquire("me")
        result = Runner(session_as(vault, "memo-daemon", "daemon")).run("update")
        assert result["status"] == "skipped" and "another training is running" in result["reason"]
        assert "job.skipped" in actions(vault)
    finally:
        holder.kill()
        holder.wait()
    assert Runner(session_as(vault, "memo-daemon", "daemon")).run("update")["status"] == "idle"  # the kernel dropped the dead holder's lock
    lock = TrainingLock(home / "scheduler")
    lock.acquire("a")
    with pytest.raises(TrainingBusy):  # a second thread or descriptor of the same process waits its turn too
        TrainingLock(home / "scheduler").acquire("b")
    lock.release()


def test_runs_of_dead_processes_are_interrupted(sched_env) -> None:  # noqa: ANN001
    runs = RunStore(sched_env["home"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mine = runs.start("update", "update", "scheduled", "memo-daemon")
    theirs = runs.start("retrain", "retrain", "scheduled", "memo-daemon")
    with runs._db() as db:
        db.execute("UPDATE memo_job_runs SET pid=? WHERE id=?", (dead.pid, theirs))
    rebooted = runs.start("ingest", "ingest", "scheduled", "memo-daemon")
    with runs._db() as db:
        db.execute("UPDATE memo_job_runs SET boot_id='an-earlier-boot' WHERE id=?", (rebooted,))
    found = {r["id"] for r in runs.interrupted()}
    assert found == {theirs, rebooted}
    assert runs.get(mine)["status"] == "running" and runs.get(theirs)["status"] == "interrupted"


def test_job_store_persists_schedule_pauses_and_resumes_interrupted(sched_env) -> None:  # noqa: ANN001
    vault, inbox, home = sched_env["vault"], sched_env["inbox"], sched_env["home"]
    write_policies(sched_env["policies"], inbox, ALL)

    def daemon() -> Daemon:
        d = Daemon(session_as(vault, "memo-daemon", "daemon"), log=lambda _m: None)
        d.scheduler = d._build()
        d.scheduler.start(paused=True)
        d.sync(force=True)
        return d

    d = daemon()
    jobs = {j.id: j for j in d.scheduler.get_jobs()}
    assert set(jobs) == {"ingest", "reflect", "update", "retrain", "retention"}
    assert jobs["update"].executor == "training" and jobs["ingest"].executor == "default"
    assert jobs["ingest"].coalesce and jobs["update"].misfire_grace_time == 3600
    due = jobs["retention"].next_run_time
    d.scheduler.shutdown(wait=False)
    # a new process finds the same jobs and times in the SQLite store; a pause from another shell applies
    RunStore(home).set_paused("reflect", True, "root")
    rid = RunStore(home).start("update", "update", "scheduled", "memo-daemon")
    with RunStore(home)._db() as db:
        db.execute("UPDATE memo_job_runs SET boot_id='old' WHERE id=?", (rid,))
    d = daemon()
    assert d.scheduler.get_job("retention").next_run_time == due
    assert d.scheduler.get_job("reflect").next_run_time is None  # paused
    assert [r["id"] for r in d.resume_interrupted()] == [rid]
    again = d.scheduler.get_job(f"resume-{rid}")
    assert again.kwargs == {"trigger": "resume", "resumes": rid} and again.executor == "training"
    assert "job.interrupted" in actions(vault)
    # editing the schedule replaces only the changed job
    pol = sched_env["policies"] / "schedules.yaml"
    pol.write_text(pol.read_text().replace("every: 3s", "every: 9s").replace("    - {name: retrain, task: retrain, every: 1h}\n", ""))
    d.sync()
    assert d.scheduler.get_job("retrain") is None and d.scheduler.get_job("reflect").trigger.interval == timedelta(seconds=9)
    assert d.scheduler.get_job("reflect").next_run_time is None  # still paused
    d.scheduler.remove_job(f"resume-{rid}")
    d.scheduler.shutdown(wait=False)
    assert RunStore(home).next_run_times()["retention"] == pytest.approx(due.timestamp())


def test_retention_keeps_what_serves_waits_or_rolls_back(sched_env) -> None:  # noqa: ANN001
    from appliance.memory.versions import get_version, set_status
    from appliance.scheduler.retention import apply_retention
    from appliance.policy.schema import Retention
    from tests.approvals.conftest import make_version

    vault = sched_env["vault"]
    v1 = make_version(vault)                   # retired long ago, beyond keep_retired=1
    v2 = make_version(vault, seed=1)           # retired, the most recent rollback target
    v3 = make_version(vault, seed=2)           # rejected
    v4 = make_version(vault, seed=3)           # serving
    v5 = make_version(vault, v4.id, seed=4)    # candidate built on v4 (a sequential update)
    for v, status in ((v1, "retired"), (v2, "retired"), (v3, "rejected"), (v4, "promoted"), (v5, "candidate")):
        set_status(vault, v.id, status)
    rules = Retention.model_validate({"memory_versions": {"keep_retired": 1, "delete_after": "1d"},
                                      "audit": {"archive_every": "7d"}})
    assert apply_retention(vault, rules, "memo-daemon")["memory_versions_pruned"] == []  # all younger than a day
    later = datetime.now(timezone.utc) + timedelta(days=2)
    result = apply_retention(vault, rules, "memo-daemon", now=later)
    assert sorted(result["memory_versions_pruned"]) == sorted([v1.id, v3.id])
    names = set(vault.file_names())
    for v in (v2, v4, v5):
        assert f"memory/{v.id}/adapter.safetensors" in names
    for v in (v1, v3):
        assert not any(n.startswith(f"memory/{v.id}/") for n in names)
        assert get_version(vault, v.id).metrics["pruned"]["by"] == "memo-daemon"  # the record stays
    assert result["audit_archive"] is None  # archived by the first run, not due again
    archives = list((sched_env["home"] / "archive" / "audit").iterdir())
    assert len(archives) == 1 and (archives[0] / "log.jsonl").exists()
    from appliance.audit.log import AuditLog
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    pub = load_pem_public_key((archives[0] / "public-key.pem").read_bytes())
    assert AuditLog(archives[0], pub).verify().ok  # the archive verifies with the public key alone
    assert "retention.memory" in actions(vault) and "audit.archive" in actions(vault)


def test_stale_reflections_are_deleted_after_their_time(sched_env, tmp_path: Path) -> None:  # noqa: ANN001
    from appliance.corpus.documents import list_documents
    from appliance.corpus.ingest import ingest
    from appliance.reflect.store import ReflectionUnit, save_unit, unit_ids_on_disk
    from appliance.scheduler.retention import prune_reflections

    vault = sched_env["vault"]
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nAlpha costs 9 EUR.\n")
    ingest(vault, [docs])
    with vault.read() as db:
        old_oid = db.execute("SELECT oid FROM chunks").fetchone()["oid"]
    doc = list_documents(vault)[0].id
    then = (datetime.now(timezone.utc) - timedelta(days=40)).isoformat()
    for uid, oid in (("u-old", old_oid),):
        save_unit(vault, ReflectionUnit(unit_id=uid, unit_kind="chunk", doc_ids=[doc], chunk_oids=[oid], generator="g",
                                        prompt_version="p", created_at=then, pairs=[]))
    assert prune_reflections(vault, 30 * 86400, "memo-daemon") == 0  # still current content
    (docs / "a.md").write_text("# A\n\nAlpha costs 12 EUR from May.\n")
    ingest(vault, [docs])
    with vault.read() as db:
        new_oid = db.execute("SELECT c.oid FROM chunks c JOIN versions v USING (doc_id, version) WHERE v.status='current'").fetchone()["oid"]
    save_unit(vault, ReflectionUnit(unit_id="u-new", unit_kind="chunk", doc_ids=[doc], chunk_oids=[new_oid], generator="g",
                                    prompt_version="p", created_at=then, pairs=[]))
    assert prune_reflections(vault, 60 * 86400, "memo-daemon") == 0  # stale, but not old enough yet
    assert prune_reflections(vault, 30 * 86400, "memo-daemon") == 1
    assert unit_ids_on_disk(vault) == {"u-new"}


def test_cli_jobs_list_run_pause_history(sched_env, cli_env: dict[str, str]) -> None:  # noqa: ANN001
    inbox, home = sched_env["inbox"], sched_env["home"]
    write_policies(sched_env["policies"], inbox, ALL)
    session_as(sched_env["vault"], "rita")  # rita (a reader) gets her own slot
    env = {**cli_env, "MEMO_HOME": str(home), "MEMO_POLICIES": str(sched_env["policies"])}  # pinned by the first open
    secrets = {"root": cli_env["MEMO_PASSPHRASE"], "rita": passphrase_of("rita")}

    def memo(*args: str, actor: str = "root") -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "appliance.cli", *args],
                              env={**env, "MEMO_USER": actor, "MEMO_PASSPHRASE": secrets[actor]}, capture_output=True, text=True)

    (inbox / "a.md").write_text("# A\n\nAlpha.\n")
    run = memo("jobs", "run", "ingest")
    assert run.returncode == 0 and run.stdout.strip() == "ingest: succeeded", run.stderr
    assert memo("jobs", "pause", "reflect").returncode == 0
    rows = {r["name"]: r for r in json.loads(memo("jobs", "list", "--json").stdout)}
    assert rows["reflect"]["state"] == "paused" and rows["ingest"]["last"]["status"] == "succeeded"
    hist = json.loads(memo("jobs", "history", "--json").stdout)
    assert hist[0]["trigger"] == "manual" and hist[0]["actor"] == "root"
    denied = memo("jobs", "run", "ingest", actor="rita")
    assert denied.returncode == 1 and "'rita' may not operate" in denied.stderr and len(denied.stderr.strip().splitlines()) == 1
    assert memo("jobs", "resume", "reflect").returncode == 0
    assert memo("daemon", actor="rita").returncode == 1


def test_missed_runs_follow_coalesce_and_misfire_grace(sched_env) -> None:  # noqa: ANN001
    import appliance.scheduler.daemon as dmod

    vault, inbox, home = sched_env["vault"], sched_env["inbox"], sched_env["home"]
    write_policies(sched_env["policies"], inbox,
                   "    - {name: ingest, task: ingest, every: 1h, coalesce: true, misfire_grace: null}\n"
                   "    - {name: late, task: ingest, every: 1h, misfire_grace: 5s}\n")
    d = Daemon(session_as(vault, "memo-daemon", "daemon"), log=lambda _m: None)
    d.scheduler = d._build()
    d.scheduler.start(paused=True)
    d.sync(force=True)
    three_hours_ago = datetime.now(timezone.utc) - timedelta(hours=3, minutes=1)
    for name in ("ingest", "late"):  # the appliance was off for three hours: three slots of each missed
        d.scheduler.modify_job(name, next_run_time=three_hours_ago)
    d.scheduler.shutdown(wait=False)
    d = Daemon(session_as(vault, "memo-daemon", "daemon"), log=lambda _m: None)
    d.scheduler = d._build()
    dmod._DAEMON = d
    try:
        d.scheduler.start()
        d.sync(force=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(RunStore(home).history(limit=10)) < 2:
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        d.scheduler.shutdown(wait=True)
        dmod._DAEMON = None
    hist = RunStore(home).history(limit=10)
    assert sorted((h["job"], h["status"]) for h in hist) == [("ingest", "idle"), ("late", "missed")]  # coalesced: once
    assert [e.target for e in vault.audit.entries() if e.action == "job.missed"] == ["late"]
    assert RunStore(home).next_run_times()["late"] > time.time()


def test_one_daemon_per_home(sched_env) -> None:  # noqa: ANN001
    vault = sched_env["vault"]
    (sched_env["home"] / "scheduler").mkdir(exist_ok=True)
    first = Daemon(session_as(vault, "memo-daemon", "daemon"), log=lambda _m: None)
    first._claim()
    with pytest.raises(MemoError, match=f"a memo daemon already runs for .* \\(pid {os.getpid()}\\)"):
        Daemon(session_as(vault, "memo-daemon", "daemon"), log=lambda _m: None)._claim()
