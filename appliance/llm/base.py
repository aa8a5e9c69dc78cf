"""What every language-model backend offers, so reflection and the executive can swap them.

A backend is anything with an ``identity`` and ``chat``: the local llama.cpp runtime, or an
external OpenAI-compatible endpoint an administrator approved in policy. Results carry token
counts and wall time, because throughput is what decides how large a corpus a box can reflect on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypedDict, runtime_checkable

from appliance.errors import MemoError

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length"]


class Message(TypedDict):
    """One chat turn, in the shape both llama.cpp templates and OpenAI endpoints take."""

    role: Role
    content: str


@dataclass(frozen=True)
class GenerationStats:
    """Token counts and wall time of one generation (or, combined, of a batch).

    ``cached_tokens``: how many of the prompt tokens a backend did not have to process because
    it reused them from a cache (a shared prefix); 0 where a backend does not say.
    """

    prompt_tokens: int
    completion_tokens: int
    seconds: float
    cached_tokens: int = 0

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens per wall-clock second (prompt processing time included)."""
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0

    @staticmethod
    def combine(parts: Iterable["GenerationStats"], concurrent: bool = True) -> "GenerationStats":
        """Totals for several generations; ``concurrent`` ones overlap, so their wall time is the max."""
        items = list(parts)
        seconds = [p.seconds for p in items]
        wall = (max(seconds) if concurrent else sum(seconds)) if seconds else 0.0
        return GenerationStats(
            prompt_tokens=sum(p.prompt_tokens for p in items),
            completion_tokens=sum(p.completion_tokens for p in items),
            seconds=wall,
            cached_tokens=sum(p.cached_tokens for p in items),
        )


@dataclass(frozen=True)
class ChatResult:
    """A model's answer plus what it cost; ``seed`` is the one actually used, for replay.

    ``token_logprobs``: the log-probability of each generated token, where the caller asked for it
    (the memory's confidence in its answer); None otherwise. ``token_starts``: the byte offset in
    ``text`` (UTF-8) at which each of those tokens begins (the end of the turn: at the text's end),
    so a caller can tell which part of the answer a token said.
    """

    text: str
    finish_reason: FinishReason
    stats: GenerationStats
    model: str
    seed: int | None = None
    token_logprobs: tuple[float, ...] | None = None
    token_starts: tuple[int, ...] | None = None

    def json(self) -> Any:
        """The answer parsed as JSON (for schema-constrained calls)."""
        try:
            return json.loads(self.text)
        except json.JSONDecodeError as exc:
            hint = " (generation hit max_tokens: raise it)" if self.finish_reason == "length" else ""
            raise MemoError(f"{self.model} returned invalid JSON at char {exc.pos}{hint}") from None


@runtime_checkable
class ChatModel(Protocol):
    """A chat backend. Both methods must be safe to call from one thread at a time."""

    @property
    def identity(self) -> str:
        """Stable name of backend, model and weights, recorded next to everything it produced."""
        ...

    def chat(
        self,
        messages: Sequence[Message],
        max_tokens: int = 256,
        temperature: float = 0.0,
        json_schema: Mapping[str, Any] | None = None,
    ) -> ChatResult: ...

    def chat_many(
        self,
        conversations: Sequence[Sequence[Message]],
        max_tokens: int = 256,
        temperature: float = 0.0,
        json_schema: Mapping[str, Any] | None = None,
    ) -> list[ChatResult]:
        """Answer several conversations; a backend may batch them (results keep input order)."""
        ...


def user(content: str) -> Message:
    return {"role": "user", "content": content}


def system(content: str) -> Message:
    return {"role": "system", "content": content}


def check_messages(messages: Sequence[Message]) -> None:
    """Reject malformed turns early, with a message naming the turn, rather than deep in a backend."""
    if not messages:
        raise MemoError("a chat needs at least one message")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or m.get("role") not in ("system", "user", "assistant"):
            raise MemoError(f"message {i}: role must be system, user or assistant")
        if not isinstance(m.get("content"), str):
            raise MemoError(f"message {i}: content must be text")
