"""Parse untrusted files in worker processes: a hostile file costs its own worker, never the run.

A parser fed a file built to hurt it can hang, balloon or crash (a zip bomb, a PDF that loops, a
C library that faults). So ingest hands each file's bytes to a long-lived worker process, which
runs :func:`appliance.corpus.readers.extract` under limits:

* wall time per file (:meth:`ParseLimits.timeout`): past it the worker is killed and replaced;
* address space (``RLIMIT_AS``: the worker's size after its imports plus ``memory_mib``), so an
  allocation fails inside the worker (a one-line reason) instead of swapping the machine;
* no core dumps, no file writes (``RLIMIT_FSIZE`` 0), few descriptors, no new privileges, killed
  with its parent; started with ``python -I`` and an environment holding no ``MEMO_*`` secret,
  and never forked from the parent, so no vault key is in its memory;
* its answer is data, never code: length-prefixed JSON and UTF-8 text, checked against the
  limits before the parent uses it (a compromised worker can lie about a file, not escape).

Workers are reused across files (a fresh interpreter per file would cost ~0.3 s each) and
replaced after any failure that may have left them damaged.
"""

from __future__ import annotations

import json
import os
import queue
import select
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from appliance.corpus.limits import MIB, ParseLimits
from appliance.corpus.readers import MEDIA_TYPES, Extracted, UnreadableInput

_LEN = struct.Struct(">Q")
MAX_HEADER = 64 * 1024
STARTUP_S = 120.0  # a worker's imports, on a loaded machine
_ROOT = Path(__file__).resolve().parents[2]  # the directory holding the `appliance` package
_BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); "
         "from appliance.corpus.sandbox import serve; serve(int(sys.argv[2]))")


def default_workers() -> int:
    """One worker per core the ingest loop (hashing, encryption) leaves free: 1 on 2 cores."""
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def one_line(text: str, limit: int = 500) -> str:
    return " ".join(text.split())[:limit]


class _Died(Exception):
    """The worker closed its pipe: it crashed, or it was killed for running over."""


class _TimedOut(Exception):
    pass


# ------------------------------------------------------------------------------ worker side
def _read_exact(fd: int, n: int) -> bytes | None:
    parts, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            return None
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _frame(data: bytes) -> bytes:
    return _LEN.pack(len(data)) + data


def _read_frame(fd: int) -> bytes | None:
    head = _read_exact(fd, _LEN.size)
    if head is None:
        return None
    return _read_exact(fd, _LEN.unpack(head)[0])


def _confine(memory_mib: int) -> None:
    """Limits the worker sets on itself once its parsers are imported (imports are not counted)."""
    import ctypes
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past RLIMIT_FSIZE fails instead of killing
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    with open("/proc/self/statm") as fh:
        size = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (size + memory_mib * MIB, size + memory_mib * MIB))
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG: die with the parent
    except (OSError, AttributeError):
        pass


def serve(memory_mib: int) -> None:
    """The worker's loop: request frames on stdin, answers on (a private copy of) stdout."""
    import gc
    import logging
    import warnings

    out = os.dup(1)
    os.dup2(2, 1)  # a library that prints cannot corrupt the protocol
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    import bs4  # noqa: F401 - the parsers are imported before the memory limit is set
    import docx  # noqa: F401
    import pypdf  # noqa: F401

    from appliance.corpus.readers import extract

    _confine(memory_mib)
    _write_all(out, b"R")  # ready: a file's time limit starts counting only now
    while True:
        header = _read_frame(0)
        data = _read_frame(0)
        if header is None or data is None:
            return
        req = json.loads(header)
        limits = ParseLimits(**req["limits"])
        name = req["name"]
        reply: dict[str, Any]
        text = b""
        try:
            extracted = extract(data, Path(name), limits)
            reply = {"ok": True, "title": extracted.title, "media_type": extracted.media_type}
            text = extracted.text.encode()
            del extracted
        except UnreadableInput as exc:
            reply = {"ok": False, "reason": str(exc)}
        except MemoryError:
            reply = {"ok": False, "restart": True,
                     "reason": f"{name}: needs more than {memory_mib} MiB of memory to parse; split or simplify the document"}
        except RecursionError:
            reply = {"ok": False, "restart": True, "reason": f"{name}: nested too deeply to parse; simplify the document"}
        except Exception as exc:  # any other parser failure is a reason, not a crash of the run
            reply = {"ok": False, "restart": True, "reason": f"{name}: could not be parsed ({type(exc).__name__}); "
                                                             "re-save or convert the file"}
        del data
        _write_all(out, _frame(json.dumps(reply).encode()) + _frame(text))
        size = len(text)
        del text
        if reply.get("restart"):
            return  # the parent starts a fresh worker: this one may be damaged
        if size > 8 * MIB:
            gc.collect()  # a big document's parse trees go now, not at some later file (a full pass costs ~10 ms)


