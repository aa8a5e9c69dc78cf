"""Scheduled jobs: one run of a job (for the daemon and for ``memo jobs run``), pausing and
resuming, the schedule and the history.

A run re-reads the policy set in force first (a change is audited and takes effect at once),
checks the principal may run jobs — and, for a scheduled run, that it is the policy's daemon
account (``schedules.actor``) — records the run, takes the training lock for training tasks, and
audits ``job.start`` / ``job.finish`` / ``job.failed`` / ``job.skipped``; a refused run is audited
as ``job.refused``. What the job does (:mod:`appliance.app.tasks`) is use cases of this layer, so
the job may do exactly what its principal may.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from appliance.actor import acting
from appliance.app.session import Session, use
from appliance.app.tasks import TASKS, TRAINING_TASKS, TaskContext
from appliance.audit.witness import Witness
from appliance.errors import MemoError
from appliance.policy import Job, Policy, problems
from appliance.policy.audit import note_invalid, note_policy
from appliance.scheduler.lock import TrainingBusy, TrainingLock
from appliance.scheduler.runs import RunStore, scheduler_dir

SCHEDULED_TRIGGERS = ("scheduled", "resume")  # runs the daemon starts on its own: only as the policy's daemon account


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, MemoError) else f"{type(exc).__name__}: {text}"[:500]


def job_spec(policy: Policy, name: str) -> Job:
    """The job ``name`` of the policy in force, or one line naming the file and the jobs there are."""
    if policy.schedules is None:
        raise MemoError(f"no schedules section in {policy.directory}; add schedules.yaml (see the shipped one)")
    for job in policy.schedules.jobs:
        if job.name == name:
            return job
    names = ", ".join(j.name for j in policy.schedules.jobs) or "none"
    raise MemoError(f"no job named {name!r} in {policy.origin.get('schedules')} (jobs: {names})")


class Runner:
    """Runs jobs as one session's principal; the daemon's also checks its witness before each run."""

    def __init__(self, session: Session, log: Callable[[str], None] | None = None, witness: Witness | None = None) -> None:
        self.session = session
        self.vault = session.vault
        self.witness = witness  # the daemon's: checked (and advanced) before every run
        self.runs = RunStore(self.vault.home)
        self.lock = TrainingLock(scheduler_dir(self.vault.home))
        self.log = log or (lambda _m: None)
        self._lock_guard = threading.Lock()

    @property
    def actor(self) -> str:
        return self.session.principal

    def policy(self) -> Policy:
        """The policy set in force (re-read every time), audited when it changed."""
        try:
            policy = self.session.policy()
        except MemoError as exc:
            if note_invalid(self.vault, str(exc), self.actor):
                self.log(f"policy invalid: {exc}")
            raise
        if note_policy(self.vault, policy, self.actor):
            self.log(f"policy set {policy.digest[:12]} in force ({', '.join(sorted(policy.file_digests))})")
        return policy

    def _refuse(self, name: str, trigger: str, policy: Policy) -> None:
        """Raise (after auditing ``job.refused``) unless this principal may run ``name`` now."""
        found = problems(policy)
        reason = None
        if found:
            reason = f"policy problem, no job runs until it is fixed: {found[0]}"
        elif not self.session.may("jobs.run", policy):
            roles = ", ".join(sorted(policy.roles(self.actor))) or "no roles"
            reason = (f"{self.actor!r} may not operate ({roles}): jobs need the operator or admin role; an administrator "
                      f"gives it in {policy.origin.get(f'principal:{self.actor}') or policy.directory / 'access.yaml'} "
                      "and pins it (`memo policy pin`)")
        elif trigger in SCHEDULED_TRIGGERS and policy.schedules is not None and policy.schedules.actor != self.actor:
            reason = (f"scheduled runs are the daemon account's ({policy.schedules.actor}, schedules.actor), but "
                      f"{self.actor} unlocked: run the daemon with {policy.schedules.actor}'s key file")
        if reason:
            self.vault.audit.append(self.actor, "job.refused", name, trigger=trigger, reason=reason[:500])
            raise MemoError(reason)

    def run(self, name: str, trigger: str = "scheduled", resumes: int | None = None) -> dict[str, Any]:
        with acting(self.actor):
            return self._run(name, trigger, resumes)

    def _run(self, name: str, trigger: str, resumes: int | None) -> dict[str, Any]:
        policy = self.policy()
        job = job_spec(policy, name)
        self._refuse(name, trigger, policy)
        actor = self.actor
        if trigger == "scheduled" and name in self.runs.paused():
            return {"status": "paused"}
        run_id = self.runs.start(name, job.task, trigger, actor, resumes)
        began: dict[str, Any] = {}
        audit = self.vault.audit

        def begin(**details: Any) -> None:
            if not began:
                began.update(details)
                audit.append(actor, "job.start", name, run=run_id, task=job.task, trigger=trigger, resumes=resumes,
                             policy=policy.digest, **details)
                self.log(f"{name}: started (run {run_id}, {trigger})")

        ctx = TaskContext(self.session, policy, begin, lambda text: self.runs.progress(run_id, text))
        locked = False
        try:
            if self.witness is not None:
                self.witness.advance(self.vault.audit)  # a rolled-back vault runs nothing
            if job.task in TRAINING_TASKS:
                with self._lock_guard:  # one thread of this process at a time asks for the lock
                    self.lock.acquire(f"{name} run {run_id}")
                locked = True
            summary = TASKS[job.task](ctx)
        except TrainingBusy as exc:
            self.runs.finish(run_id, "skipped", error=str(exc))
            audit.append(actor, "job.skipped", name, run=run_id, reason=str(exc))
            self.log(f"{name}: skipped ({exc})")
            return {"run": run_id, "status": "skipped", "reason": str(exc)}
        except BaseException as exc:
            line = one_line(exc)
            self.runs.finish(run_id, "failed", error=line)
            audit.append(actor, "job.failed", name, run=run_id, task=job.task, error=line)
            self.log(f"{name}: failed: {line}")
            raise
        finally:
            if locked:
                self.lock.release()
        status = "succeeded" if summary.get("did") else "idle"
        self.runs.finish(run_id, status, summary)
        if began or summary.get("did"):
            audit.append(actor, "job.finish", name, run=run_id, task=job.task,
                         **{k: v for k, v in summary.items() if k in ("candidate", "documents", "files", "added", "new_version",
                                                                       "pairs", "memory_versions_pruned",
                                                                       "reflection_units_deleted", "audit_archive")})
            self.log(f"{name}: {status} (run {run_id})")
        return {"run": run_id, "status": status, **summary}


def run(session: Session, name: str, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run a job now, as this session's principal (``jobs.run``: refused runs audited as ``job.refused``)."""
    return Runner(session, log).run(name, "manual")


