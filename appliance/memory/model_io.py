"""Load the base model into transformers and rebuild any memory version from its adapters.

The base is a public GGUF (the bundled SmolLM2) de-quantised to fp32; a memory version is that
base plus the chain of LoRA adapters (task vectors) of its lineage, or full weights for a fully
fine-tuned one. Adapters and weights live encrypted in the vault and are decrypted into RAM only.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.errors import MemoError
from appliance.vault.store import Vault

# transformers' GGUF de-quantiser draws a tqdm bar of its own; tqdm reads this when first imported
os.environ.setdefault("TQDM_DISABLE", "1")


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    base_name: str
    base_path: Path
    base_sha256: str


def base_gguf(vault: Vault, name: str) -> tuple[Path, str]:
    """Path and verified SHA-256 of a training base."""
    from appliance.llm.registry import ModelRegistry

    reg = ModelRegistry(vault)
    reg.refresh()
    info = reg.verify(name)
    if info.source == "vault" or info.kind != "gguf":
        raise MemoError(f"model {name!r} cannot be a training base (use a GGUF on disk, e.g. the bundled one)")
    return Path(info.path), info.sha256


def load_base(vault: Vault, name: str, device: str = "cpu") -> Loaded:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    warnings.filterwarnings("ignore", message="Could not find a config file")
    path, digest = base_gguf(vault, name)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    # the weights are plain fp32 by now; drop the GGUF quantiser marker so peft and saving work
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return Loaded(model.to(device), tokenizer, name, path, digest)


def adapter_files(version_id: str) -> tuple[str, str]:
    return f"memory/{version_id}/adapter.safetensors", f"memory/{version_id}/adapter_config.json"


def full_weights_file(version_id: str) -> str:
    return f"memory/{version_id}/model.safetensors"


def save_adapter(vault: Vault, version_id: str, state: dict[str, Any], config: dict[str, Any]) -> None:
    from safetensors.torch import save

    weights, cfg = adapter_files(version_id)
    vault.write_file(weights, save({k: v.detach().cpu().contiguous() for k, v in state.items()}))
    vault.write_file(cfg, json.dumps(config, default=list).encode())


def save_full(vault: Vault, version_id: str, model: Any) -> None:
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    data = save(state)
    vault.write_file_stream(full_weights_file(version_id), (data[i : i + (4 << 20)] for i in range(0, len(data), 4 << 20)))


def apply_adapter(model: Any, vault: Vault, version_id: str, scale: float = 1.0) -> Any:
    """Merge one stored adapter into ``model`` (in place; returns the plain model)."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load

    weights, cfg = adapter_files(version_id)
    config = json.loads(vault.read_file(cfg))
    lora = LoraConfig(**{k: v for k, v in config.items() if k in ("r", "lora_alpha", "target_modules", "lora_dropout")})
    peft_model = get_peft_model(model, lora)
    state = load(vault.read_file(weights))
    if scale != 1.0:
        state = {k: (v * scale if "lora_B" in k else v) for k, v in state.items()}
    set_peft_model_state_dict(peft_model, state)
    return peft_model.merge_and_unload()


def load_version(vault: Vault, version_id: str | None, device: str = "cpu") -> Loaded:
    """The model of a memory version (None: the untrained base of the default model)."""
    from appliance.llm.registry import DEFAULT_MODEL
    from appliance.memory.versions import chain, get_version

    if version_id is None:
        return load_base(vault, DEFAULT_MODEL, device)
    version = get_version(vault, version_id)
    loaded = load_base(vault, version.base_model, device)
    for v in chain(vault, version_id):
        if v.method == "full":
            from safetensors.torch import load

            state = load(vault.read_file(full_weights_file(v.id)))
            loaded.model.load_state_dict(state, strict=False)
            loaded.model.tie_weights()
        else:
            loaded.model = apply_adapter(loaded.model, vault, v.id)
    return loaded


def state_bytes(obj: Any) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def state_from_bytes(data: bytes) -> Any:
    import torch

    return torch.load(io.BytesIO(data), weights_only=False)  # our own authenticated checkpoint
