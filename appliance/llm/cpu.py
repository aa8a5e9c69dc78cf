"""How many threads a compute kernel should use right now.

llama.cpp's default (half the cores) and torch's (all of them) both ignore other work on the box.
On a small appliance that is costly: with one of two cores busy elsewhere, llama.cpp on 2 threads
ran ~12x slower than on 1 (threads spin at barriers waiting for a descheduled peer). So the
count comes from the cores this process may use (affinity, cgroup quota) minus what *other*
processes keep busy. The load average is no use here: it counts our own recent work too.

Other processes' load is measured from ``/proc/stat`` (busy ticks of the CPUs we may run on) minus
our own CPU time (``/proc/self/stat``) over an interval, so it can be read between calls and also
while we are generating.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
# Background load tolerated before giving a core up: a quarter core of noise (kernel threads,
# a shell) does not slow a 2-thread kernel much; more does, sharply.
_NOISE_CORES = 0.25


def affinity_cpus() -> set[int]:
    """CPUs the scheduler lets this process run on."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def cgroup_cpu_limit(path: Path = Path("/sys/fs/cgroup/cpu.max")) -> float | None:
    """Cores allowed by a cgroup v2 quota (containers, systemd ``CPUQuota=``), or None if unlimited."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(int(quota) / int(period), 0.01)
    except (ValueError, ZeroDivisionError):
        return None


def usable_cores() -> int:
    """Cores this process may use at all: affinity, capped by a cgroup quota."""
    n = len(affinity_cpus()) or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        n = min(n, max(1, math.floor(limit + 0.01)))
    return n


@dataclass(frozen=True)
class _Snapshot:
    at: float
    busy_ticks: int  # busy ticks summed over our CPUs, all processes
    own_ticks: int  # this process's user+system ticks, all threads


def _busy_ticks(cpus: set[int]) -> int:
    """Busy ticks of every process on ``cpus``. Processes at a lower priority than ours (the "nice"
    column, when we run at nice 0 or better) are left out: the scheduler gives our threads their
    cores (a nice-19 process gets ~1.5 % against a nice-0 one), so they do not slow us."""
    try:
        skip_nice = os.getpriority(os.PRIO_PROCESS, 0) <= 0
    except OSError:
        skip_nice = False
    total = 0
    with open("/proc/stat", "rb") as fh:
        for line in fh:
            if not line.startswith(b"cpu") or line.startswith(b"cpu "):
                continue
            fields = line.split()
            if int(fields[0][3:]) not in cpus:
                continue
            # user nice system idle iowait irq softirq steal guest guest_nice
            values = [int(v) for v in fields[1:]]
            # guest time is already inside user/nice; stolen time (a busy hypervisor) is
            # unavailable to us just like another process's, so it counts as busy.
            total += sum(values[:8]) - values[3] - (values[4] if len(values) > 4 else 0) - (values[1] if skip_nice else 0)
    return total


def _own_ticks() -> int:
    with open("/proc/self/stat", "rb") as fh:
        stat = fh.read()
    fields = stat[stat.rindex(b")") + 2 :].split()  # the command name may contain spaces
    return int(fields[11]) + int(fields[12])  # utime, stime


def _snapshot(cpus: set[int]) -> _Snapshot:
    return _Snapshot(time.monotonic(), _busy_ticks(cpus), _own_ticks())


class CoreMeter:
    """Advises a thread count from the cores others left free since the previous reading.

    Keep one per long-lived model: the interval between two calls is then the measurement
    window, and no extra waiting is needed. A reading older than ``stale_s`` is replaced by a
    fresh ``window_s`` sample so that a burst which has ended long ago does not count.
    """

    def __init__(self, window_s: float = 0.1, stale_s: float = 3.0, max_threads: int | None = None) -> None:
        self.window_s = window_s
        self.stale_s = stale_s
        self.max_threads = max_threads
        self._cpus = affinity_cpus()
        self._lock = threading.Lock()
        self._prev: _Snapshot | None = None
        self.last_others_busy: float = 0.0

    def _available(self) -> bool:
        return os.path.exists("/proc/stat") and os.path.exists("/proc/self/stat")

    def others_busy(self) -> float:
        """Cores other processes kept busy (0.0 .. number of our CPUs) over the last interval."""
        if not self._available():
            return 0.0
        with self._lock:
            now = time.monotonic()
            if self._prev is None or now - self._prev.at > self.stale_s:
                self._prev = _snapshot(self._cpus)
            wait = self.window_s - (time.monotonic() - self._prev.at)
            if wait > 0:
                time.sleep(wait)
            cur = _snapshot(self._cpus)
            prev, self._prev = self._prev, cur
        elapsed_ticks = (cur.at - prev.at) * _TICKS
        others = (cur.busy_ticks - prev.busy_ticks) - (cur.own_ticks - prev.own_ticks)
        busy = max(0.0, min(float(len(self._cpus)), others / elapsed_ticks)) if elapsed_ticks > 0 else 0.0
        self.last_others_busy = busy
        return busy

    def threads(self) -> int:
        """Threads to use now: usable cores minus those others keep busy, at least one."""
        cores = usable_cores()
        if self.max_threads is not None:
            cores = min(cores, self.max_threads)
        free = math.floor(cores - self.others_busy() + _NOISE_CORES)
        return max(1, min(cores, free))


def advise_threads(window_s: float = 0.1) -> int:
    """One-off advice (sleeps ``window_s`` to measure); long-lived users should keep a CoreMeter."""
    return CoreMeter(window_s=window_s).threads()
