"""The systemd unit of the daemon: hardening a regulated site expects, and `systemd-analyze verify`."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "packaging" / "systemd" / "memo-daemon.service"


def _settings(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            k, v = line.split("=", 1)
            out.setdefault(k, []).append(v)
    return out


def test_unit_is_hardened() -> None:
    s = _settings(UNIT)
    expect = {"User": "memo", "ProtectSystem": "strict", "PrivateTmp": "yes", "NoNewPrivileges": "yes",
              "PrivateDevices": "yes", "PrivateNetwork": "yes", "RestrictAddressFamilies": "AF_UNIX", "IPAddressDeny": "any",
              "SystemCallFilter": "@system-service", "CapabilityBoundingSet": "", "ProtectHome": "yes", "UMask": "0077",
              "ExecStart": "/opt/memo/.venv/bin/memo daemon", "ExecStartPre": "/opt/memo/.venv/bin/memo policy check"}
    for key, value in expect.items():
        assert s.get(key) == [value], key
    assert s["ReadWritePaths"] == ["/var/lib/memo /var/lib/memo-inbox /var/lib/memo-witness"]
    assert "MEMO_WITNESS=/var/lib/memo-witness" in s["Environment"]  # outside MEMO_HOME, only the service user writes it
    assert s["StateDirectory"] == ["memo memo-witness"] and s["StateDirectoryMode"] == ["0700"]
    assert "MEMO_KEY_FILE=%d/vault.key" in s["Environment"] and s["LoadCredential"] == ["vault.key:/etc/memo/credentials/vault.key"]
    assert "MemoryDenyWriteExecute" not in s  # incompatible with torch/CUDA JIT and ctypes callbacks (documented)
    gpu = _settings(UNIT.parent / "memo-daemon.service.d" / "gpu.conf.example")
    assert gpu["PrivateDevices"] == ["no"] and "/dev/nvidiactl rw" in gpu["DeviceAllow"]
    ext = _settings(UNIT.parent / "memo-daemon.service.d" / "external-endpoint.conf.example")
    assert ext["IPAddressDeny"] == ["any"] and ext["IPAddressAllow"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    memo = Path(sys.executable).parent / "memo"
    unit = tmp_path / "memo-daemon.service"
    unit.write_text(UNIT.read_text().replace("/opt/memo/.venv/bin/memo", str(memo)))  # verify wants the binary to exist
    run = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "memo-daemon.service" not in run.stderr, run.stderr  # no warning about our unit


def test_unit_parses_as_ini() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment]
    parser.read_string(UNIT.read_text())
    assert parser.sections() == ["Unit", "Service", "Install"]