# ------------------------------------------------------------------------------ parent side
class _Worker:
    """One worker process, started on first use and again after it is killed or dies."""

    def __init__(self, memory_mib: int) -> None:
        self.memory_mib = memory_mib
        self.proc: subprocess.Popen[bytes] | None = None

    def _start(self) -> subprocess.Popen[bytes]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
               "OMP_NUM_THREADS": "1"}
        return subprocess.Popen([sys.executable, "-I", "-c", _BOOT, str(_ROOT), str(self.memory_mib)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                env=env, cwd="/", close_fds=True, start_new_session=True)

    def kill(self) -> str:
        """Stop the process (if any); describe how it ended."""
        proc, self.proc = self.proc, None
        if proc is None:
            return "not started"
        if proc.poll() is None:
            proc.kill()
        for pipe in (proc.stdin, proc.stdout):
            try:
                if pipe:
                    pipe.close()
            except OSError:
                pass
        rc = proc.wait()
        return f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}"

    def _read(self, fd: int, n: int, deadline: float) -> bytes:
        parts, got = [], 0
        while got < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _TimedOut
            poller = select.poll()  # not select(): a descriptor above 1024 is fine
            poller.register(fd, select.POLLIN | select.POLLHUP)
            if not poller.poll(left * 1000):
                raise _TimedOut
            chunk = os.read(fd, min(n - got, 1 << 20))
            if not chunk:
                raise _Died
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    def _frame(self, fd: int, deadline: float, limit: int) -> bytes:
        n = _LEN.unpack(self._read(fd, _LEN.size, deadline))[0]
        if n > limit:
            raise _Died  # not an answer this protocol gives: treat the worker as broken
        return self._read(fd, n, deadline)

    def parse(self, data: bytes, name: str, limits: ParseLimits) -> Extracted | str:
        """The extracted text, or the one-line reason the file is refused."""
        if self.proc is None or self.proc.poll() is not None:
            self.kill()
            self.proc = self._start()
            try:
                assert self.proc.stdout is not None
                if self._read(self.proc.stdout.fileno(), 1, time.monotonic() + STARTUP_S) != b"R":
                    raise _Died
            except (_Died, _TimedOut):
                how = self.kill()
                return f"{name}: the parser process could not start ({how}); check the installation with `memo doctor`"
        proc = self.proc
        seconds = limits.timeout(len(data))
        deadline = time.monotonic() + seconds
        assert proc.stdin is not None and proc.stdout is not None
        request = json.dumps({"name": name, "limits": asdict(limits)}).encode()
        try:
            proc.stdin.write(_frame(request) + _LEN.pack(len(data)))
            proc.stdin.write(data)
            proc.stdin.flush()
            fd = proc.stdout.fileno()
            header = json.loads(self._frame(fd, deadline, MAX_HEADER))
            text = self._frame(fd, deadline, limits.text_chars * 4)
        except _TimedOut:
            self.kill()
            return f"{name}: parsing took longer than {seconds:.3g} s and was stopped; split or simplify the document"
        except (_Died, OSError, ValueError):
            how = self.kill()
            return f"{name}: the parser crashed on it ({how}); the file is malformed or hostile: re-save or convert it"
        result = _answer(header, text, name, limits)
        if not isinstance(header, dict) or header.get("restart") or isinstance(result, str) and not header.get("reason"):
            self.kill()
        return result


def _answer(header: Any, text: bytes, name: str, limits: ParseLimits) -> Extracted | str:
    """Check a worker's answer before anything in it is used."""
    bad = f"{name}: the parser gave an invalid answer; the file is malformed or hostile: re-save or convert it"
    if not isinstance(header, dict) or not isinstance(header.get("ok"), bool):
        return bad
    if not header["ok"]:
        reason = header.get("reason")
        return one_line(reason) if isinstance(reason, str) and reason.strip() else bad
    title, media = header.get("title"), header.get("media_type")
    if not isinstance(title, str) or len(title) > 1000 or media not in MEDIA_TYPES.values():
        return bad
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        return bad
    if not decoded or len(decoded) > limits.text_chars:
        return bad
    return Extracted(text=decoded, title=title, media_type=media)


class ParserPool:
    """Worker processes shared by one ingest run. ``submit`` returns a future of
    :class:`Extracted` or the reason string; results come back in any order, callers keep theirs."""

    def __init__(self, limits: ParseLimits | None = None, workers: int | None = None) -> None:
        self.limits = limits or ParseLimits()
        n = workers or default_workers()
        self._workers = [_Worker(self.limits.memory_mib) for _ in range(n)]
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        for w in self._workers:
            self._idle.put(w)
        self._threads = ThreadPoolExecutor(n, thread_name_prefix="memo-parse")
        self._closed = threading.Event()

    @property
    def size(self) -> int:
        return len(self._workers)

    def _run(self, data: bytes, name: str) -> Extracted | str:
        worker = self._idle.get()
        try:
            if self._closed.is_set():
                return f"{name}: ingest stopped before it was parsed"
            return worker.parse(data, name, self.limits)
        finally:
            self._idle.put(worker)

    def submit(self, data: bytes, name: str) -> Future[Extracted | str]:
        return self._threads.submit(self._run, data, name)

    def parse(self, data: bytes, name: str) -> Extracted:
        result = self.submit(data, name).result()
        if isinstance(result, str):
            raise UnreadableInput(result)
        return result

    def close(self) -> None:
        """Stop every worker (one busy on a file is killed: its caller gets a reason)."""
        self._closed.set()
        self._threads.shutdown(wait=False, cancel_futures=True)
        for w in self._workers:
            w.kill()
        self._threads.shutdown(wait=True)

    def __enter__(self) -> "ParserPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
