"""Model registry: offline discovery, checksums pinned at registration, verified before every load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.errors import MemoError
from appliance.llm.llamacpp import LlamaCppModel
from appliance.llm.registry import (
    DEFAULT_MODEL,
    REGISTRY_FILE,
    ModelRegistry,
    sha256_file,
)
from appliance.vault.store import Vault
from tests.llm.conftest import write_tiny_gguf


def _actions(vault: Vault) -> list[str]:
    return [e.action for e in vault.audit.entries()]


def test_bundled_model_is_found_offline_and_pinned(registry: ModelRegistry, bundled_gguf: Path, vault: Vault) -> None:
    info = registry.get(DEFAULT_MODEL)
    assert info.source == "bundled" and info.kind == "gguf"
    assert Path(info.path) == bundled_gguf
    assert (info.sha256, info.size) == sha256_file(bundled_gguf)
    assert "model.register" in _actions(vault)
    # The registry itself is an encrypted vault file: its content is not readable on disk.
    raw = (vault.home / "files" / REGISTRY_FILE).read_bytes()
    assert b"smollm2" not in raw and info.sha256.encode() not in raw
    assert json.loads(vault.read_file(REGISTRY_FILE))["models"][DEFAULT_MODEL]["sha256"] == info.sha256


def test_admin_gguf_and_hf_folder_are_registered(registry: ModelRegistry, vault: Vault) -> None:
    models = vault.settings.models_dir
    write_tiny_gguf(models / "tiny-exec.gguf")
    hf = models / "tiny-hf"
    hf.mkdir()
    (hf / "config.json").write_text('{"model_type": "llama"}')
    (hf / "model.safetensors").write_bytes(b"\0" * 64)
    (hf / ".cache").mkdir()
    (hf / ".cache" / "lock").write_text("ignored")
    (models / "README.txt").write_text("not a model")

    assert registry.refresh() == []
    names = {i.name: i for i in registry.list()}
    assert names["tiny-exec"].source == "admin" and names["tiny-exec"].kind == "gguf"
    assert names["tiny-hf"].kind == "hf" and names["tiny-hf"].size == len('{"model_type": "llama"}') + 64
    assert "README" not in " ".join(names)
    assert registry.verify("tiny-hf").name == "tiny-hf"


def test_changed_admin_gguf_is_refused_before_llama_cpp_sees_it(registry: ModelRegistry, vault: Vault) -> None:
    path = write_tiny_gguf(vault.settings.models_dir / "exec.gguf")
    registry.refresh()
    write_tiny_gguf(path, value=1.0)  # same size, different weights

    with pytest.raises(MemoError) as err:
        LlamaCppModel.load(registry, "exec")
    message = str(err.value)
    assert "'exec'" in message and str(path) in message and "\n" not in message
    assert "model.verify_failed" in _actions(vault)


def test_changed_hf_folder_is_refused(registry: ModelRegistry, vault: Vault) -> None:
    hf = vault.settings.models_dir / "base"
    hf.mkdir(parents=True)
    (hf / "config.json").write_text("{}")
    (hf / "weights.bin").write_bytes(b"a" * 32)
    registry.refresh()
    (hf / "weights.bin").write_bytes(b"b" * 32)
    with pytest.raises(MemoError, match="'base'"):
        registry.verify("base")


def test_forget_accepts_an_intended_change(registry: ModelRegistry, vault: Vault) -> None:
    path = write_tiny_gguf(vault.settings.models_dir / "exec.gguf")
    registry.refresh()
    write_tiny_gguf(path, value=2.0)
    with pytest.raises(MemoError):
        registry.verify("exec")
    registry.forget("exec")
    assert registry.verify("exec").sha256 == sha256_file(path)[0]


def test_name_clash_is_reported_not_silently_resolved(registry: ModelRegistry, vault: Vault) -> None:
    registry.import_gguf("exec", write_tiny_gguf(vault.home.parent / "outside" / "a.gguf"))
    write_tiny_gguf(vault.settings.models_dir / "exec.gguf", value=3.0)
    problems = registry.refresh()
    assert len(problems) == 1 and "'exec'" in problems[0] and "rename" in problems[0]
    assert registry.get("exec").source == "vault"


def test_unknown_model_names_what_is_registered(registry: ModelRegistry) -> None:
    with pytest.raises(MemoError, match=DEFAULT_MODEL):
        registry.get("nope")


def test_vault_import_is_encrypted_and_checked(registry: ModelRegistry, vault: Vault, tmp_path: Path) -> None:
    src = write_tiny_gguf(tmp_path / "m.gguf", value=7.0)
    info = registry.import_gguf("mem-v1", src)
    assert info.source == "vault" and info.path == "models/mem-v1.gguf"
    assert (info.sha256, info.size) == sha256_file(src)
    stored = (vault.home / "files" / info.path).read_bytes()
    assert src.read_bytes()[:64] not in stored
    with registry.open_gguf("mem-v1") as opened:
        assert opened.in_memory and opened.path.startswith("/proc/self/fd/")
        assert Path(opened.path).read_bytes() == src.read_bytes()

    with pytest.raises(MemoError, match="not a GGUF"):
        registry.import_gguf("junk", iter([b"PK\x03\x04", b"zip data"]))
    assert not vault.file_exists("models/junk.gguf")
    with pytest.raises(MemoError, match="already registered"):
        registry.import_gguf("mem-v1", src)


def test_vault_import_streams_chunks(registry: ModelRegistry, tmp_path: Path) -> None:
    data = write_tiny_gguf(tmp_path / "m.gguf").read_bytes()
    info = registry.import_gguf("streamed", iter([data[:2], data[2:100], data[100:]]))
    assert info.size == len(data)
    with registry.open_gguf("streamed") as opened:
        assert Path(opened.path).read_bytes() == data
