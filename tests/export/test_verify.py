"""Agreement between transformers and llama.cpp, and the refusal of an export that disagrees."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from appliance.config import KdfParams, Settings
from appliance.errors import MemoError
from appliance.export import verify as vf
from appliance.llm.registry import ModelRegistry
from appliance.vault.keys import Secret
from appliance.vault.store import Vault
from tests.export.conftest import make_tiny_model


def _gen(tokens: list[int], text: str) -> vf.Generation:
    return vf.Generation(tokens, text, 0.1, 5)


def test_metrics_definition() -> None:
    questions = ["a", "b", "c", "d"]
    ref = [_gen([5, 6, 2], "x y"), _gen([5, 6, 7, 2], "x y z"), _gen([1, 2], "p"), _gen([8, 9], "q r")]
    cand = [_gen([5, 6, 2], "x y"), _gen([5, 9, 2], "x w"), _gen([4, 4, 4, 4], "s s s s"), _gen([8, 9], "q r")]
    report = vf.compare(questions, ref, cand, [True, True, False, True])
    assert report.answer_agreement == 0.5
    # matched prefixes 3, 1, 0, 2 over the longer lengths 3, 4, 4, 2
    assert report.token_agreement == pytest.approx(6 / 13)
    assert [p.first_divergence for p in report.probes] == [None, 1, 0, None]
    assert [p.prompt_tokens_match for p in report.probes] == [True, True, False, True]
    assert report.summary() == "2/4 answers identical (50%), greedy-token agreement 46.2%"
    assert json.loads(json.dumps(report.to_dict()))["n_exact"] == 2
    with pytest.raises(MemoError):
        vf.compare([], [], [])


def _vault(tmp_path: Path) -> Vault:
    s = Settings(home=tmp_path / "home", kdf=KdfParams(memory_kib=1024, iterations=1, lanes=1))
    return Vault.init(s, Secret(passphrase="correct horse"))


def test_refuses_and_stores_nothing_when_answers_differ(tmp_path: Path, tokenizer: Any, vocab_size: int, base_gguf: Path) -> None:
    """The reference answers of another model stand in for a broken export: it must be refused."""
    vault = _vault(tmp_path)
    model = make_tiny_model(vocab_size, seed=0)
    probes = vf.DEFAULT_PROBES[:3]
    other = vf.generate_reference(make_tiny_model(vocab_size, seed=1), tokenizer, probes, max_new_tokens=8)
    with pytest.raises(MemoError) as exc:
        vf.export_and_verify(
            model, tokenizer, vault, "tiny-bad", base_gguf, "q8_0", probes=probes, max_new_tokens=8, reference=other, n_threads=1
        )
    message = str(exc.value)
    assert "\n" not in message and "tiny-bad" in message and "not stored" in message
    assert not vault.file_exists("models/tiny-bad.gguf")
    assert [e for e in vault.audit.entries() if e.action == "model.export_refused"]


def test_export_and_verify_tiny_f16(tmp_path: Path, tokenizer: Any, vocab_size: int, base_gguf: Path) -> None:
    vault = _vault(tmp_path)
    model = make_tiny_model(vocab_size)
    probes = vf.DEFAULT_PROBES[:3]
    result = vf.export_and_verify(
        model, tokenizer, vault, "tiny-ok", base_gguf, "f16", probes=probes, max_new_tokens=8, n_threads=1,
        min_answer_agreement=0.0,
    )
    assert result.report.template_match
    assert all(p.prompt_tokens_match for p in result.report.probes)
    assert result.model.sha256 == result.info.sha256
    with ModelRegistry(vault).open_gguf("tiny-ok") as opened:
        assert opened.in_memory
        llama = vf.load_llama(opened.path, n_threads=1)
        try:
            gens, _ = vf.generate_llamacpp(llama, tokenizer, probes[:1], max_new_tokens=8)
        finally:
            llama.close()
    assert gens[0].tokens == result.report.probes[0].candidate_tokens


# ---------------------------------------------------------------------------------- real model
@pytest.fixture(scope="module")
def real_model(base_gguf: Path) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(base_gguf.parent), gguf_file=base_gguf.name, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def real_reference(real_model: Any, tokenizer: Any) -> list[vf.Generation]:
    return vf.generate_reference(real_model, tokenizer, vf.DEFAULT_PROBES)


def _show(report: vf.AgreementReport, label: str) -> None:
    print(f"\n{label}: {report.summary()}")
    for p in report.probes:
        if p.first_divergence is not None:
            print(f"  diverged at token {p.first_divergence}: {p.question!r}\n    hf:   {p.reference!r}\n    gguf: {p.candidate!r}")


@pytest.mark.slow
def test_bundled_model_f16_agrees(tmp_path: Path, real_model: Any, real_reference: list[vf.Generation], tokenizer: Any, base_gguf: Path) -> None:
    """Measured: 10/10 answers and 100 % of greedy tokens identical."""
    assert "Paris" in real_reference[0].text  # asked with the memory's own system prompt
    vault = _vault(tmp_path)
    result = vf.export_and_verify(
        real_model, tokenizer, vault, "memory-f16", base_gguf, "f16", reference=real_reference, min_answer_agreement=0.9
    )
    report = result.report
    _show(report, "f16")
    assert report.answer_agreement >= 0.9 and report.token_agreement >= 0.9
    assert report.teacher_forced_agreement is not None and report.teacher_forced_agreement >= 0.99
    assert report.template_match and all(p.prompt_tokens_match for p in report.probes)
    assert vault.file_exists("models/memory-f16.gguf")
    assert [e.details["answer_agreement"] for e in vault.audit.entries() if e.action == "model.export"] == [report.answer_agreement]


@pytest.mark.slow
def test_bundled_model_q8_0_gate(tmp_path: Path, real_model: Any, real_reference: list[vf.Generation], tokenizer: Any, base_gguf: Path) -> None:
    """q8_0 of the untrained 135M model does NOT reach 0.9 answer agreement (measured 2/10 answers,
    50.6 % greedy tokens), though llama.cpp picks transformers' token at 95.4 % of single steps:
    ggml rounds activations to 8 bits in q8_0 products, a few near-tied steps flip, and 32-token
    answers diverge from there (reproduced in torch by emulating W8A8). So this checks fidelity per
    step, and that the gate stores the file exactly when the agreement reaches the threshold.
    """
    vault = _vault(tmp_path)
    try:
        result = vf.export_and_verify(
            real_model, tokenizer, vault, "memory-q8", base_gguf, "q8_0", reference=real_reference, min_answer_agreement=0.9
        )
    except MemoError as exc:
        print(f"\nq8_0 refused: {exc}")
        refused = [e for e in vault.audit.entries() if e.action == "model.export_refused"]
        assert len(refused) == 1 and refused[0].details["answer_agreement"] < 0.9
        assert refused[0].details["teacher_forced_agreement"] >= 0.9
        assert not vault.file_exists("models/memory-q8.gguf")
    else:
        _show(result.report, "q8_0")
        assert result.report.answer_agreement >= 0.9 and vault.file_exists("models/memory-q8.gguf")
