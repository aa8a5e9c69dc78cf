"""One training at a time on this appliance: an ``fcntl`` lock on ``<home>/scheduler/training.lock``.

The lock is held by an open file description, so it excludes other threads of the daemon, a
``memo jobs run`` in another shell, and anything else that takes it; the kernel drops it when the
holder dies, so a crash never leaves it stuck. The file holds the holder's pid and job (for messages).
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from appliance.errors import MemoError


class TrainingBusy(MemoError):
    """Another training holds the lock."""


class TrainingLock:
    def __init__(self, directory: Path, name: str = "training.lock") -> None:
        self.path = directory / name
        self._fd: int | None = None

    def holder(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self, what: str) -> None:
        """Take the lock or raise :class:`TrainingBusy` at once (never waits)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            h = self.holder()
            raise TrainingBusy(f"another training is running ({h.get('job', '?')}, pid {h.get('pid', '?')}); "
                               "wait for it to finish or pause its job") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "job": what}).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "TrainingLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
