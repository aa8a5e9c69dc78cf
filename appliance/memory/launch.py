"""Start memory training in several processes on this machine (``memo train --processes N``).

The calling process is rank 0 and keeps its progress bar, cancel button and audit; ranks 1… are
spawned with ``torch.multiprocessing`` (one per GPU with NCCL, or CPU processes with gloo) and
open the vault from the key handed to them through the spawn pipe (:meth:`Vault.handoff`: never
written anywhere), then run the same :func:`~appliance.memory.train.train_memory` as their rank
(:mod:`appliance.memory.distributed`). A rank that dies fails the run; a re-run resumes from the
last checkpoint.
"""

from __future__ import annotations

import socket
from typing import Any

from appliance.errors import MemoError
from appliance.memory.distributed import World, cuda_count, teardown
from appliance.memory.train import train_memory
from appliance.vault.store import Vault, VaultHandoff


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def choose_backend(processes: int) -> str:
    """NCCL when there is a GPU for every process, else gloo (CPU processes)."""
    return "nccl" if cuda_count() >= processes else "gloo"


def auto_processes() -> int:
    """What the machine says: one process per visible GPU, one without GPUs."""
    return max(1, cuda_count())


def _rank_main(handoff: VaultHandoff, world: World, kwargs: dict[str, Any]) -> None:
    """A spawned rank (1…N-1): open the vault from the handed-over key, train, leave."""
    vault = handoff.open()
    try:
        train_memory(vault, world=world, **kwargs)
    finally:
        teardown(world)


def train_in_processes(vault: Vault, processes: int, backend: str | None = None, **kwargs: Any) -> Any:
    """``train_memory(vault, **kwargs)`` in ``processes`` ranks on this machine; this process is rank 0
    (``progress``, ``cancel`` and ``on_eval`` work as in one process). Returns rank 0's version."""
    if processes <= 1:
        return train_memory(vault, **kwargs)
    import torch.multiprocessing as mp

    backend = backend or choose_backend(processes)
    if backend == "nccl" and cuda_count() < processes:
        raise MemoError(f"{processes} processes need {processes} GPUs for NCCL but {cuda_count()} are visible; "
                        "lower --processes or use the gloo backend")
    init = f"tcp://127.0.0.1:{free_port()}"
    worlds = [World(r, processes, r, backend, init) for r in range(processes)]
    shared = {k: v for k, v in kwargs.items() if k not in ("progress", "cancel", "on_eval")}
    ctx = mp.get_context("spawn")
    handoff = vault.handoff()
    ranks = [ctx.Process(target=_rank_main, args=(handoff, w, shared), name=f"memo-train-rank{w.rank}") for w in worlds[1:]]
    for p in ranks:
        p.start()
    failed = False
    try:
        return train_memory(vault, world=worlds[0], **kwargs)
    except BaseException:
        failed = True
        raise
    finally:
        teardown(worlds[0])
        for p in ranks:
            p.join(timeout=None if not failed else 30)
            if p.is_alive():
                p.terminate()
                p.join()
        bad = [f"rank {w.rank} exited with {p.exitcode}" for w, p in zip(worlds[1:], ranks) if p.exitcode not in (0, None)]
        if bad and not failed:
            raise MemoError(f"distributed training: {', '.join(bad)}; see its error above and re-run (it resumes from the "
                            "last checkpoint)")