@use("jobs.pause")
def set_paused(session: Session, name: str, paused: bool) -> str:
    """Pause or resume a job (survives restarts; a running daemon applies it within seconds); audited."""
    policy = session.policy()
    job_spec(policy, name)
    note_policy(session.vault, policy, session.principal)
    RunStore(session.vault.home).set_paused(name, paused, session.principal)
    session.vault.audit.append(session.principal, "job.pause" if paused else "job.resume", name, channel=session.channel)
    return f"{name}: {'paused (a running daemon applies it within seconds)' if paused else 'resumed'}"


@use("jobs.list")
def jobs(session: Session) -> list[dict[str, Any]]:
    """The policy's jobs with their schedule, state (scheduled, paused, running + progress), next and last run."""
    policy = session.policy()
    runs = RunStore(session.vault.home)
    paused, nxt = runs.paused(), runs.next_run_times()
    running = {r["job"]: r for r in runs.running()}
    rows = []
    for j in policy.schedules.jobs if policy.schedules else []:
        last = runs.last(j.name)
        when = nxt.get(j.name)
        rows.append({"name": j.name, "task": j.task, "schedule": f"every {j.every}s" if j.every else f"cron {j.cron}",
                     "state": "disabled" if not j.enabled else "paused" if j.name in paused else
                     "running" if j.name in running else "scheduled",
                     "next_run": datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="seconds") if when else None,
                     "progress": running[j.name]["progress"] if j.name in running else None,
                     "last": {k: last[k] for k in ("id", "status", "started_at", "finished_at", "error")} if last else None})
    return rows


@use("jobs.list")
def history(session: Session, job: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """Past runs: trigger (scheduled, manual, resume), status, times, one-line error."""
    return RunStore(session.vault.home).history(job, limit)


@use("daemon")
def daemon_may_start(session: Session) -> Policy:
    """The daemon runs as the policy's daemon account only (``schedules.actor``): a daemon unlocked
    with anyone else's secret is refused (audited as ``daemon.refused``)."""
    policy = session.policy()
    if policy.schedules is not None and policy.schedules.actor != session.principal:
        reason = (f"the daemon runs as {policy.schedules.actor} (schedules.actor in {policy.origin.get('schedules')}), "
                  f"not as {session.principal}: unlock it with {policy.schedules.actor}'s key file")
        session.vault.audit.append(session.principal, "daemon.refused", None, reason=reason)
        raise MemoError(reason)
    return policy
