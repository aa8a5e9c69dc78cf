"""An exported memory reaches the vault, and llama.cpp, without its weights ever touching a disk."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.config import KdfParams, Settings
from appliance.export import gguf_writer as gw
from appliance.export import verify as vf
from appliance.llm.registry import ModelRegistry
from appliance.vault.keys import Secret
from appliance.vault.store import Vault

NEEDLE = 64 * 1024
_BLOCK = 8 << 20


def _files(roots: Iterable[Path], newer_than: float | None = None) -> Iterator[Path]:
    for root in roots:
        for dirpath, _, names in os.walk(root, onerror=lambda e: None):
            for name in names:
                p = Path(dirpath) / name
                try:
                    st = p.stat()
                except OSError:
                    continue
                if not p.is_file() or st.st_size < NEEDLE:
                    continue
                if newer_than is not None and max(st.st_mtime, st.st_ctime) < newer_than:
                    continue
                yield p


def _contains(path: Path, needle: bytes) -> bool:
    """Stream the file in blocks, overlapping by len(needle) - 1 so no occurrence is split."""
    try:
        fh = open(path, "rb")
    except OSError:
        return False
    with fh:
        tail = b""
        while block := fh.read(_BLOCK):
            window = tail + block
            if needle in window:
                return True
            tail = window[-(len(needle) - 1) :]
    return False


def _leaks(roots: Iterable[Path], needles: list[bytes], newer_than: float | None = None) -> list[str]:
    return [str(p) for p in _files(roots, newer_than) if any(_contains(p, n) for n in needles)]


def test_no_plaintext_gguf_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tokenizer: Any, vocab_size: int, base_gguf: Path) -> None:
    from tests.export.conftest import make_tiny_model

    system_tmp = Path(tempfile.gettempdir())
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(private_tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    started = time.time() - 2  # mtime granularity

    s = Settings(home=tmp_path / "home", kdf=KdfParams(memory_kib=1024, iterations=1, lanes=1))
    vault = Vault.init(s, Secret(passphrase="correct horse"))
    model = make_tiny_model(vocab_size)
    # the checked path (export in memory, llama.cpp on the memfd, stream into the vault) ...
    result = vf.export_and_verify(
        model, tokenizer, vault, "tiny-q8", base_gguf, "q8_0", probes=vf.DEFAULT_PROBES[:2], max_new_tokens=4,
        n_threads=1, min_answer_agreement=0.0,
    )
    # ... the unchecked one, and serving it back from the vault
    gw.export_to_vault(model, vault, "tiny-f16", base_gguf, "f16")
    with ModelRegistry(vault).open_gguf("tiny-q8") as opened:
        llama = vf.load_llama(opened.path, n_threads=1)
        llama.close()

    plain = vault.read_file("models/tiny-q8.gguf")  # decrypted in memory only
    assert plain[:4] == b"GGUF" and len(plain) == result.info.size
    start = result.info.tensor_data_offset
    needles = [plain[start : start + NEEDLE], plain[len(plain) // 2 : len(plain) // 2 + NEEDLE]]
    f16 = vault.read_file("models/tiny-f16.gguf")
    needles.append(f16[len(f16) // 2 : len(f16) // 2 + NEEDLE])
    assert all(len(n) == NEEDLE for n in needles)

    assert _leaks([s.home, tmp_path], needles) == []
    assert _leaks([system_tmp], needles, newer_than=started) == []

    # the scanner itself finds a plaintext copy (positive control)
    leak = private_tmp / "leak.gguf"
    leak.write_bytes(b"x" * 12345 + plain)
    assert _leaks([tmp_path], needles) == [str(leak)]
