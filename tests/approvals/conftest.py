"""Approval fixtures: a vault with memory versions whose (small, real) LoRA weights are in the vault,
approver keys on disk, and a policy directory naming who may approve."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.approvals.keys import generate, load_private
from appliance.memory.model_io import save_adapter
from appliance.memory.versions import MemoryVersion, create_version, update_metrics
from appliance.policy import Policy, load_policy
from appliance.vault.store import Vault


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (private key file, public key text)."""
    out = {}
    for name in ("alice", "bob", "mallory"):
        path = tmp_path / "keys" / f"{name}.key"
        path.parent.mkdir(exist_ok=True)
        out[name] = (path, generate(path))
    return out


@pytest.fixture
def make_policy(tmp_path: Path, keys) -> Callable[..., Policy]:  # noqa: ANN001
    def make(required: int = 1, min_retention: float | None = None, approvers: tuple[str, ...] = ("alice", "bob")) -> Policy:
        d = tmp_path / f"policies-{required}-{min_retention}-{'-'.join(approvers) or 'none'}"
        d.mkdir(exist_ok=True)
        lines = ["version: 1", "approval:", f"  approvals_required: {required}"]
        if min_retention is not None:
            lines.append(f"  min_retention: {min_retention}")
        lines.append("principals:")
        for name in approvers:
            lines.append(f'  - {{name: {name}, roles: [approver], public_key: "{keys[name][1]}"}}')
        lines.append(f'  - {{name: mallory, roles: [operator], public_key: "{keys["mallory"][1]}"}}')
        (d / "approvers.yaml").write_text("\n".join(lines) + "\n")
        return load_policy(d)
    return make


def key(keys, name: str):  # noqa: ANN001, ANN201
    return load_private(keys[name][0])


def make_version(vault: Vault, parent: str | None = None, seed: int = 0, exported: bool = True,
                 retention: float | None = None) -> MemoryVersion:
    """A LoRA memory version with real (tiny) adapter weights in the vault and, optionally, a
    recorded verified f16 export and a candidate evaluation report."""
    import torch

    g = torch.Generator().manual_seed(seed)
    state = {f"base_model.model.model.layers.0.self_attn.q_proj.lora_{ab}.weight": torch.randn(4, 8, generator=g)
             for ab in ("A", "B")}
    v = create_version(vault, parent, "smollm2-135m-instruct-q4_1", "lora", "trainer",
                       {"reflections": {"documents": []}})
    save_adapter(vault, v.id, state, {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]})
    metrics = {}
    if exported:
        metrics["export"] = {"f16": {"sha256": "0" * 64, "answer_agreement": 1.0}}
    if retention is not None:
        metrics["candidate_eval"] = {"retention": retention, "superseded": {"candidate": 1.0}}
    if metrics:
        update_metrics(vault, v.id, **metrics)
    return v
