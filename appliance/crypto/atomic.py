"""Crash-safe file writes: a reader sees the old file or the new one, never a torn one."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

TMP_MARK = ".tmp-"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o600, durable: bool = True) -> None:
    """Write to a temp file in the same directory, fsync, rename over, fsync the directory.

    ``durable=False`` skips both fsyncs for bulk writes that a later ``os.sync()`` makes durable
    before anything refers to them (a kill cannot tear them either way: rename is atomic).
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.parent / f"{TMP_MARK}{path.name}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)


def remove_stale_temps(root: Path) -> int:
    """Delete temp files left by a killed writer (they hold ciphertext only)."""
    removed = 0
    for p in root.rglob(f"{TMP_MARK}*"):
        try:
            p.unlink()
            removed += 1
        except FileNotFoundError:
            pass
    return removed
