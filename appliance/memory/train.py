"""Write reflections into the weights: fine-tune the memory model (LoRA by default, or full).

Chat-formatted pairs with the loss on the answer tokens only; answers end with the source
document ids. Training is seeded and resumable: checkpoints (adapter/weights, optimiser, step,
RNG) are sealed into the vault every few steps, and a re-run of the same job continues from the
last one. Paraphrased questions are held out as probes, so evaluation measures recall of a fact
asked in words the model never saw, not parroting.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from appliance.config import TrainParams, current_actor
from appliance.errors import MemoError
from appliance.memory.format import memory_messages, training_answer
from appliance.memory.model_io import Loaded, load_base, load_version, save_adapter, save_full, state_bytes, state_from_bytes
from appliance.memory.versions import MemoryVersion, create_version
from appliance.reflect.store import QAPair
from appliance.vault.store import Vault


class TrainCancelled(MemoError):
    """Training was cancelled; the last checkpoint is kept and a re-run resumes from it."""


@dataclass
class Probe:
    question: str
    answer: str  # the short gold answer (the span)
    doc_ids: list[str]
    kind: str


@dataclass
class StepInfo:
    step: int
    total: int
    epoch: int
    loss: float
    tokens_per_second: float
    eta_seconds: float


def split_probes(pairs: list[QAPair]) -> tuple[list[QAPair], list[Probe]]:
    """Paraphrases are held out as probes; everything else is trained on."""
    train = [p for p in pairs if p.kind != "paraphrase"]
    probes = [Probe(p.question, p.answer_span, p.doc_ids, p.kind) for p in pairs if p.kind == "paraphrase" and p.answer_span]
    return train, probes


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def set_threads(requested: int = 0) -> int:
    import torch

    from appliance.llm.cpu import advise_threads

    n = requested if requested > 0 else advise_threads()
    torch.set_num_threads(n)
    return n


def encode(tokenizer: Any, pair: QAPair, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 on the prompt: the loss is on the answer only)."""
    prompt = tokenizer.apply_chat_template(memory_messages(pair.question), add_generation_prompt=True, tokenize=True,
                                           return_dict=False)
    answer = tokenizer(training_answer(pair.answer, pair.doc_ids), add_special_tokens=False)["input_ids"]
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    answer = answer + [end if isinstance(end, int) and end >= 0 else tokenizer.eos_token_id]
    ids = (list(prompt) + answer)[:max_length]
    labels = ([-100] * len(prompt) + answer)[:max_length]
    return ids, labels


def _run_id(base: str, parent: str | None, pairs: list[QAPair], params: TrainParams) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([base, parent, asdict(params)], sort_keys=True, default=list).encode())
    for p in sorted(pairs, key=lambda x: x.id):
        h.update(f"{p.id}|{p.question}|{p.answer}".encode())
    return h.hexdigest()[:16]


def _batches(n: int, batch: int, epoch: int, seed: int) -> list[list[int]]:
    order = list(range(n))
    random.Random(seed * 1000 + epoch).shuffle(order)
    return [order[i : i + batch] for i in range(0, n, batch)]


def _collate(encoded: list[tuple[list[int], list[int]]], idx: list[int], pad: int, dev: str):  # noqa: ANN202
    import torch

    width = max(len(encoded[i][0]) for i in idx)
    ids = torch.full((len(idx), width), pad, dtype=torch.long)
    labels = torch.full((len(idx), width), -100, dtype=torch.long)
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    for row, i in enumerate(idx):
        x, y = encoded[i]
        ids[row, : len(x)] = torch.tensor(x)
        labels[row, : len(y)] = torch.tensor(y)
        mask[row, : len(x)] = 1
    return ids.to(dev), labels.to(dev), mask.to(dev)


