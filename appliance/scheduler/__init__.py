"""The appliance keeps itself current: scheduled jobs (APScheduler 3, persistent SQLite job store).

Jobs come from ``policies/schedules.yaml`` and are re-read before every run (no restart):

* ``ingest``    new files in the inbox folder → the vault (then deleted or moved from the inbox);
* ``reflect``   reflections for documents that have none for their current content;
* ``update``    the update adapter for new documents, merged into the serving memory → a candidate
                in the approval queue (appliance.memory.update);
* ``retrain``   a full retrain from the base on every reflection (the longer cycle; also the very
                first memory) → a candidate;
* ``retention`` old memory versions' weights and stale reflections deleted, the audit log archived.

Trainings (update, retrain, retention) never overlap, in one process or across processes
(:mod:`appliance.scheduler.lock`). Every run is recorded (:mod:`appliance.scheduler.runs`); a run
left ``running`` by a process that died (crash, kill, reboot) is re-run when the daemon starts,
and training resumes from its last encrypted checkpoint.
"""

from appliance.scheduler.lock import TrainingBusy, TrainingLock
from appliance.scheduler.runs import RunStore, scheduler_dir

__all__ = ["RunStore", "TrainingBusy", "TrainingLock", "scheduler_dir"]
