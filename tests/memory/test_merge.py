"""Task-vector merges through peft's add_weighted_adapter, on a tiny randomly initialised model."""

from __future__ import annotations

import pytest
import torch

from appliance.errors import MemoError
from appliance.memory.merge import Adapter, MergeSpec, TaskVectorModel, check_plain_lora, load_adapter, lora_config, merge_into_adapter
from appliance.memory.model_io import save_adapter
from appliance.memory.versions import chain, create_version

TARGETS = ["q_proj", "v_proj", "down_proj"]


def tiny_base():  # noqa: ANN201
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4)
    return LlamaForCausalLM(cfg).eval()


def random_adapter(name: str, seed: int, r: int = 4) -> Adapter:
    from peft import get_peft_model, get_peft_model_state_dict

    model = get_peft_model(tiny_base(), lora_config({"r": r, "lora_alpha": 2 * r, "target_modules": TARGETS}))
    g = torch.Generator().manual_seed(seed)
    for n, p in model.named_parameters():
        if "lora_" in n:
            p.data = torch.randn(p.shape, generator=g) * 0.2
    state = {k: v.clone() for k, v in get_peft_model_state_dict(model).items()}
    return Adapter(name, state, model.peft_config["default"].to_dict())


def delta(adapter: Adapter) -> dict[str, torch.Tensor]:
    """Per-layer weight delta B·A·scaling of an adapter (the task vector in weight space)."""
    scale = adapter.config["lora_alpha"] / adapter.config["r"]
    out = {}
    for k, a in adapter.state.items():
        if "lora_A" in k:
            out[k.replace(".lora_A.weight", "")] = adapter.state[k.replace("lora_A", "lora_B")] @ a * scale
    return out


def apply_all(adapters: list[Adapter]):  # noqa: ANN201
    from peft import get_peft_model, set_peft_model_state_dict

    model = tiny_base()
    for a in adapters:
        peft = get_peft_model(model, lora_config(a.config))
        set_peft_model_state_dict(peft, a.state)
        model = peft.merge_and_unload()
    return model


X = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(5))


def logits(model) -> torch.Tensor:  # noqa: ANN001
    with torch.no_grad():
        return model(X).logits


def test_linear_merge_is_exact_task_arithmetic() -> None:
    old1, old2, new = random_adapter("mem-old1", 1), random_adapter("mem-old2", 2), random_adapter("mem-new", 3)
    merged = merge_into_adapter(tiny_base(), [old1, old2], new, MergeSpec("linear"))
    assert merged.rank == 12  # cat: the ranks add up, nothing is lost
    want = logits(apply_all([old1, old2, new]))  # = training the new adapter on top, sequentially
    got = logits(apply_all([merged]))
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(logits(tiny_base()), want, atol=1e-3)


def test_ties_keeps_agreeing_values_and_trims() -> None:
    tv = random_adapter("mem-tv", 4)
    # TIES with full density on a task vector and itself: signs agree everywhere, the disjoint mean is the vector
    same = merge_into_adapter(tiny_base(), [tv], Adapter("mem-tv2", tv.state, tv.config), MergeSpec("ties", density=1.0))
    for k, d in delta(same).items():
        assert torch.allclose(d, delta(tv)[k], atol=1e-4), k
    # linear on the same pair doubles it
    double = merge_into_adapter(tiny_base(), [tv], Adapter("mem-tv2", tv.state, tv.config), MergeSpec("linear"))
    for k, d in delta(double).items():
        assert torch.allclose(d, 2 * delta(tv)[k], atol=1e-4), k
    # at density 0.3 most of each delta is trimmed away: the merge differs from the exact sum
    other = random_adapter("mem-other", 5)
    trimmed = merge_into_adapter(tiny_base(), [tv], other, MergeSpec("ties"))
    exact = merge_into_adapter(tiny_base(), [tv], other, MergeSpec("linear"))
    k = next(iter(delta(exact)))
    assert not torch.allclose(delta(trimmed)[k], delta(exact)[k], atol=1e-3)
    assert trimmed.config["r"] == 8 and not trimmed.config.get("rank_pattern")


