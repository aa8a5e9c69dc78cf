"""Open the model a policy endpoint names, for one purpose: the single way stages get a model.

Reflection and the executive ask for an endpoint by name (default ``local``); the policy decides
whether it runs here (llama.cpp on a registered, checksummed model) or is an approved external
server, and what data may be sent to it.
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
