"""Fixtures for the GGUF export tests: the bundled base GGUF, its tokenizer, tiny and real models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest



@pytest.fixture(scope="session")
def base_gguf(bundled_gguf: Path) -> Path:
    return bundled_gguf


@pytest.fixture(scope="session")
def tokenizer(base_gguf: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(base_gguf.parent), gguf_file=base_gguf.name)


def base_vocab_size(base_gguf: Path) -> int:
    """Number of tokens in the base GGUF's tokenizer (the tiny model's vocabulary)."""
    import gguf

    return len(gguf.GGUFReader(base_gguf).fields["tokenizer.ggml.tokens"].data)


def make_tiny_model(vocab_size: int, tie: bool = True, seed: int = 0, std: float = 0.3) -> Any:
    """A 2-layer Llama with the bundled tokenizer's vocabulary and large random weights.

    Weights are drawn with std 0.3 (not the usual 0.02) so that attention is sharp: a wrong
    rotary permutation then changes the logits grossly instead of by a rounding error.
    Norm weights are random too, so their round trip is tested on non-trivial values.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=tie,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.ndim == 2:
                p.normal_(0.0, std)
            else:
                p.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="session")
def vocab_size(base_gguf: Path) -> int:
    return base_vocab_size(base_gguf)


@pytest.fixture(scope="module")
def tiny_model(vocab_size: int) -> Any:
    return make_tiny_model(vocab_size)
