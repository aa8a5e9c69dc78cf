"""`memo doctor` on real homes, vaults, key files and distributions: each check finds what it should."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
from importlib.metadata import PathDistribution
from pathlib import Path

import pytest

from appliance.config import Settings
from appliance.doctor import (
    NEED_KEY_HINT,
    NO_VAULT_HINT,
    Check,
    DoctorOptions,
    DoctorReport,
    check_disk,
    check_llama,
    check_permissions,
    probe_llama,
    requirement_problems,
    run_doctor,
    runtime_requirements,
    verify_record,
    crash_check,
)
from appliance.llm.registry import REGISTRY_FILE, ModelRegistry
from appliance.vault.keys import Secret, generate_key_file
from appliance.vault.store import Vault


def doctor(settings: Settings, secret: Secret | None = None) -> dict[str, Check]:
    report = run_doctor(DoctorOptions(settings, secret, skip_llama=True))
    return {c.name: c for c in report.checks}


@pytest.fixture
def keyed(settings: Settings, tmp_path: Path) -> tuple[Settings, Secret]:
    """A real vault that unlocks with a key file (mode 0400, as `memo vault keygen` writes it)."""
    key = tmp_path / "vault.key"
    generate_key_file(key)
    Vault.init(settings, Secret(key_file=key), actor="tester")
    return settings, Secret(key_file=key)


def test_fresh_machine_without_vault(settings: Settings) -> None:
    report = run_doctor(DoctorOptions(settings, skip_llama=True))
    checks = {c.name: c for c in report.checks}
    assert [c.name for c in report.checks] == ["versions", "installed files", "bundled model", "llama.cpp load", "GPU",
                                               "vault", "vault contents", "permissions", "policies", "disk"]
    assert checks["vault"].status == checks["vault contents"].status == "SKIP"
    assert checks["vault"].hint == NO_VAULT_HINT
    assert checks["permissions"].status == "OK" and "does not exist yet" in checks["permissions"].detail
    assert checks["llama.cpp load"].status == "SKIP"
    assert checks["GPU"].status == "OK"
    assert checks["bundled model"].status == "OK"
    assert all(checks[n].status != "FAIL" for n in ("vault", "vault contents", "permissions", "policies", "disk"))
    assert report.audit_seq is None and not settings.home.exists()  # a doctor creates nothing


def test_vault_chain_without_key_and_contents_with_it(keyed: tuple[Settings, Secret]) -> None:
    settings, secret = keyed
    locked = doctor(settings)
    assert locked["vault"].status == "OK" and "1 entries" in locked["vault"].detail
    assert locked["vault contents"].status == "SKIP" and locked["vault contents"].hint == NEED_KEY_HINT
    assert locked["permissions"].status == "OK"

    report = run_doctor(DoctorOptions(settings, secret, skip_llama=True))
    checks = {c.name: c for c in report.checks}
    assert checks["vault contents"].status == "OK" and "0 documents" in checks["vault contents"].detail
    assert checks["permissions"].status == "OK" and "key file 400" in checks["permissions"].detail
    assert report.audit_seq == 2
    entry = list(Vault.open(settings, secret).audit.entries())[-1]
    assert entry.action == "doctor.run" and entry.details["checks"]["vault contents"] == "OK"
    assert entry.details["ok"] is report.ok


def test_wrong_key_fails_contents_only(keyed: tuple[Settings, Secret]) -> None:
    settings, _ = keyed
    checks = doctor(settings, Secret(passphrase="not the key"))
    assert checks["vault"].status == "OK"
    assert checks["vault contents"].status == "FAIL" and "cannot unlock" in checks["vault contents"].detail


def test_tampered_audit_entry_is_named(keyed: tuple[Settings, Secret]) -> None:
    settings, secret = keyed
    Vault.open(settings, secret).audit.append("tester", "test.event", "x")
    log = settings.home / "audit" / "log.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    rec = json.loads(lines[1])
    ct = bytearray(base64.b64decode(rec["ct"]))
    ct[20] ^= 1
    rec["ct"] = base64.b64encode(bytes(ct)).decode()
    lines[1] = json.dumps(rec, separators=(",", ":")).encode() + b"\n"
    log.write_bytes(b"".join(lines))

    for secret_given in (None, secret):
        checks = doctor(settings, secret_given)
        assert checks["vault"].status == "FAIL"
        assert "entry 2 (line 2) was modified" in checks["vault"].detail
        assert checks["disk"].status != "FAIL"  # the other checks still ran
    assert checks["vault contents"].status == "FAIL" and "entry 2" in checks["vault contents"].detail


def test_open_home_and_readable_files_fail(keyed: tuple[Settings, Secret]) -> None:
    settings, secret = keyed
    os.chmod(settings.home, 0o755)
    check = check_permissions(settings, secret.key_file)
    assert check.status == "FAIL" and "mode 755" in check.detail and f"chmod 700 {settings.home}" in check.hint

    os.chmod(settings.home, 0o700)
    assert check_permissions(settings, secret.key_file).status == "OK"  # the 644 public key is meant to be read
    os.chmod(settings.home / "catalog.db.enc", 0o640)
    check = check_permissions(settings, secret.key_file)
    assert check.status == "FAIL" and "catalog.db.enc (640)" in check.detail


def test_group_readable_key_file_fails(keyed: tuple[Settings, Secret]) -> None:
    settings, secret = keyed
    assert secret.key_file is not None
    os.chmod(secret.key_file, 0o640)
    checks = doctor(settings, secret)
    assert checks["permissions"].status == "FAIL" and f"chmod 600 {secret.key_file}" in checks["permissions"].hint
    assert checks["vault contents"].status == "OK"


def test_world_writable_policy_file_fails(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "retention.yaml").write_text("retention: {}\n")
    os.chmod(policies / "retention.yaml", 0o666)
    monkeypatch.setenv("MEMO_POLICIES", str(policies))
    check = check_permissions(settings, None)
    assert check.status == "FAIL" and "retention.yaml" in check.detail and "chmod o-w" in check.hint


def test_policy_problems_missing_and_broken(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMO_POLICIES", str(tmp_path / "none"))
    assert doctor(settings)["policies"].status == "WARN"
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "schedules.yaml").write_text("schedules:\n  inbox: /srv/inbox\n  generator: nowhere\n  jobs: []\n")
    monkeypatch.setenv("MEMO_POLICIES", str(broken))
    checks = doctor(settings)
    assert checks["policies"].status == "FAIL" and "schedules.generator" in checks["policies"].detail
    assert checks["disk"].status != "FAIL"
    (broken / "schedules.yaml").write_text("schedules: [not, a, mapping\n")
    assert doctor(settings)["policies"].status == "FAIL"  # a parse error raises inside the check: still one FAIL


def test_bundled_model_against_vault_record(keyed: tuple[Settings, Secret]) -> None:
    settings, secret = keyed
    vault = Vault.open(settings, secret)
    ModelRegistry(vault).refresh(actor="tester")
    checks = doctor(settings, secret)
    assert checks["bundled model"].status == "OK" and "matches the vault's record" in checks["bundled model"].detail

    doc = json.loads(vault.read_file(REGISTRY_FILE))
    doc["models"]["smollm2-135m-instruct-q4_1"]["sha256"] = "0" * 64
    vault.write_file(REGISTRY_FILE, json.dumps(doc).encode())
    check = doctor(settings, secret)["bundled model"]
    assert check.status == "FAIL" and "the vault registered 0000000000000000" in check.detail


def _fake_dist(site: Path, payload: bytes) -> PathDistribution:
    """A real dist-info over a file in ``site``, as pip would have written it."""
    (site / "foo").mkdir(parents=True)
    (site / "foo" / "weights.bin").write_bytes(payload)
    info = site / "foo-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: foo\nVersion: 1.0\n")
    digest = base64.urlsafe_b64encode(hashlib.sha256(payload).digest()).rstrip(b"=").decode()
    (info / "RECORD").write_text(f"foo/weights.bin,sha256={digest},{len(payload)}\nfoo-1.0.dist-info/RECORD,,\n")
    return PathDistribution(info)


def test_record_verification_names_a_modified_file(tmp_path: Path) -> None:
    payload = os.urandom(3 * (1 << 20) + 17)  # several hashing chunks
    dist = _fake_dist(tmp_path, payload)
    good = verify_record(dist)
    assert (good.files, good.bytes, good.problems) == (1, len(payload), [])

    weights = tmp_path / "foo" / "weights.bin"
    weights.write_bytes(payload[:-1] + bytes([payload[-1] ^ 1]))
    bad = verify_record(dist)
    assert bad.files == 0 and len(bad.problems) == 1
    assert bad.problems[0].startswith(f"{weights}: SHA-256 differs from the installed RECORD") and "reinstall foo" in bad.problems[0]

    weights.unlink()
    assert "listed in foo's RECORD but missing" in verify_record(dist).problems[0]


def test_requirements_against_installed_versions() -> None:
    from importlib.metadata import version

    reqs = runtime_requirements([f"click=={version('click')}", "torch==0.0.1", "no-such-package-memo>=1",
                                 'pytest>=8; extra == "dev"', 'rich>=1; sys_platform == "nonexistent"'])
    assert [r.name for r in reqs] == ["click", "torch", "no-such-package-memo"]
    problems = requirement_problems(reqs)
    assert len(problems) == 2
    assert problems[0].startswith("torch 2.") and problems[0].endswith("installed, memo needs ==0.0.1")
    assert problems[1] == "no-such-package-memo is not installed, memo needs >=1"


def test_crash_signals_become_fails() -> None:
    sigill = crash_check(-signal.SIGILL, "")
    assert sigill.status == "FAIL" and "SIGILL" in sigill.detail and "--llama-cpu portable" in sigill.hint
    segv = crash_check(-signal.SIGSEGV, "Fatal Python error: Segmentation fault\n")
    assert "SIGSEGV: Fatal Python error" in segv.detail


def test_disk_uses_nearest_existing_parent(tmp_path: Path) -> None:
    check = check_disk(tmp_path / "not" / "yet")
    assert check.status in ("OK", "WARN", "FAIL") and f"free at {tmp_path}" in check.detail


def test_report_ok_ignores_warn_and_skip() -> None:
    assert DoctorReport([Check("a", "OK", ""), Check("b", "WARN", ""), Check("c", "SKIP", "")]).ok
    assert not DoctorReport([Check("a", "OK", ""), Check("b", "FAIL", "")]).ok


def test_cli_doctor_exit_status(cli_env: dict[str, str], tmp_path: Path) -> None:
    from click.testing import CliRunner

    from appliance.cli import cli

    runner = CliRunner()
    r = runner.invoke(cli, ["doctor", "--json", "--skip-llama"], env=cli_env)
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["ok"] is True
    assert {c["name"]: c["status"] for c in report["checks"]}["vault"] == "SKIP"
    assert set(report["checks"][0]) == {"name", "status", "detail", "hint"}

    home = Path(cli_env["MEMO_HOME"])
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    r = runner.invoke(cli, ["doctor", "--json", "--skip-llama"], env=cli_env)
    assert r.exit_code == 1
    perms = {c["name"]: c for c in json.loads(r.output)["checks"]}["permissions"]
    assert perms["status"] == "FAIL" and "chmod 700" in perms["hint"]

    r = runner.invoke(cli, ["doctor", "--skip-llama"], env=cli_env)
    assert r.exit_code == 1 and "FAIL" in r.output and f"fix: chmod 700 {home}" in r.output.replace("\n", " ")


@pytest.mark.slow
def test_llama_loads_the_bundled_model(bundled_gguf: Path) -> None:
    probe = check_llama(skip=False)
    assert probe.check.status == "OK", probe.check
    assert "token(s) generated" in probe.check.detail and probe.gpu_offload is not None


@pytest.mark.slow
def test_llama_load_failure_is_one_fail(tmp_path: Path) -> None:
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"GGUF" + os.urandom(4096))
    probe = probe_llama(fake)
    assert probe.check.status == "FAIL" and "llama.cpp could not load" in probe.check.detail
