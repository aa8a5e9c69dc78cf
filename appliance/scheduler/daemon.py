"""``memo daemon``: APScheduler (3.x) running the policy's jobs, with a persistent SQLite job store.

A door: each run goes through :class:`appliance.app.jobs.Runner` as the daemon's session — the
principal whose slot (the service account's key file) unlocked the vault, which must be the
policy's ``schedules.actor`` and may do exactly what its roles grant.

The :class:`Daemon` keeps APScheduler's jobs in step with ``schedules.yaml`` (polled every few
seconds), applies pauses made from other shells, re-runs at start-up every run a dead process left
``running`` (training resumes from its checkpoint), and audits missed runs. Missed runs follow
the job's ``coalesce`` and ``misfire_grace`` (APScheduler's own semantics). Training jobs go to
a one-thread executor; the cross-process training lock covers other shells. It keeps a witness
of the audit head outside the vault (:mod:`appliance.audit.witness`): a vault put back to an
older state, even a consistent one, stops it from starting and fails every job until a person looks.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from appliance.app.jobs import Runner, daemon_may_start, job_spec
from appliance.app.session import Session
from appliance.app.tasks import TRAINING_TASKS
from appliance.audit.witness import Witness
from appliance.errors import IntegrityError, MemoError
from appliance.policy import Job
from appliance.scheduler.runs import scheduler_dir

POLL_S = 2.0
_DAEMON: "Daemon | None" = None


# ---------------------------------------------------------------------- the scheduler
def scheduled(name: str, trigger: str = "scheduled", resumes: int | None = None, sig: str | None = None) -> None:
    """APScheduler's entry point (a textual reference in the job store, so jobs survive restarts)."""
    daemon = _DAEMON
    if daemon is None:  # a job store opened by some other process: never run there
        return
    try:
        daemon.runner.run(name, trigger, resumes)
    except Exception:  # recorded and audited by the runner; the scheduler carries on
        pass


def _signature(job: Job) -> str:
    return json.dumps(job.model_dump(exclude={"name", "enabled"}), sort_keys=True)


