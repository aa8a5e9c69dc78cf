"""Thread advice: from the cores this process may use, minus what other processes keep busy."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from appliance.llm.cpu import CoreMeter, affinity_cpus, cgroup_cpu_limit, usable_cores


def test_usable_cores_respect_affinity() -> None:
    assert 1 <= usable_cores() <= len(affinity_cpus())
    assert 1 <= CoreMeter().threads() <= usable_cores()
    assert CoreMeter(max_threads=1).threads() == 1


def test_cgroup_quota_parsing(tmp_path: Path) -> None:
    f = tmp_path / "cpu.max"
    f.write_text("max 100000\n")
    assert cgroup_cpu_limit(f) is None
    f.write_text("150000 100000\n")
    assert cgroup_cpu_limit(f) == 1.5
    assert cgroup_cpu_limit(tmp_path / "missing") is None


def test_a_busy_process_takes_a_thread_away() -> None:
    """One spinning process elsewhere must cost us a thread (2 threads then ran ~12x slower here)."""
    cores = usable_cores()
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        meter = CoreMeter(window_s=0.5)
        assert meter.others_busy() >= 0.6
        if cores >= 2:
            assert meter.threads() <= cores - 1
    finally:
        spinner.kill()
        spinner.wait()
