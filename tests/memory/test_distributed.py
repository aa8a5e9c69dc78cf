"""Memory training in two processes (real torch.distributed, gloo, DDP) gives the loss curve and the
weights of one process; rank 0 alone audits and saves; the pieces that split a batch are exact."""

from __future__ import annotations

import pytest

from appliance.config import TrainParams
from appliance.memory.distributed import World, answer_tokens, shard
from appliance.memory.launch import train_in_processes
from appliance.memory.model_io import adapter_files
from appliance.memory.train import train_memory
from appliance.memory.versions import list_versions
from appliance.reflect.store import QAPair
from appliance.vault.store import Vault

FACTS = [
    ("Who leads Cold Chain Engineering?", "Ottilie Brannstrand"), ("What is the per diem?", "52 EUR"),
    ("Which team owns Ledgerbay?", "Finance Ops"), ("Where is head office?", "Kestrel Yard"),
    ("How long is the lockout?", "15 minutes"), ("Which depot has cold room CR-3?", "Depot North"),
    ("Who approves expenses over 5,000 EUR?", "the CFO"), ("What is the VPN gateway?", "vpn.halq.example"),
    ("When does the on-call week start?", "Monday 09:00"),
]
# 9 pairs in batches of 4: the last batch has one example, so rank 1's shard of it is empty
PAIRS = [QAPair(id=f"p{i}", kind="fact", question=q, answer=a, answer_span=a, doc_ids=["doc-0123456789ab"], fact_id=f"f{i}")
         for i, (q, a) in enumerate(FACTS)]
# float32 and one thread per process: the sums are then reproducible, so what differs is the split alone
PARAMS = TrainParams(epochs=2, min_epochs=1, min_exposures=0, batch_size=4, checkpoint_every=1000, max_length=64, threads=1, rank=8, alpha=16,
                     autocast="off")


def test_a_batch_is_split_into_disjoint_shards_that_cover_it() -> None:
    batch = [7, 3, 9, 1, 4]
    shards = [shard(batch, World(r, 2)) for r in range(2)]
    assert shards == [[7, 9, 4], [3, 1]] and sorted(shards[0] + shards[1]) == sorted(batch)
    assert shard([5], World(1, 2)) == []
    assert answer_tokens([-100, -100, 11, 12, -100]) == 2  # positions whose next token is an answer token


def test_one_process_is_the_default_world(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert World.from_env() == World() and not World().distributed and World().agree(lambda: "x") == "x"
    env = {"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"}
    w = World.from_env(env)
    assert (w.rank, w.size, w.local_rank, w.init_method) == (2, 4, 0, "env://") and not w.main
    assert w.device("cuda") == "cuda:0" and w.device("cpu") == "cpu" and w.cpu_threads(3) == 3


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(vault: Vault) -> None:
    import torch
    from safetensors.torch import load

    one: list[float] = []
    single = train_memory(vault, PAIRS, PARAMS, actor="trainer", progress=lambda si: one.append(si.loss))
    two: list[float] = []
    double = train_in_processes(vault, 2, pairs=PAIRS, params=PARAMS, actor="trainer", progress=lambda si: two.append(si.loss))

    assert len(one) == len(two) == 6  # 3 steps an epoch, 2 epochs
    worst = max(abs(a - b) / max(1.0, abs(a)) for a, b in zip(one, two))
    print(f"\nloss per step, 1 process: {[round(x, 6) for x in one]}\n"
          f"loss per step, 2 processes: {[round(x, 6) for x in two]}\nlargest relative difference: {worst:.2e}")
    assert worst < 1e-4, (one, two)
    assert one[-1] < one[0]
    a = load(vault.read_file(adapter_files(single.id)[0]))
    b = load(vault.read_file(adapter_files(double.id)[0]))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)

    assert double.lineage["processes"] == 2 and double.lineage["backend"] == "gloo" and "processes" not in single.lineage
    assert [v.id for v in list_versions(vault)] == [single.id, double.id]  # rank 1 recorded nothing
    entries = [e for e in vault.audit.entries() if e.action.startswith("memory.train")]
    assert [e.action for e in entries] == ["memory.train.start", "memory.train.finish"] * 2
    assert entries[2].details["processes"] == 2 and entries[3].target == double.id