class Daemon:
    def __init__(self, session: Session, log: Callable[[str], None] | None = None) -> None:
        self.session = session
        self.vault = vault = session.vault
        self.actor = session.principal
        self.log = log or (lambda m: print(m, flush=True))
        self.witness = Witness.for_vault(vault.home, vault.keyring.vault_id)
        self.runner = Runner(session, log=self.log, witness=self.witness)
        self.runs = self.runner.runs
        self._rollback: str | None = None
        self.stop = threading.Event()
        self._digest: str | None = None
        self._paused: set[str] = set()
        self._fd: int | None = None
        self.scheduler: Any = None

    # ------------------------------------------------------------------ singleton
    def _claim(self) -> None:
        path = scheduler_dir(self.vault.home) / "daemon.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = path.read_text().strip() or "?"
            raise MemoError(f"a memo daemon already runs for {self.vault.home} (pid {pid}); stop it first") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    # ------------------------------------------------------------------ jobs from policy
    def _build(self) -> Any:
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
        import logging

        # APScheduler warns on every tick a long training makes it skip (max_instances=1) and on
        # missed runs; the first is expected, the second is audited by _missed: errors only
        logging.getLogger("apscheduler").setLevel(logging.ERROR)
        scheduler = _Scheduler(
            jobstores={"default": SQLAlchemyJobStore(url=self.runs.url)},
            executors={"default": ThreadPoolExecutor(1), "training": ThreadPoolExecutor(1)},
            job_defaults={"max_instances": 1},
            timezone="UTC",
        )
        from apscheduler.events import EVENT_JOB_MISSED

        scheduler.add_listener(self._missed, EVENT_JOB_MISSED)
        return scheduler

    def _missed(self, event: Any) -> None:
        name, task = event.job_id, "?"
        try:
            task = job_spec(self.runner.policy(), name).task
        except MemoError:
            pass
        self.runs.record(name, task, "missed", self.actor, error=f"run due at {event.scheduled_run_time} was missed")
        self.vault.audit.append(self.actor, "job.missed", name, due=str(event.scheduled_run_time))
        self.log(f"{name}: missed the run due at {event.scheduled_run_time}")

    def _trigger(self, job: Job) -> Any:
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        if job.cron:
            return CronTrigger.from_crontab(job.cron, timezone=_local_tz())
        return IntervalTrigger(seconds=job.every, jitter=job.jitter or None, timezone="UTC")

    def sync(self, force: bool = False) -> None:
        """Make the job store match ``schedules.yaml``; unchanged jobs keep their next run time."""
        try:
            policy = self.runner.policy()
        except MemoError:
            return  # audited by the runner; the jobs stay as they were and every run refuses
        if policy.digest == self._digest and not force:
            return
        self._digest = policy.digest
        wanted = {j.name: j for j in (policy.schedules.jobs if policy.schedules else []) if j.enabled}
        for existing in self.scheduler.get_jobs():
            if existing.id not in wanted and not existing.id.startswith("resume-"):
                existing.remove()
                self.log(f"{existing.id}: removed (no longer in the policy)")
        for name, job in wanted.items():
            sig = _signature(job)
            existing = self.scheduler.get_job(name)
            if existing is not None and existing.kwargs.get("sig") == sig:
                continue
            self.scheduler.add_job(scheduled, self._trigger(job), args=[name], kwargs={"sig": sig}, id=name, name=name,
                                   replace_existing=True, coalesce=job.coalesce, misfire_grace_time=job.misfire_grace,
                                   max_instances=1, executor="training" if job.task in TRAINING_TASKS else "default")
            self.log(f"{name}: scheduled ({job.task}, {'every ' + str(job.every) + 's' if job.every else 'cron ' + str(job.cron)})")
        self._paused = set()
        self.apply_pauses()

    def apply_pauses(self) -> None:
        paused = self.runs.paused()
        for name in paused - self._paused:
            if self.scheduler.get_job(name):
                self.scheduler.pause_job(name)
                self.log(f"{name}: paused")
        for name in self._paused - paused:
            if self.scheduler.get_job(name):
                self.scheduler.resume_job(name)
                self.log(f"{name}: resumed")
        self._paused = paused

    def resume_interrupted(self) -> list[dict[str, Any]]:
        """Runs a dead process left ``running``: audited, and run again now (training resumes from its checkpoint)."""
        dead = self.runs.interrupted()
        for r in dead:
            self.vault.audit.append(self.actor, "job.interrupted", r["job"], run=r["id"], pid=r["pid"], started_at=r["started_at"],
                                    progress=r["progress"])
            self.log(f"{r['job']}: run {r['id']} was interrupted (pid {r['pid']} gone); running it again")
            executor = "training" if r["task"] in TRAINING_TASKS else "default"
            self.scheduler.add_job(scheduled, "date", run_date=datetime.now(timezone.utc), args=[r["job"]],
                                   kwargs={"trigger": "resume", "resumes": r["id"]}, id=f"resume-{r['id']}",
                                   replace_existing=True, misfire_grace_time=None, executor=executor)
        if dead:  # the re-runs go first: regular runs due now (missed while down) wait a moment behind them
            later = datetime.now(timezone.utc) + timedelta(seconds=2)
            for job in self.scheduler.get_jobs():
                if not job.id.startswith("resume-") and job.next_run_time is not None and job.next_run_time < later:
                    job.modify(next_run_time=later)
        return dead

    # ------------------------------------------------------------------ witness
    def check_witness(self) -> None:
        """At start: refuse to run on a vault older than the last one this daemon saw (audited)."""
        try:
            self.witness.advance(self.vault.audit)
        except IntegrityError as exc:
            self.vault.audit.append(self.actor, "daemon.refused", None, reason=str(exc), witness=str(self.witness.path))
            raise IntegrityError(f"{exc} (if the vault was restored on purpose, remove {self.witness.path} to accept it)") from None

    def _watch(self) -> None:
        """Every poll: remember the newest head; a rollback while running is audited once."""
        try:
            self.witness.advance(self.vault.audit)
        except MemoError as exc:
            if str(exc) != self._rollback:
                self._rollback = str(exc)
                self.log(f"integrity: {exc}; no job runs until this is resolved")
                try:
                    self.vault.audit.append(self.actor, "integrity.rollback", None, problem=str(exc),
                                            witness=str(self.witness.path))
                except MemoError:
                    pass  # the log itself may be what was damaged; the daemon's own log line stands

    # ------------------------------------------------------------------ main loop
    def run(self, exit_after: float | None = None) -> None:
        global _DAEMON
        os.umask(0o077)
        daemon_may_start(self.session)
        self._claim()
        self.check_witness()
        _DAEMON = self
        from appliance.memory.train import device

        self.scheduler = self._build()
        self.scheduler.start(paused=True)
        self.vault.audit.append(self.actor, "daemon.start", None, pid=os.getpid(), device=device())
        self.log(f"memo daemon: pid {os.getpid()}, home {self.vault.home}, training on {device()}, witness {self.witness.path}")
        self.sync(force=True)
        self.resume_interrupted()
        self.scheduler.resume()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop.set())
        started = time.monotonic()
        try:
            while not self.stop.wait(POLL_S):
                self._watch()
                self.sync()
                self.apply_pauses()
                if exit_after is not None and time.monotonic() - started >= exit_after:
                    break
        finally:
            running = [r["job"] for r in self.runs.running() if r["pid"] == os.getpid()]
            self.scheduler.shutdown(wait=False)
            self.vault.audit.append(self.actor, "daemon.stop", None, pid=os.getpid(), running=running)
            self.log(f"memo daemon: stopped{' (interrupted: ' + ', '.join(running) + '; resumed at next start)' if running else ''}")
            _DAEMON = None
            sys.stdout.flush()
            if running:
                os._exit(0)  # a training thread cannot be stopped from outside; its checkpoint resumes it


def _scheduler_class() -> type:
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.schedulers.base import STATE_STOPPED

    class Scheduler(BackgroundScheduler):
        def _process_jobs(self):  # noqa: ANN202
            # APScheduler 3 wakes its thread once more after shutdown() and would hand due runs to
            # executors already shut down, advancing their next run time: those runs would be lost
            if self.state == STATE_STOPPED:
                return None
            return super()._process_jobs()

    return Scheduler


def _Scheduler(**kwargs: Any) -> Any:  # noqa: N802
    return _scheduler_class()(**kwargs)


def _local_tz() -> Any:
    try:
        from tzlocal import get_localzone

        return get_localzone()
    except Exception:
        return "UTC"
