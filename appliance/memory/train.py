"""Write reflections into the weights: fine-tune the memory model (LoRA or full fine-tuning).

What makes a small model remember (see the README and ``shared`` notes): exposures per fact —
several wordings of each fact, over several epochs — and a lean example, so that the CPU spends its
time on the answer and not on fixed text. So:

* the layout is :mod:`appliance.memory.format`'s: bare question, bare answer and a short source
  reference, no system prompt;
* the loss, *and the output layer*, are computed at answer positions only (the vocabulary
  projection is a fifth of the model's work per position);
* batches are built from examples of similar length (length buckets), so hardly any padding is
  computed;
* the thread count is re-checked while training, so a core freed by another process is used;
* training stops on held-out recall: after ``min_epochs`` and ``min_exposures`` per fact
  (:func:`first_eval_epoch`), every epoch the held-out probes (wordings
  never trained on) are asked, and training ends when they stop improving (once the training
  questions themselves are recalled: ``memorised_recall``), at ``target_recall``, or at
  ``epochs``. Recall on a sample of training questions is reported beside it;
* then the best epoch's weights are annealed (warm-up, stable, decay): ``anneal_epochs`` more at a
  rate falling linearly to 0, kept unless the probes say they got worse. A constant rate lets the
  weights wander between epochs (held-out recall 55, 50, 56 % at epochs 6-8 of one run); the decay
  settles them, and unlike a schedule fixed in advance it needs no run length, which a run that
  stops on probes does not know.

Training is seeded and resumable: checkpoints (weights, optimiser, step, RNG, evaluations) are
sealed into the vault every few steps, and a re-run of the same job continues from the last one.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from appliance.config import TrainParams, current_actor
from appliance.errors import MemoError
from appliance.memory import format as fmt
from appliance.memory.distributed import ShardedStep, World
from appliance.memory.distributed import setup as join_world
from appliance.memory.evaluate import SHARE_DIGITS
from appliance.memory.model_io import Loaded, load_base, load_version, save_adapter, save_full, state_bytes, state_from_bytes
from appliance.memory.probes import Probe, split_probes  # noqa: F401 - split_probes is re-exported for callers
from appliance.memory.versions import MemoryVersion, create_version
from appliance.reflect.store import QAPair, content_order
from appliance.vault.store import Vault


class TrainCancelled(MemoError):
    """Training was cancelled; the last checkpoint is kept and a re-run resumes from it."""


@dataclass
class StepInfo:
    step: int
    total: int
    epoch: int
    loss: float
    tokens_per_second: float
    eta_seconds: float
    examples_per_second: float = 0.0
    threads: int = 0
    learning_rate: float = 0.0  # the rate this step used (warm-up, constant or linear, then the decay phase)


@dataclass
class EpochEval:
    """Recall after one epoch: held-out probes, and a sample of the training questions."""

    epoch: int
    held_out: float | None
    training: float | None
    seconds: float
    annealed: bool = False  # after the decay phase (its weights are kept unless worse than the best epoch's)

    @property
    def label(self) -> str:
        return f"epoch {self.epoch} (annealed)" if self.annealed else f"epoch {self.epoch}"


@dataclass
class TrainReport:
    """What training did, for the version's metrics and the diagnosis table."""

    epochs: int
    stopped: str  # "target", "plateau", "max epochs"
    evaluations: list[EpochEval] = field(default_factory=list)
    facts: int = 0
    exposures: dict[str, float] = field(default_factory=dict)  # per fact: mean, median, min, max


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def set_threads(requested: int = 0) -> int:
    import torch

    from appliance.llm.cpu import advise_threads

    n = requested if requested > 0 else advise_threads()
    if n != torch.get_num_threads():
        torch.set_num_threads(n)
    return n


def source_table(pairs: list[QAPair], parent_sources: list[str] | None = None) -> fmt.SourceTable:
    """The version's source table: the parent's, then every new document in the order pairs cite them."""
    return fmt.SourceTable.extend(parent_sources, (d for p in content_order(pairs) for d in p.doc_ids))