def test_dare_is_seeded() -> None:
    old, new = random_adapter("mem-a1", 6), random_adapter("mem-b1", 7)
    one = merge_into_adapter(tiny_base(), [old], new, MergeSpec("dare", seed=1))
    again = merge_into_adapter(tiny_base(), [old], new, MergeSpec("dare", seed=1))
    other = merge_into_adapter(tiny_base(), [old], new, MergeSpec("dare", seed=2))
    k = next(iter(one.state))
    assert torch.equal(one.state[k], again.state[k])
    assert not torch.equal(delta(one)[k.replace(".lora_A.weight", "").replace(".lora_B.weight", "")],
                           delta(other)[k.replace(".lora_A.weight", "").replace(".lora_B.weight", "")])


def test_one_base_many_adapters_switch_without_touching_base() -> None:
    old, new = random_adapter("mem-c1", 8), random_adapter("mem-c2", 9)
    tv = TaskVectorModel(tiny_base())
    tv.add(old)
    tv.add(new)
    tv.merge([old.name], new.name, MergeSpec("linear"), "merged_linear")
    assert torch.allclose(logits(tv.activate(old.name)), logits(apply_all([old])), atol=1e-5)
    assert torch.allclose(logits(tv.activate("merged_linear")), logits(apply_all([old, new])), atol=1e-5)
    with pytest.raises(MemoError, match="already"):
        tv.add(old)


@pytest.mark.parametrize(("extra", "what"), [({"use_rslora": True}, "rsLoRA"), ({"use_dora": True}, "DoRA"),
                                             ({"bias": "all"}, "bias=all"), ({"rank_pattern": {"q_proj": 8}}, "rank/alpha")])
def test_only_plain_lora_is_merged(extra: dict, what: str) -> None:
    a = random_adapter("mem-d1", 10)
    with pytest.raises(MemoError, match=what):
        check_plain_lora({**a.config, **extra}, "mem-d1")
    with pytest.raises(MemoError, match=what):
        TaskVectorModel(tiny_base()).add(Adapter("mem-d1", a.state, {**a.config, **extra}))


def test_unknown_method_and_density() -> None:
    with pytest.raises(MemoError, match="unknown merge method"):
        MergeSpec("average")
    with pytest.raises(MemoError, match="density"):
        MergeSpec("ties", density=0.0)
    assert MergeSpec("ties").to_dict()["peft_combination_type"] == "ties_svd"
    assert MergeSpec("ties").effective_density == 0.3 and MergeSpec("linear").effective_density is None


def test_merged_version_is_a_chain_root_and_stored_encrypted(vault) -> None:  # noqa: ANN001
    a = random_adapter("x", 11)
    v1 = create_version(vault, None, "base", "lora", "t", {})
    v2 = create_version(vault, v1.id, "base", "lora", "t", {})
    v3 = create_version(vault, v2.id, "base", "merge", "t", {"merge": {"old": [v1.id], "task_vector": v2.id}})
    v4 = create_version(vault, v3.id, "base", "lora", "t", {})
    assert [v.id for v in chain(vault, v2.id)] == [v1.id, v2.id]
    assert [v.id for v in chain(vault, v4.id)] == [v3.id, v4.id]  # the merge holds the old adapters' sum
    save_adapter(vault, v3.id, a.state, a.config)
    back = load_adapter(vault, v3.id)
    assert all(torch.equal(back.state[k], a.state[k]) for k in a.state)
    needle = a.state[next(iter(a.state))].numpy().tobytes()[:32]
    assert not any(needle in f.read_bytes() for f in vault.home.rglob("*") if f.is_file())
    with pytest.raises(MemoError, match="no LoRA adapter"):
        load_adapter(vault, v1.id)