def train_memory(
    vault: Vault,
    pairs: list[QAPair],
    params: TrainParams | None = None,
    base_model: str | None = None,
    parent: str | None = None,
    actor: str | None = None,
    progress: Callable[[StepInfo], None] | None = None,
    cancel: threading.Event | None = None,
    lineage_extra: dict[str, Any] | None = None,
) -> MemoryVersion:
    """Train on ``pairs`` from ``parent`` (or the base) and record the result as a memory version."""
    import torch

    from appliance.llm.registry import DEFAULT_MODEL

    params = params or vault.settings.train
    actor = actor or current_actor()
    if not pairs:
        raise MemoError("no reflections to train on: run `memo reflect` first")
    if params.method not in ("lora", "full"):
        raise MemoError(f"unknown training method {params.method!r}: use lora or full")
    if parent is not None:
        from appliance.memory.versions import get_version

        base_model = get_version(vault, parent).base_model
    base_model = base_model or DEFAULT_MODEL
    run_id = _run_id(base_model, parent, pairs, params)
    ckpt_name = f"memory/runs/{run_id}/checkpoint.pt"
    dev = device()
    threads = set_threads(params.threads) if dev == "cpu" else 0
    torch.manual_seed(params.seed)
    random.seed(params.seed)

    loaded: Loaded = load_version(vault, parent, dev) if parent else load_base(vault, base_model, dev)
    model, tok = loaded.model, loaded.tokenizer
    if params.method == "lora":
        from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

        lora = LoraConfig(r=params.rank, lora_alpha=params.alpha, lora_dropout=params.dropout,
                          target_modules=list(params.target_modules), bias="none", task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
        lr = params.learning_rate
    else:
        lr = params.full_learning_rate
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(trainable, lr=lr, weight_decay=params.weight_decay)
    encoded = [encode(tok, p, params.max_length) for p in pairs]
    per_epoch = math.ceil(len(encoded) / params.batch_size)
    total = per_epoch * params.epochs
    warmup = max(1, int(total * params.warmup_ratio))
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: min(1.0, (s + 1) / warmup))  # constant after warm-up

    def trainable_state() -> dict[str, Any]:
        if params.method == "lora":
            return get_peft_model_state_dict(model)
        return {k: v for k, v in model.state_dict().items()}

    step = 0
    losses: list[float] = []
    if vault.file_exists(ckpt_name):
        ck = state_from_bytes(vault.read_file(ckpt_name))
        if params.method == "lora":
            set_peft_model_state_dict(model, ck["weights"])
        else:
            model.load_state_dict(ck["weights"])
        optim.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        torch.set_rng_state(ck["rng"])
        step, losses = ck["step"], ck["losses"]
        vault.audit.append(actor, "memory.train.resume", run_id, step=step, total=total)
    else:
        vault.audit.append(actor, "memory.train.start", run_id, base=base_model, parent=parent, pairs=len(pairs),
                           method=params.method, device=dev, threads=threads, steps=total)

    started = time.monotonic()
    tokens = 0
    first_step = step
    pad = tok.pad_token_id
    while step < total:
        epoch, offset = divmod(step, per_epoch)
        idx = _batches(len(encoded), params.batch_size, epoch, params.seed)[offset]
        ids, labels, mask = _collate(encoded, idx, pad, dev)
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optim.step()
        sched.step()
        optim.zero_grad(set_to_none=True)
        step += 1
        losses.append(float(out.loss.detach()))
        tokens += int(mask.sum())
        elapsed = time.monotonic() - started
        if progress:
            rate = (step - first_step) / elapsed
            progress(StepInfo(step, total, epoch + 1, losses[-1], tokens / elapsed, (total - step) / rate if rate else 0.0))
        if step % params.checkpoint_every == 0 or step == total or (cancel is not None and cancel.is_set()):
            vault.write_file(ckpt_name, state_bytes({"weights": trainable_state(), "optimizer": optim.state_dict(),
                                                     "scheduler": sched.state_dict(), "rng": torch.get_rng_state(),
                                                     "step": step, "losses": losses}))
            if cancel is not None and cancel.is_set() and step < total:
                raise TrainCancelled(f"training cancelled at step {step}/{total}; re-run the same command to resume")
    seconds = time.monotonic() - started
    kinds: dict[str, int] = {}
    for p in pairs:
        kinds[p.kind] = kinds.get(p.kind, 0) + 1
    lineage = {
        "base_model": base_model,
        "base_sha256": loaded.base_sha256,
        "parent": parent,
        "run_id": run_id,
        "reflections": {"pairs": len(pairs), "kinds": kinds,
                        "pair_ids_sha256": hashlib.sha256("".join(sorted(p.id for p in pairs)).encode()).hexdigest(),
                        "documents": sorted({d for p in pairs for d in p.doc_ids})},
        "params": asdict(params),
        "device": dev,
        "threads": threads,
        **(lineage_extra or {}),
    }
    metrics = {"train_loss_first": round(losses[0], 4), "train_loss_last": round(sum(losses[-per_epoch:]) / min(per_epoch, len(losses)), 4),
               "train_seconds": round(seconds, 1), "train_tokens_per_second": round(tokens / seconds, 1) if seconds else None,
               "steps": total}
    version = create_version(vault, parent, base_model, params.method, actor, lineage, metrics)
    if params.method == "lora":
        save_adapter(vault, version.id, get_peft_model_state_dict(model), model.peft_config["default"].to_dict())
    else:
        save_full(vault, version.id, model)
    vault.delete_file(ckpt_name)
    vault.audit.append(actor, "memory.train.finish", version.id, run_id=run_id, parent=parent, pairs=len(pairs),
                       method=params.method, **metrics)
    return version

