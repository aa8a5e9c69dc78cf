"""Job runs and job state, in ``<home>/scheduler/jobs.sqlite`` beside APScheduler's job store.

Only metadata lives here (job names, times, status, pid, counts, one-line errors): no document
text, no reflections. The file is created 0600 in a 0700 directory. A run is ``running`` while its
process works on it; one whose process is gone (other pid dead, or another boot) was interrupted.
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS memo_job_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job TEXT NOT NULL,
    task TEXT NOT NULL,
    trigger TEXT NOT NULL,
    status TEXT NOT NULL,
    pid INTEGER NOT NULL,
    boot_id TEXT NOT NULL,
    actor TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    progress TEXT,
    summary TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    resumes INTEGER
);
CREATE INDEX IF NOT EXISTS memo_job_runs_job ON memo_job_runs(job, id);
CREATE TABLE IF NOT EXISTS memo_job_state (job TEXT PRIMARY KEY, paused INTEGER NOT NULL DEFAULT 0, changed_at TEXT, changed_by TEXT);
"""
FINAL = ("succeeded", "idle", "skipped", "failed", "interrupted", "missed")


def scheduler_dir(home: Path) -> Path:
    return home / "scheduler"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (killed child not yet reaped) is dead for our purpose
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def ensure_private_file(path: Path) -> None:
    """Create ``path`` (and its directory) private to the service user before any library opens it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


class RunStore:
    def __init__(self, home: Path) -> None:
        self.path = scheduler_dir(home) / "jobs.sqlite"
        ensure_private_file(self.path)
        with self._db() as db:
            db.executescript(SCHEMA)

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the same file, for APScheduler's job store."""
        return f"sqlite:///{self.path}"

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        old = os.umask(0o077)  # the journal file too
        try:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        finally:
            os.umask(old)
        db.row_factory = sqlite3.Row
        try:
            yield db
        finally:
            db.close()

    # ------------------------------------------------------------------ runs
    def start(self, job: str, task: str, trigger: str, actor: str, resumes: int | None = None) -> int:
        with self._db() as db:
            cur = db.execute("INSERT INTO memo_job_runs (job, task, trigger, status, pid, boot_id, actor, started_at, resumes) "
                             "VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?)",
                             (job, task, trigger, os.getpid(), boot_id(), actor, now(), resumes))
            return int(cur.lastrowid)

    def progress(self, run_id: int, text: str) -> None:
        with self._db() as db:
            db.execute("UPDATE memo_job_runs SET progress=? WHERE id=?", (text, run_id))

    def finish(self, run_id: int, status: str, summary: dict[str, Any] | None = None, error: str | None = None) -> None:
        assert status in FINAL
        with self._db() as db:
            db.execute("UPDATE memo_job_runs SET status=?, finished_at=?, summary=?, error=? WHERE id=?",
                       (status, now(), json.dumps(summary or {}, default=str), error, run_id))

    def record(self, job: str, task: str, status: str, actor: str, error: str | None = None) -> int:
        """A run that never started (missed, or refused before its task began)."""
        rid = self.start(job, task, "scheduled", actor)
        self.finish(rid, status, error=error)
        return rid

    def get(self, run_id: int) -> dict[str, Any] | None:
        with self._db() as db:
            r = db.execute("SELECT * FROM memo_job_runs WHERE id=?", (run_id,)).fetchone()
        return _row(r) if r else None

    def history(self, job: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        with self._db() as db:
            if job:
                rows = db.execute("SELECT * FROM memo_job_runs WHERE job=? ORDER BY id DESC LIMIT ?", (job, limit))
            else:
                rows = db.execute("SELECT * FROM memo_job_runs ORDER BY id DESC LIMIT ?", (limit,))
            return [_row(r) for r in rows]

    def last(self, job: str) -> dict[str, Any] | None:
        got = self.history(job, 1)
        return got[0] if got else None

    def running(self) -> list[dict[str, Any]]:
        with self._db() as db:
            return [_row(r) for r in db.execute("SELECT * FROM memo_job_runs WHERE status='running' ORDER BY id")]

    def interrupted(self) -> list[dict[str, Any]]:
        """Runs still marked running whose process is gone (crash, kill, reboot); marks them interrupted."""
        me, boot = os.getpid(), boot_id()
        dead = [r for r in self.running()
                if r["boot_id"] != boot or (r["pid"] != me and not pid_alive(r["pid"]))]
        for r in dead:
            self.finish(r["id"], "interrupted", error=f"process {r['pid']} ended while the run was in progress")
        return dead

    def prune(self, keep: int = 5000) -> int:
        with self._db() as db:
            cur = db.execute("DELETE FROM memo_job_runs WHERE status != 'running' AND id <= "
                             "(SELECT COALESCE(MAX(id), 0) - ? FROM memo_job_runs)", (keep,))
            return cur.rowcount

    # ------------------------------------------------------------------ pause / resume
    def set_paused(self, job: str, paused: bool, actor: str) -> None:
        with self._db() as db:
            db.execute("INSERT INTO memo_job_state (job, paused, changed_at, changed_by) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT(job) DO UPDATE SET paused=excluded.paused, changed_at=excluded.changed_at, "
                       "changed_by=excluded.changed_by", (job, int(paused), now(), actor))

    def paused(self) -> set[str]:
        with self._db() as db:
            return {r["job"] for r in db.execute("SELECT job FROM memo_job_state WHERE paused=1")}

    def next_run_times(self) -> dict[str, float | None]:
        """Job id → next run (epoch seconds) from APScheduler's table, read without unpickling."""
        with self._db() as db:
            try:
                return {r["id"]: r["next_run_time"] for r in db.execute("SELECT id, next_run_time FROM apscheduler_jobs")}
            except sqlite3.OperationalError:  # no daemon has run yet
                return {}


def _row(r: sqlite3.Row) -> dict[str, Any]:
    d = dict(r)
    d["summary"] = json.loads(d["summary"] or "{}")
    return d