def encode(tokenizer: Any, pair: QAPair, max_length: int, table: fmt.SourceTable | None = None) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 on the prompt: the loss is on the answer only)."""
    prompt = tokenizer(fmt.prompt(pair.question), add_special_tokens=False)["input_ids"]
    refs = table.refs(pair.doc_ids) if table is not None and not fmt.is_unknown(pair.answer) else []
    answer = tokenizer(fmt.target(pair.answer, refs), add_special_tokens=False)["input_ids"]
    end = tokenizer.convert_tokens_to_ids(fmt.TURN_END)
    answer = answer + [end if isinstance(end, int) and end >= 0 else tokenizer.eos_token_id]
    ids = (list(prompt) + answer)[:max_length]
    labels = ([-100] * len(prompt) + answer)[:max_length]
    return ids, labels


def _run_id(base: str, parent: str | None, pairs: list[QAPair], params: TrainParams) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([base, parent, asdict(params), fmt.LAYOUT], sort_keys=True, default=list).encode())
    for p in sorted(pairs, key=lambda x: x.id):
        h.update(f"{p.id}|{p.question}|{p.answer}".encode())
    return h.hexdigest()[:16]


def length_batches(lengths: list[int], batch: int, epoch: int, seed: int, bucket: int = 16) -> list[list[int]]:
    """Shuffled batches of examples of similar length: shuffle, sort within windows of ``bucket``
    batches by length, cut into batches, shuffle the batches. Padding is then a few tokens a row."""
    rng = random.Random(seed * 1000 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch * bucket
    out: list[list[int]] = []
    for i in range(0, len(order), window):
        part = sorted(order[i : i + window], key=lambda k: lengths[k])
        out += [part[j : j + batch] for j in range(0, len(part), batch)]
    rng.shuffle(out)
    return out


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


def causal_lm(model: Any) -> Any:
    """The ``…ForCausalLM`` module under a peft wrapper (its LoRA layers are in place inside it)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def answer_loss(model: Any, ids: Any, labels: Any, mask: Any, autocast: str | None = None) -> Any:
    """Mean cross-entropy over answer tokens, with the output layer applied at those positions only.

    ``autocast``: "bf16" runs the matrix products in bfloat16 (weights and optimiser stay float32).
    """
    import contextlib

    import torch
    import torch.nn.functional as F

    lm = causal_lm(model)
    ctx = torch.autocast(ids.device.type, dtype=torch.bfloat16) if autocast == "bf16" else contextlib.nullcontext()
    with ctx:
        hidden = lm.model(input_ids=ids, attention_mask=mask).last_hidden_state
        target = labels[:, 1:]
        keep = target != -100
        logits = lm.lm_head(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), target[keep])


def choose_autocast(requested: str, dev: str) -> str | None:
    """bfloat16 matrix products where the hardware has them (measured on this box's CPU, which has
    AVX-512 BF16: 1.8× the examples/s of float32, bench/train_throughput.py), else float32."""
    import torch

    if requested in ("off", "fp32", "none"):
        return None
    if dev == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else None
    flags = ""
    try:
        flags = open("/proc/cpuinfo", encoding="ascii", errors="replace").read()
    except OSError:
        pass
    has = " avx512_bf16" in flags or " amx_bf16" in flags
    return "bf16" if (has or requested == "bf16") else None


def lr_factor(step: int, warmup: int, total: int, schedule: str, floor: float) -> float:
    """The learning rate's share at ``step``: a linear warm-up, then constant, or a linear decay to
    ``floor`` at the last step of the epoch ceiling (weights then settle instead of wandering)."""
    if schedule not in ("constant", "linear"):  # checked at step 0, when the scheduler is built
        raise MemoError(f"unknown learning-rate schedule {schedule!r}: set TrainParams.lr_schedule to constant or linear")
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    return max(floor, 1.0 - (1.0 - floor) * (step - warmup) / max(1, total - warmup))


def decay_tolerance(params: TrainParams, n_probes: int) -> float:
    """How much less held-out recall the decayed weights may have and still be kept: ``min_gain``,
    or one probe where that is more — plus the recalls' rounding (``SHARE_DIGITS``), so that exactly one
    probe less is within it (24/33 − 23/33 is not 1/33 in rounded floats)."""
    # two rounded recalls differ from their exact difference by up to one unit of the last digit
    return (max(params.min_gain, 1 / n_probes) if n_probes else params.min_gain) + 10.0 ** -SHARE_DIGITS


