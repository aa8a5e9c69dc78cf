"""Memory training in several processes (one per GPU, or several CPU processes) with PyTorch's own
``torch.distributed``: DistributedDataParallel over NCCL (GPUs) or gloo (CPU).

Each process is a *rank*. Every rank loads the same base and reflections from the vault and walks
the same sequence of batches; it computes the loss of its shard of each batch (every
``size``-th example), and DDP all-reduces the gradients, so each optimiser step is the step one
process would take on the whole batch: a shard's loss is weighted by its share of the batch's
answer tokens, which makes the mean of the ranks' gradients the gradient of the batch's mean
loss. Rank 0 alone evaluates, checkpoints, saves the version and audits; every other rank follows
its decision to stop (a broadcast after each epoch) and to cancel (after each step).

With one process nothing here runs and training is exactly the single-process code. Ranks are
started by :mod:`appliance.memory.launch` (``memo train --processes N``); :meth:`World.from_env`
also reads the variables ``torchrun`` sets.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

COLLECTIVE_TIMEOUT = timedelta(hours=2)  # rank 0 evaluates while the others wait in a broadcast


@dataclass(frozen=True)
class World:
    """Who this process is among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str = "gloo"  # nccl for GPUs
    init_method: str = "env://"  # tcp://HOST:PORT when the ranks were not started by torchrun

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one rank that reads the cancel flag, evaluates, checkpoints, saves and audits."""
        return self.rank == 0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "World":
        """The world ``torchrun`` describes in the environment (one process without it)."""
        env = os.environ if environ is None else environ
        size = int(env.get("WORLD_SIZE", "1"))
        if size <= 1:
            return cls()
        backend = "nccl" if cuda_count() > 0 else "gloo"
        return cls(int(env["RANK"]), size, int(env.get("LOCAL_RANK", env["RANK"])), backend, "env://")

    def device(self, kind: str) -> str:
        """The device this rank trains on: its own GPU (``cuda:LOCAL_RANK``), or the CPU."""
        return f"cuda:{self.local_rank}" if kind == "cuda" and self.distributed else kind

    def cpu_threads(self, requested: int) -> int:
        """Threads per rank on CPU: the request, or the free cores shared out (0: one process picks)."""
        if requested > 0 or not self.distributed:
            return requested
        from appliance.llm.cpu import advise_threads

        return max(1, advise_threads() // self.size)

    # ----------------------------------------------------------- collectives
    def agree(self, decide: Callable[[], Any]) -> Any:
        """Rank 0's ``decide()``, on every rank (the others do not call it)."""
        if not self.distributed:
            return decide()
        import torch.distributed as dist

        box = [decide() if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def setup(world: World) -> None:
    """Join the process group (once per process); a rank on a GPU uses its own."""
    if not world.distributed:
        return
    import torch
    import torch.distributed as dist

    if world.backend == "nccl":
        torch.cuda.set_device(world.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(world.backend, init_method=world.init_method, rank=world.rank, world_size=world.size,
                                timeout=COLLECTIVE_TIMEOUT)


def teardown(world: World) -> None:
    if world.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def answer_tokens(labels: Sequence[int]) -> int:
    """Positions whose next token is an answer token: what ``answer_loss`` averages over."""
    return sum(1 for y in labels[1:] if y != -100)


def shard(batch: Sequence[int], world: World) -> list[int]:
    """This rank's examples of a batch: every ``size``-th, starting at its rank."""
    return list(batch[world.rank :: world.size])


class ShardedStep:
    """One optimiser step's forward and backward on this rank's shard, under DDP.

    ``loss_fn(model, ids, labels, mask, autocast)`` is the mean answer loss and ``collate`` builds
    tensors from encoded examples (train.py's own, handed in, so this module imports nothing of
    it). The shard's mean is reweighted to ``mean × tokens(shard) × size / tokens(batch)``: DDP's
    average of the ranks' gradients is then the gradient of the whole batch's mean.
    """

    def __init__(self, world: World, model: Any, device: str, loss_fn: Callable[..., Any], collate: Callable[..., Any]) -> None:
        import torch
        from torch.nn.parallel import DistributedDataParallel

        class _Loss(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, ids: Any, labels: Any, mask: Any, autocast: str | None) -> Any:
                return loss_fn(self.inner, ids, labels, mask, autocast)

        self.world = world
        self.device = device
        self.collate = collate
        ids = [world.local_rank] if device.startswith("cuda") else None
        self.ddp = DistributedDataParallel(_Loss(model), device_ids=ids, forward_sync_buffers=False)  # buffers are constants

    def step(self, encoded: Sequence[tuple[list[int], list[int]]], batch: Sequence[int], pad: int,
             autocast: str | None) -> tuple[Any, int]:
        """Backward of this rank's shard; returns the whole batch's mean loss (same on every rank)
        and its token count."""
        import torch.distributed as dist

        total = sum(answer_tokens(encoded[i][1]) for i in batch)
        mine = shard(batch, self.world)
        weight = 1.0
        if not mine:  # fewer examples than ranks: compute one with no weight, so every rank joins the all-reduce
            mine, weight = list(batch[:1]), 0.0
        share = weight * sum(answer_tokens(encoded[i][1]) for i in mine) / max(1, total)
        ids, labels, mask = self.collate(encoded, mine, pad, self.device)
        mean = self.ddp(ids, labels, mask, autocast)
        (mean * (share * self.world.size)).backward()
        loss = (mean.detach() * share).reshape(1)
        dist.all_reduce(loss)
        return loss[0], sum(len(encoded[i][0]) for i in batch)
