"""The offline bundle's manifest: what `build-wheelhouse` writes and `install-offline` checks first.

Standard library only: this file runs on the air-gapped machine before anything is installed.
Every file of a bundle is listed with its SHA-256 and size; a file that is missing, altered or not
listed (a wheel slipped in) refuses the whole bundle before a single package is installed. The
manifest itself is pinned out of band: its SHA-256 is printed at build time and written beside the
bundle, and `install-offline --manifest-sha256` compares it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "manifest.json"
FORMAT = 1
REQUIREMENTS = "requirements.txt"  # the appliance and its dependencies, pinned with hashes
MODEL_REQUIREMENTS = "models.txt"  # model packages: installed with --no-deps
WHEELS = "wheels"
_CHUNK = 1 << 20
# PEP 427: {distribution}-{version}(-{build tag})?-{python tag}-{abi tag}-{platform tag}.whl
_WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$")


class BundleError(Exception):
    """A problem with a bundle or an installation; the message is one line an operator can act on."""


@dataclass(frozen=True)
class Wheel:
    path: Path
    name: str  # normalised (PEP 503)
    version: str

    def requirement(self, digest: str) -> str:
        return f"{self.name}=={self.version} --hash=sha256:{digest}"


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_wheel(path: Path) -> Wheel:
    m = _WHEEL.match(path.name)
    if not m:
        raise BundleError(f"{path}: not a wheel file name (PEP 427); remove it from the wheelhouse")
    return Wheel(path, normalise(m["name"]), m["version"])


def requires_python(path: Path) -> str:
    """The wheel's Requires-Python (empty when it has none)."""
    import zipfile

    with zipfile.ZipFile(path) as zf:
        meta = next((n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")), None)
        if meta is None:
            raise BundleError(f"{path}: no METADATA inside; not a valid wheel, rebuild the bundle")
        for line in zf.read(meta).decode("utf-8", "replace").splitlines():
            if not line.strip():
                break  # headers end at the first blank line
            if line.lower().startswith("requires-python:"):
                return line.split(":", 1)[1].strip()
    return ""


def python_too_old(spec: str, version: str) -> str | None:
    """The ``>=``/``>`` clause of ``spec`` that ``version`` fails, if any (pip checks the rest itself)."""
    def as_tuple(v: str) -> tuple[int, ...]:
        parts = [int(p) for p in re.findall(r"\d+", v)[:3]]
        return tuple(parts + [0] * (3 - len(parts)))  # PEP 440: 3.11 == 3.11.0

    have = as_tuple(version)
    for clause in spec.split(","):
        m = re.match(r"^\s*(>=|>)\s*([0-9][0-9.]*)\s*$", clause)
        if m and not (have >= as_tuple(m[2]) if m[1] == ">=" else have > as_tuple(m[2])):
            return clause.strip()
    return None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def interpreter_target(python: str | None = None) -> dict[str, str]:
    """The Python tag and platform a bundle is for, as the given interpreter reports them."""
    if python is None or Path(python).resolve() == Path(sys.executable).resolve():
        return {"python_tag": f"cp{sys.version_info[0]}{sys.version_info[1]}",
                "python_version": ".".join(map(str, sys.version_info[:3])), "platform": sysconfig.get_platform()}
    import subprocess

    code = ("import json, sys, sysconfig; print(json.dumps({'python_tag': f'cp{sys.version_info[0]}{sys.version_info[1]}', "
            "'python_version': '.'.join(map(str, sys.version_info[:3])), 'platform': sysconfig.get_platform()}))")
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BundleError(f"{python}: cannot run this Python ({exc}); pass --python with a working interpreter") from None
    return json.loads(done.stdout)


def bundle_files(root: Path) -> list[Path]:
    """Every regular file under ``root`` except the manifest, relative and sorted; links are refused."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            if p.is_symlink():
                raise BundleError(f"{p}: a symbolic link in the bundle; a bundle holds plain files only, rebuild it")
        for name in filenames:
            rel = (Path(dirpath) / name).relative_to(root)
            if rel.as_posix() != MANIFEST:
                found.append(rel)
    return sorted(found, key=lambda p: p.as_posix())


def write_manifest(root: Path, meta: dict[str, object]) -> str:
    """List every file of the bundle with its digest; return the manifest's own SHA-256."""
    files = [{"path": rel.as_posix(), "sha256": sha256_file(root / rel), "size": (root / rel).stat().st_size}
             for rel in bundle_files(root)]
    doc = {"format": FORMAT, **meta, "files": files}
    data = (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, root / MANIFEST)
    return hashlib.sha256(data).hexdigest()


def read_manifest(root: Path, expected_sha256: str | None = None) -> tuple[dict, str]:
    path = root / MANIFEST
    try:
        data = path.read_bytes()
    except OSError:
        raise BundleError(f"{path}: missing; this is not a memo bundle (build one with packaging/build-wheelhouse)") from None
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256.strip().lower():
        raise BundleError(f"{path}: SHA-256 is {digest}, not the {expected_sha256.strip()} recorded at build time: "
                          "the manifest was replaced or corrupted; do not install, copy the bundle again")
    try:
        doc = json.loads(data)
        if doc.get("format") != FORMAT or not isinstance(doc.get("files"), list):
            raise ValueError
    except ValueError:
        raise BundleError(f"{path}: not a format-{FORMAT} manifest; rebuild the bundle with this version's build-wheelhouse") from None
    return doc, digest


def verify_bundle(root: Path, doc: dict) -> list[str]:
    """Every problem with the bundle's files, one line each (empty: intact)."""
    problems: list[str] = []
    listed: dict[str, dict] = {}
    for entry in doc["files"]:
        rel = str(entry.get("path", ""))
        if not rel or rel.startswith("/") or ".." in Path(rel).parts:
            problems.append(f"{MANIFEST}: unsafe path {rel!r}; the manifest was tampered with")
            continue
        listed[rel] = entry
    present = {p.as_posix() for p in bundle_files(root)}
    for rel in sorted(present - listed.keys()):
        problems.append(f"{root / rel}: not in the manifest (added after the build); remove it or rebuild the bundle")
    for rel, entry in sorted(listed.items()):
        path = root / rel
        if rel not in present:
            problems.append(f"{path}: listed in the manifest but missing; copy the bundle again")
            continue
        size = path.stat().st_size
        if size != entry.get("size"):
            problems.append(f"{path}: {size} bytes, the manifest says {entry.get('size')}: altered or truncated in transit; copy the bundle again")
            continue
        digest = sha256_file(path)
        if digest != entry.get("sha256"):
            problems.append(f"{path}: SHA-256 {digest[:16]}… does not match the manifest's {str(entry.get('sha256'))[:16]}…: "
                            "the file was altered; do not install, copy the bundle again from the build machine")
    return problems
