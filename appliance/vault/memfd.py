"""Anonymous in-memory files: where decrypted or freshly exported weights live, never on a disk.

A sealed memfd is immutable, so the bytes that were hashed are the bytes llama.cpp then reads
from ``/proc/self/fd/N``.
"""

from __future__ import annotations

import fcntl
import hashlib
import os

_CHUNK = 1 << 20


def create(name: str) -> int:
    flags = os.MFD_CLOEXEC | getattr(os, "MFD_ALLOW_SEALING", 0)
    return os.memfd_create(f"memo-{name}", flags)


def seal(fd: int) -> None:
    seals = 0
    for flag in ("F_SEAL_SEAL", "F_SEAL_SHRINK", "F_SEAL_GROW", "F_SEAL_WRITE"):
        seals |= getattr(fcntl, flag, 0)
    if seals and hasattr(fcntl, "F_ADD_SEALS"):
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def sha256_fd(fd: int) -> tuple[str, int]:
    """Hash an open file from its start (by offset, so the fd's position is untouched)."""
    h = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, _CHUNK, offset):
        h.update(chunk)
        offset += len(chunk)
    return h.hexdigest(), offset
