"""Open the model a policy endpoint names, for one purpose: the single way stages get a model.

Reflection and the executive ask for an endpoint by name (default ``local``); the policy decides
whether it runs here (llama.cpp on a registered, checksummed model) or is an approved external
server, and what data may be sent to it. A generator may also be a pool (``pools:`` in policy):
several approved servers of one model, used as one (:mod:`appliance.llm.pool`).
"""

from __future__ import annotations

from collections.abc import Collection

from appliance.errors import MemoError
from appliance.llm.base import ChatModel
from appliance.policy.loader import load_policy
from appliance.vault.store import Vault

DEFAULT_ENDPOINT = "local"


def open_model(vault: Vault, endpoint: str = DEFAULT_ENDPOINT, purpose: str = "generator",
               sends: Collection[str] | None = None) -> ChatModel:
    policy = load_policy(vault.settings)
    pool = policy.pool(endpoint)
    if pool is not None:
        if purpose != pool.purpose:
            raise MemoError(f"{endpoint!r} is a {pool.purpose} pool, not an {purpose}; name an endpoint approved as "
                            f"{purpose} in {policy.file_of(pool)}")
        from appliance.llm.pool import GeneratorPool

        return GeneratorPool.from_policy(policy, pool, vault, sends)  # type: ignore[arg-type]
    ep = policy.endpoint(endpoint)
    if purpose not in ep.purposes:
        raise MemoError(f"endpoint {endpoint!r} is not approved as {purpose}; edit purposes in {policy.file_of(ep)}")
    if ep.external:
        from appliance.llm.openai_compat import OpenAICompatModel

        return OpenAICompatModel.from_policy(policy, endpoint, purpose, vault, sends)  # type: ignore[arg-type]
    from appliance.llm.llamacpp import LlamaCppModel
    from appliance.llm.registry import ModelRegistry

    registry = ModelRegistry(vault)
    registry.refresh()
    return LlamaCppModel.load(registry, ep.model)
