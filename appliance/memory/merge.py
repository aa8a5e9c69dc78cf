"""Task vectors and their merges: new knowledge added to a memory without retraining it.

A memory version built with LoRA is the base model plus a sum of low-rank deltas (the adapters of
its lineage). An update trains one more adapter *from the promoted memory* on the new documents'
reflections — its task vector — and the candidate is the promoted memory's task vector merged with
the new one by peft's ``add_weighted_adapter``:

* ``linear`` — task arithmetic with weight 1 each, peft ``cat``: exact (the ranks add up), the same
  weights as applying the new adapter on top of the old one (sequential fine-tuning);
* ``ties``   — TIES (trim to ``density``, elect signs, disjoint mean), peft ``ties_svd``: computed on
  the full delta of each layer, then factored back to a LoRA by SVD;
* ``dare``   — DARE (random drop at ``1 - density``, rescale), peft ``dare_linear_svd``;
* ``dare_ties`` — DARE drop then TIES sign election, peft ``dare_ties_svd``.

The ``_svd`` variants are used because peft's plain ``ties``/``dare_*`` trim the A and B factors
separately, which is not the same as trimming the weight delta the factors stand for. Only plain
LoRA adapters are merged: rsLoRA, DoRA, LoRA bias and rank/alpha patterns give silently wrong
merges in peft, so they are refused. Adapters stay in RAM; callers store results through the vault.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from appliance.errors import MemoError

# our name -> peft combination_type
MERGE_METHODS: dict[str, str] = {"linear": "cat", "ties": "ties_svd", "dare": "dare_linear_svd", "dare_ties": "dare_ties_svd"}
DEFAULT_DENSITY = {"ties": 0.3, "dare": 0.5, "dare_ties": 0.5}  # TIES 0.3: the paper's setting
MAX_SVD_RANK = 128


@dataclass(frozen=True)
class MergeSpec:
    method: str  # a key of MERGE_METHODS
    density: float | None = None
    weights: tuple[float, float] = (1.0, 1.0)  # (old memory, new task vector)
    seed: int = 1125  # DARE drops at random: seeded, so a merge can be reproduced

    def __post_init__(self) -> None:
        if self.method not in MERGE_METHODS:
            raise MemoError(f"unknown merge method {self.method!r}: use one of {', '.join(MERGE_METHODS)}")
        if self.density is not None and not 0.0 < self.density <= 1.0:
            raise MemoError(f"merge density must be in (0, 1], not {self.density}")

    @property
    def effective_density(self) -> float | None:
        if self.method == "linear":
            return None
        return self.density if self.density is not None else DEFAULT_DENSITY[self.method]

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "peft_combination_type": MERGE_METHODS[self.method],
                "density": self.effective_density, "weights": list(self.weights), "seed": self.seed}


@dataclass
class Adapter:
    """One LoRA adapter in RAM: peft state dict (keys without adapter name) and its config dict."""

    name: str
    state: dict[str, Any]
    config: dict[str, Any]

    @property
    def rank(self) -> int:
        return int(self.config["r"])


def check_plain_lora(config: dict[str, Any], name: str = "adapter") -> None:
    """Refuse adapter features that peft's merge utilities get silently wrong."""
    problems = []
    if config.get("use_rslora"):
        problems.append("rsLoRA")
    if config.get("use_dora"):
        problems.append("DoRA")
    if config.get("bias", "none") != "none":
        problems.append(f"bias={config.get('bias')}")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        problems.append("rank/alpha patterns")
    if problems:
        raise MemoError(f"{name} uses {', '.join(problems)}: only plain LoRA adapters can be merged; retrain with plain LoRA")


def lora_config(config: dict[str, Any]):  # noqa: ANN201
    from peft import LoraConfig

    keep = ("r", "lora_alpha", "target_modules", "lora_dropout")
    return LoraConfig(**{k: (list(v) if k == "target_modules" else v) for k, v in config.items() if k in keep},
                      bias="none", task_type="CAUSAL_LM")


def load_adapter(vault, version_id: str) -> Adapter:  # noqa: ANN001
    from safetensors.torch import load

    from appliance.memory.model_io import adapter_files

    weights, cfg = adapter_files(version_id)
    if not vault.file_exists(weights):
        raise MemoError(f"{version_id} has no LoRA adapter in the vault (a full fine-tune cannot be merged)")
    config = json.loads(vault.read_file(cfg))
    check_plain_lora(config, version_id)
    return Adapter(version_id, load(vault.read_file(weights)), config)


