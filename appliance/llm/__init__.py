"""Language-model backends: local llama.cpp, policy-gated OpenAI-compatible endpoints, and the registry.

Only the common types are imported here; ``appliance.llm.llamacpp`` loads the llama.cpp library,
so callers import it (and ``openai_compat``, ``registry``) explicitly when they need them.
"""

from appliance.llm.base import ChatModel, ChatResult, GenerationStats, Message, system, user

__all__ = ["ChatModel", "ChatResult", "GenerationStats", "Message", "system", "user"]
