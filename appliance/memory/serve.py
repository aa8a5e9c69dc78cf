"""The serving memory: the promoted version's GGUF in llama.cpp, decrypted into RAM only."""

from __future__ import annotations

from appliance.errors import MemoError
from appliance.memory.recall import Memory, for_version
from appliance.memory.versions import get_version, promoted
from appliance.vault.store import Vault

SERVE_TYPE = "f16"  # q8_0 flips near-tied greedy choices of a 135M model (see README: export)


def gguf_name(version_id: str, output_type: str = SERVE_TYPE) -> str:
    return f"{version_id}-{output_type}"


def open_memory(vault: Vault, version_id: str | None = None, output_type: str = SERVE_TYPE) -> Memory:
    """Load a memory version's exported GGUF (default: the promoted one) for answering; refused for a
    rejected version, and for an unapproved one where approvals apply."""
    from appliance.approvals.records import check_servable
    from appliance.llm.llamacpp import LlamaCppModel, LlamaCppOptions
    from appliance.llm.registry import ModelRegistry

    if version_id is None:
        current = promoted(vault)
        if current is None:
            raise MemoError("no memory is promoted yet: run `memo train`, then `memo export VERSION --promote`")
        version_id = current.id
    version = get_version(vault, version_id)
    check_servable(vault, version_id)  # a rejected version never serves; once approvals apply, only approved ones
    name = gguf_name(version_id, output_type)
    registry = ModelRegistry(vault)
    try:
        registry.get(name)
    except MemoError:
        raise MemoError(f"memory {version_id} has no {output_type} GGUF yet: run `memo export {version_id}`") from None
    # plain greedy decoding, as in training and export verification; short prompts and answers
    # need little context per sequence, so a batch of sub-questions fits in a small KV cache
    model = LlamaCppModel.load(registry, name, LlamaCppOptions(repeat_penalty=1.0, n_ctx=512, share_prefix=False))
    return for_version(model, version.lineage, version_id)