class TaskVectorModel:
    """A base model with several named LoRA adapters loaded side by side (none merged into it).

    Merges are computed here with ``add_weighted_adapter``; any adapter can be made active to
    evaluate it without touching the base weights, so one base load serves many comparisons.
    """

    def __init__(self, base_model: Any) -> None:
        self.base = base_model
        self.peft: Any = None

    @property
    def adapters(self) -> list[str]:
        return [] if self.peft is None else list(self.peft.peft_config)

    def add(self, adapter: Adapter) -> str:
        from peft import get_peft_model, set_peft_model_state_dict

        check_plain_lora(adapter.config, adapter.name)
        cfg = lora_config(adapter.config)
        if self.peft is None:
            self.peft = get_peft_model(self.base, cfg, adapter_name=adapter.name)
        elif adapter.name in self.peft.peft_config:
            raise MemoError(f"adapter {adapter.name!r} is already loaded")
        else:
            self.peft.add_adapter(adapter.name, cfg)
        result = set_peft_model_state_dict(self.peft, adapter.state, adapter_name=adapter.name)
        missing = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
        if missing:
            raise MemoError(f"adapter {adapter.name!r} does not fit this base model ({len(missing)} unexpected tensors)")
        self.peft.eval()
        return adapter.name

    def combine(self, names: list[str], out: str, spec: MergeSpec | None = None) -> str:
        """Merge adapters ``names`` into a new adapter ``out``; ``spec`` None: exact sum (cat)."""
        import torch

        if not names:
            raise MemoError("nothing to merge")
        if out in self.adapters:
            raise MemoError(f"adapter {out!r} already exists")
        if spec is None:
            weights, ctype, density, seed = [1.0] * len(names), "cat", None, 0
        else:
            if len(names) != len(spec.weights):
                raise MemoError(f"{len(names)} adapters but {len(spec.weights)} weights")
            weights, ctype, density, seed = list(spec.weights), MERGE_METHODS[spec.method], spec.effective_density, spec.seed
        ranks = [int(self.peft.peft_config[n].r) for n in names]
        kwargs: dict[str, Any] = {}
        if ctype.endswith("_svd"):
            kwargs["svd_rank"] = min(sum(ranks), MAX_SVD_RANK)
        if density is not None:
            kwargs["density"] = density
        torch.manual_seed(seed)
        with torch.no_grad():
            self.peft.add_weighted_adapter(names, weights, out, combination_type=ctype, **kwargs)
        return out

    def merge(self, old: list[str], new: str, spec: MergeSpec, out: str) -> str:
        """The old memory's task vector (its adapters summed exactly) merged with ``new``."""
        old_name = old[0]
        if len(old) > 1:
            old_name = f"{out}__old"
            self.combine(old, old_name)
        return self.combine([old_name, new], out, spec)

    def export(self, name: str) -> Adapter:
        """The adapter's state dict (keys as ``save_adapter`` stores them) and its config."""
        from peft import get_peft_model_state_dict

        state = {k: v.detach().cpu().contiguous().clone() for k, v in get_peft_model_state_dict(self.peft, adapter_name=name).items()}
        config = self.peft.peft_config[name].to_dict()
        return Adapter(name, state, json.loads(json.dumps(config, default=list)))

    def activate(self, name: str | None) -> Any:
        """The model answering with adapter ``name`` (None: the bare base)."""
        if self.peft is None:
            return self.base
        if name is None:
            return _NoAdapter(self.peft)
        self.peft.set_adapter(name)
        return self.peft

    def delete(self, name: str) -> None:
        self.peft.delete_adapter(name)


class _NoAdapter:
    """A peft model seen with its adapters disabled (generate only)."""

    def __init__(self, peft_model: Any) -> None:
        self._m = peft_model

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        with self._m.disable_adapter():
            return self._m.generate(*args, **kwargs)

    def __getattr__(self, item: str) -> Any:
        return getattr(self._m, item)


def merge_into_adapter(base_model: Any, old: list[Adapter], new: Adapter, spec: MergeSpec) -> Adapter:
    """Merge on a fresh base: returns the merged adapter, relative to the base model."""
    tv = TaskVectorModel(base_model)
    names = [tv.add(a) for a in old]
    tv.add(new)
    merged = tv.merge(names, new.name, spec, "merged")
    return tv.export(merged)