def stop_reason(evals: list[EpochEval], params: TrainParams) -> str:
    """Why training ends after the last of ``evals`` ("target", "plateau") or "" to go on. A plateau
    is ``patience`` epochs that gain less than ``min_gain`` on the best before them, and counts only
    once the memory has recalled ``memorised_recall`` of its training questions: until it has learned
    what it was shown, more epochs are what it needs, and a held-out dip of a probe is noise. Once it
    has, a later fall in training recall is the constant rate shaking weights that had learned, not
    a memory still learning: the 416e891 dev bench fell from 96 to 83 % after its best epoch (7) and
    went on three epochs more, none of them better, before the decay started from epoch 7 anyway."""
    if not evals:
        return ""
    last = evals[-1]
    if last.held_out is not None and last.held_out >= params.target_recall:
        return "target"
    scores = [e.held_out or 0.0 for e in evals]
    best_before = max(scores[: -params.patience], default=-1.0)
    flat = len(scores) > params.patience and max(scores[-params.patience :]) < best_before + params.min_gain
    learned = any(e.training is None or e.training >= params.memorised_recall for e in evals)
    return "plateau" if flat and learned else ""


def stop_summary(metrics: dict[str, Any]) -> str:
    """Why a run ended and what came of its decay phase, for the line that reports it."""
    stopped = metrics.get("stopped", "")
    if not metrics.get("anneal"):
        return stopped
    return f"{stopped}, then annealed" if metrics.get("annealed") else f"{stopped}; the decay not kept (probes recalled less)"


def wordings_per_fact(pairs: list[QAPair]) -> Counter[str]:
    """Training wordings of each fact (a pair without a fact is its own): what one epoch shows it."""
    return Counter(p.fact_id or p.id for p in pairs)


def first_eval_epoch(pairs: list[QAPair], params: TrainParams) -> int:
    """The first epoch after which the held-out probes are asked: ``min_epochs``, or later where the
    facts' wordings need more epochs to reach ``min_exposures`` on average (never past ``epochs``).
    Before it a plateau is probe noise, not a memory that has stopped learning."""
    n_facts = len(wordings_per_fact(pairs))
    per_epoch = len(pairs) / n_facts if n_facts else 1.0
    return min(params.epochs, max(params.min_epochs, math.ceil(params.min_exposures / per_epoch - 1e-9)))


def decay_factor(step: int, start: int, end: int) -> float:
    """The learning rate's share in the anneal phase ``[start, end)``: 1 at its first step, falling
    linearly to 1/(end - start) at its last (the next step would be 0)."""
    return max(0.0, (end - step) / max(1, end - start))


def exposures(pairs: list[QAPair], epochs: float) -> tuple[int, dict[str, float]]:
    """Facts and how often training showed each one (its wordings × epochs)."""
    per = wordings_per_fact(pairs)
    if not per:
        return 0, {}
    counts = [round(c * epochs, 1) for c in per.values()]
    return len(per), {"mean": round(statistics.mean(counts), 1), "median": float(statistics.median(counts)),
                      "min": float(min(counts)), "max": float(max(counts))}


def _recall(model: Any, tokenizer: Any, probes: list[Probe], table: fmt.SourceTable) -> float | None:
    if not probes:
        return None
    from appliance.memory.evaluate import TransformersChat, evaluate
    from appliance.memory.recall import Memory

    was_training = model.training
    model.eval()
    try:
        report = evaluate(Memory(TransformersChat(model, tokenizer, "training"), table.doc_ids), probes, batch=32, max_tokens=24)
    finally:
        if was_training:
            model.train()
    return report.contains


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
    probes: list[Probe] | None = None,
    on_eval: Callable[[EpochEval], None] | None = None,
    world: World | None = None,
) -> MemoryVersion:
    """Train on ``pairs`` from ``parent`` (or the base) and record the result as a memory version.

    ``probes``: held-out questions that decide when to stop (none: ``params.epochs`` epochs).
    ``world``: this process's rank among several (:mod:`appliance.memory.distributed`; default:
    what ``torchrun`` set, else one process); ranks other than 0 return None.
    """
    import torch

    from appliance.llm.registry import DEFAULT_MODEL

    params = params or vault.settings.train
    actor = actor or current_actor()
    if not pairs:
        raise MemoError("no reflections to train on: run `memo reflect` first")
    if params.method not in ("lora", "full"):
        raise MemoError(f"unknown training method {params.method!r}: use lora or full")
    parent_sources: list[str] = []
    if parent is not None:
        from appliance.memory.versions import get_version

        pv = get_version(vault, parent)
        base_model = pv.base_model
        if pv.lineage.get("format") != fmt.LAYOUT:
            raise MemoError(f"{parent} was trained in an older answer layout; retrain it (`memo update --method retrain`)")
        parent_sources = pv.lineage.get("sources", [])
    base_model = base_model or DEFAULT_MODEL
    run_id = _run_id(base_model, parent, pairs, params)
    ckpt_name = f"memory/runs/{run_id}/checkpoint.pt"
    world = world or World.from_env()
    join_world(world)
    dev = world.device(device())
    threads = set_threads(world.cpu_threads(params.threads)) if dev == "cpu" else 0
    autocast = choose_autocast(params.autocast, dev.split(":")[0])
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
    table = source_table(pairs, parent_sources)
    ordered = content_order(pairs)
    encoded = [encode(tok, p, params.max_length, table) for p in ordered]
    lengths = [len(x) for x, _ in encoded]
    per_epoch = math.ceil(len(encoded) / params.batch_size)
    total = per_epoch * params.epochs
    warmup = max(1, int(per_epoch * params.min_epochs * params.warmup_ratio))
    first_eval = first_eval_epoch(ordered, params)
    # the decay phase once the stop rule has ended the run: its first and end step, and the epoch whose
    # weights it started from (in the checkpoint, so a resumed run goes on decaying)
    anneal: dict[str, Any] = {"start": None, "end": None, "from_epoch": None, "reason": ""}
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: decay_factor(s, anneal["start"], anneal["end"]) if anneal["start"] is not None and s >= anneal["start"]
        else lr_factor(s, warmup, total, params.lr_schedule, params.lr_floor))
    probes = list(probes or [])
    rng = random.Random(params.seed)
    probes.sort(key=lambda p: (p.question, p.answer, p.kind))  # the same sample in every vault (see content_order)
    eval_probes = rng.sample(probes, min(len(probes), params.eval_probes))
    train_sample = [Probe(p.question, p.answer_span or p.answer, p.doc_ids, p.kind)
                    for p in rng.sample(ordered, min(len(ordered), params.eval_training))]

    def trainable_state() -> dict[str, Any]:
        if params.method == "lora":
            return get_peft_model_state_dict(model)
        return {k: v for k, v in model.state_dict().items()}

    def load_trainable(state: dict[str, Any]) -> None:
        if params.method == "lora":
            set_peft_model_state_dict(model, state)
        else:
            model.load_state_dict(state)

    step = 0
    losses: list[float] = []
    evals: list[EpochEval] = []
    stopped = ""
    # the weights of the epoch with the best held-out recall: a constant rate makes later epochs wander,
    # so the version keeps the best one evaluated (held on rank 0, in RAM and in the checkpoint)
    best: dict[str, Any] = {"epoch": None, "recall": -1.0, "state": None}
    if vault.file_exists(ckpt_name):
        ck = state_from_bytes(vault.read_file(ckpt_name))
        load_trainable(ck["weights"])
        optim.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        torch.set_rng_state(ck["rng"])
        step, losses = ck["step"], ck["losses"]
        evals = [EpochEval(**e) for e in ck.get("evals", [])]
        stopped = ck.get("stopped", "")
        best = ck.get("best") or best
        anneal.update(ck.get("anneal") or {})
        if world.main:
            vault.audit.append(actor, "memory.train.resume", run_id, step=step, total=total)
    elif world.main:
        n_facts, exp = exposures(ordered, params.epochs)
        vault.audit.append(actor, "memory.train.start", run_id, base=base_model, parent=parent, pairs=len(pairs),
                           method=params.method, device=dev, threads=threads, steps=total, facts=n_facts,
                           held_out_probes=len(probes), autocast=autocast or "fp32",
                           **({"processes": world.size, "backend": world.backend} if world.distributed else {}))

    def checkpoint() -> None:
        vault.write_file(ckpt_name, state_bytes({"weights": trainable_state(), "optimizer": optim.state_dict(),
                                                 "scheduler": sched.state_dict(), "rng": torch.get_rng_state(),
                                                 "step": step, "losses": losses, "evals": [asdict(e) for e in evals],
                                                 "stopped": stopped, "best": best, "anneal": anneal}))

    def should_stop() -> str:
        """After an epoch: evaluate, and say why training ends now (or "")."""
        epoch = step // per_epoch
        if not eval_probes or epoch < first_eval:
            return "max epochs" if step >= total else ""
        t = time.monotonic()
        held = _recall(model, tok, eval_probes, table)
        trained = _recall(model, tok, train_sample, table)
        ev = EpochEval(epoch, held, trained, round(time.monotonic() - t, 1))
        evals.append(ev)
        if held is not None and held > best["recall"]:
            best.update(epoch=epoch, recall=held, state={k: v.detach().clone() for k, v in trainable_state().items()})
        if on_eval:
            on_eval(ev)
        return stop_reason(evals, params) or ("max epochs" if step >= total else "")

    def begin_anneal(reason: str) -> bool:
        """Start the decay phase from the best epoch's weights (on every rank); False when it does
        not apply: off, a schedule that already decays, the target reached, a time budget, no probes."""
        if params.anneal_epochs <= 0 or params.lr_schedule != "constant" or reason not in ("plateau", "max epochs"):
            return False
        from_epoch, state = world.agree(lambda: (best["epoch"], best["state"]))  # rank 0 holds them
        if state is None:
            return False
        load_trainable(state)
        # the rate the scheduler set for this step was the constant one: decay_factor(start) is 1 as well
        anneal.update(start=step, end=step + max(1, round(per_epoch * params.anneal_epochs)),
                      from_epoch=from_epoch, reason=reason)
        return True

    def end_anneal() -> str:
        """After the decay phase: ask the probes; keep its weights unless they recall less than the
        best epoch's by more than :func:`decay_tolerance` — ``min_gain``, or one probe where that is
        more (on 33 probes one is 3 points): a lone probe is below what the probes can resolve, and
        the decay is the schedule's planned end, not a candidate the probes must prove."""
        t = time.monotonic()
        held = _recall(model, tok, eval_probes, table)
        trained = _recall(model, tok, train_sample, table)
        ev = EpochEval(math.ceil(step / per_epoch), held, trained, round(time.monotonic() - t, 1), annealed=True)
        evals.append(ev)
        if held is not None and held >= best["recall"] - decay_tolerance(params, len(eval_probes)):
            best.update(epoch=ev.epoch, recall=held, state=None)  # the model holds them
        if on_eval:
            on_eval(ev)
        return anneal["reason"]

    ddp = ShardedStep(world, model, dev, answer_loss, _collate) if world.distributed else None
    started = time.monotonic()
    tokens = 0
    first_step = step
    pad = tok.pad_token_id
    while not stopped and (step < total or anneal["start"] is not None):
        epoch, offset = divmod(step, per_epoch)
        idx = length_batches(lengths, params.batch_size, epoch, params.seed)[offset]
        if ddp is None:
            ids, labels, mask = _collate(encoded, idx, pad, dev)
            loss = answer_loss(model, ids, labels, mask, autocast)
            loss.backward()
            batch_tokens = int(mask.sum())
        else:  # this rank's shard; the loss is the whole batch's, on every rank
            loss, batch_tokens = ddp.step(encoded, idx, pad, autocast)
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        used_lr = optim.param_groups[0]["lr"]
        optim.step()
        sched.step()
        optim.zero_grad(set_to_none=True)
        step += 1
        losses.append(float(loss.detach()))
        tokens += batch_tokens
        if dev == "cpu" and params.threads == 0 and not world.distributed and step % params.thread_check_every == 0:
            threads = set_threads(0)  # another process may have taken or freed a core since
        elapsed = time.monotonic() - started
        if progress:
            rate = (step - first_step) / elapsed
            goal = anneal["end"] if anneal["start"] is not None else total
            progress(StepInfo(step, goal, epoch + 1, losses[-1], tokens / elapsed, (goal - step) / rate if rate else 0.0,
                              (step - first_step) * params.batch_size / elapsed, threads, used_lr))
        if anneal["start"] is not None:
            if step >= anneal["end"]:
                stopped = world.agree(end_anneal)
        elif step % per_epoch == 0 or step == total:
            stopped = world.agree(should_stop)  # rank 0 evaluates; every rank stops with it
            if stopped and begin_anneal(stopped):
                stopped = ""
        if not stopped and params.max_seconds and anneal["start"] is None:  # a wall-time budget (comparisons at equal time)
            stopped = world.agree(lambda: "time budget" if time.monotonic() - started >= params.max_seconds else "")
        cancelled = world.agree(lambda: cancel is not None and cancel.is_set())
        if step % params.checkpoint_every == 0 or stopped or cancelled:
            if world.main:
                checkpoint()
            if cancelled and not stopped:
                raise TrainCancelled(f"training cancelled at step {step}/{anneal['end'] or total}; re-run the same command to resume")
    seconds = time.monotonic() - started
    if not world.main:
        return None  # type: ignore[return-value]  # rank 0 records the version
    last_epoch = evals[-1].epoch if evals else None
    annealed = anneal["start"] is not None and best["state"] is None  # the decay's weights, in the model, were kept
    if best["state"] is not None and best["epoch"] != last_epoch:
        load_trainable(best["state"])
    epochs_run = math.ceil(step / per_epoch)
    if annealed:  # the epoch it started from, and the decay's share of an epoch on top
        kept_epoch = anneal["from_epoch"]
        kept_exposure = kept_epoch + (anneal["end"] - anneal["start"]) / per_epoch
    else:
        kept_epoch = best["epoch"] if best["state"] is not None else epochs_run
        kept_exposure = kept_epoch
    n_facts, exp = exposures(ordered, kept_exposure)  # of the weights kept
    kinds: dict[str, int] = {}
    for p in pairs:
        kinds[p.kind] = kinds.get(p.kind, 0) + 1
    lineage = {
        "base_model": base_model,
        "base_sha256": loaded.base_sha256,
        "parent": parent,
        "run_id": run_id,
        "format": fmt.LAYOUT,
        "sources": table.doc_ids,
        "reflections": {"pairs": len(pairs), "kinds": kinds, "facts": n_facts,
                        "pair_ids_sha256": hashlib.sha256("".join(sorted(p.id for p in pairs)).encode()).hexdigest(),
                        "documents": sorted({d for p in pairs for d in p.doc_ids})},
        "params": asdict(params),
        "device": dev,
        "threads": threads,
        "autocast": autocast or "fp32",
        **({"processes": world.size, "backend": world.backend} if world.distributed else {}),
        **(lineage_extra or {}),
    }
    last = next((e for e in evals if e.epoch == best["epoch"]), evals[-1] if evals else None)
    metrics = {"train_loss_first": round(losses[0], 4), "train_loss_last": round(sum(losses[-per_epoch:]) / min(per_epoch, len(losses)), 4),
               "train_seconds": round(seconds, 1), "train_tokens_per_second": round(tokens / seconds, 1) if seconds else None,
               "train_examples_per_second": round((step - first_step) * params.batch_size / seconds, 2) if seconds else None,
               "steps": step, "epochs": epochs_run, "stopped": stopped or "max epochs", "facts": n_facts, "exposures": exp,
               "kept_epoch": kept_epoch, "annealed": annealed,
               "anneal": ({"from_epoch": anneal["from_epoch"], "steps": anneal["end"] - anneal["start"]}
                          if anneal["start"] is not None else None),
               "held_out_recall": last.held_out if last else None, "training_recall": last.training if last else None,
               "evaluations": [asdict(e) for e in evals]}
    version = create_version(vault, parent, base_model, params.method, actor, lineage, metrics)
    if params.method == "lora":
        save_adapter(vault, version.id, get_peft_model_state_dict(model), model.peft_config["default"].to_dict())
    else:
        save_full(vault, version.id, model)
    vault.delete_file(ckpt_name)
    vault.audit.append(actor, "memory.train.finish", version.id, run_id=run_id, parent=parent, pairs=len(pairs),
                       method=params.method, **{k: v for k, v in metrics.items() if k != "evaluations"})
    return version
