"""An external OpenAI-compatible endpoint as a :class:`~appliance.llm.base.ChatModel`, gated by policy.

Data leaving an air-gapped site is the risk this module exists to control:

* The endpoint (URL, model, purpose, kinds of data sent) must be approved in ``policies/*.yaml``.
  The check is pure and runs before any DNS lookup or socket, at construction and again before
  every call (re-reading the policy files, so a revocation takes effect immediately).
* Requests go exactly to the approved URL: environment proxies are ignored and redirects refused,
  so a ``302`` cannot forward a prompt to an unapproved host.
* Every call (and every refusal) is audited: endpoint, model, purpose, token counts, latency,
  status. Never prompt or answer text.

Plain ``urllib`` keeps the dependency list short; one POST per call is all that is needed.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from appliance.config import current_actor
from appliance.errors import MemoError
from appliance.llm.base import ChatResult, FinishReason, GenerationStats, Message, check_messages
from appliance.policy import DataKind, Endpoint, Policy, Purpose, load_policy, normalise_url
from appliance.vault.store import Vault

DEFAULT_SENDS: dict[str, frozenset[DataKind]] = {
    "generator": frozenset({"document_text"}),
    "executive": frozenset({"questions", "sub_questions", "memory_answers"}),
}
"""What each purpose sends unless the caller says otherwise: a generator reads documents, an
executive sees questions and the memory's answers."""


RETRYABLE_HTTP = frozenset({408, 429, 500, 502, 503, 504})
"""Statuses that say "not now" rather than "never": a pool retries them on another member."""


class EndpointUnavailable(MemoError):
    """The endpoint could not answer this time (down, timed out, overloaded): the request itself was
    fine, so another endpoint (or a later try) may answer it. Every other error is final."""


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None  # urllib then raises HTTPError with the 3xx status


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), _RefuseRedirects())


def _error_text(body: bytes) -> str:
    """A short reason from an error body (servers put it in error.message or detail)."""
    try:
        doc = json.loads(body)
        if isinstance(doc, dict):
            err = doc.get("error")
            msg = err.get("message") if isinstance(err, dict) else err or doc.get("detail")
            if msg:
                return " ".join(str(msg).split())[:200]
    except ValueError:
        pass
    return " ".join(body.decode("utf-8", "replace").split())[:200]


class OpenAICompatModel:
    """Chat with an approved external endpoint. Construction refuses unapproved ones."""

    def __init__(
        self,
        policy: Policy,
        url: str,
        model: str,
        purpose: Purpose,
        vault: Vault,
        sends: Collection[DataKind] | None = None,
    ) -> None:
        self.vault = vault
        self.purpose: Purpose = purpose
        self.sends = frozenset(sends if sends is not None else DEFAULT_SENDS[purpose])
        self._policy_dir = policy.directory
        self.endpoint = self._approve(policy, url, model)
        self.url = normalise_url(self.endpoint.url or url)
        self.model = model
        self._api_key = self._key(self.endpoint)
        self._opener = _opener()

    @classmethod
    def from_policy(
        cls, policy: Policy, name: str, purpose: Purpose, vault: Vault, sends: Collection[DataKind] | None = None
    ) -> "OpenAICompatModel":
        """The endpoint called ``name`` in policy, for ``purpose``."""
        ep = policy.endpoint(name)
        if not ep.external or ep.url is None:
            raise MemoError(f"endpoint {name!r} in {policy.file_of(ep)} is local; use the llama.cpp backend")
        return cls(policy, ep.url, ep.model, purpose, vault, sends)

    @property
    def identity(self) -> str:
        return f"openai:{self.endpoint.name}:{self.model}@{self.url}"

    # -------------------------------------------------------------- policy
    def _approve(self, policy: Policy, url: str, model: str) -> Endpoint:
        try:
            return policy.approve_external(url, model, self.purpose, self.sends)
        except MemoError as exc:
            self.vault.audit.append(
                current_actor(),
                "llm.external.refused",
                url,
                model=model,
                purpose=self.purpose,
                sends=sorted(self.sends),
                policy_dir=str(policy.directory),
                reason=str(exc),
            )
            raise

    @staticmethod
    def _key(ep: Endpoint) -> str | None:
        if ep.api_key_env is None:
            return None
        key = os.environ.get(ep.api_key_env)
        if not key:
            raise MemoError(f"endpoint {ep.name!r} needs its API key in the environment variable {ep.api_key_env}")
        return key

    # -------------------------------------------------------------- calls
    def _body(
        self,
        messages: Sequence[Message],
        max_tokens: int,
        temperature: float,
        json_schema: Mapping[str, Any] | None,
        seed: int | None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": False,
        }
        if seed is not None:
            body["seed"] = seed
        if json_schema is not None:
            if self.endpoint.json_mode == "json_schema":  # OpenAI, vLLM, llama.cpp's llama-server
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "response", "schema": dict(json_schema), "strict": True},
                }
            else:  # llama-cpp-python's server, llama-server
                body["response_format"] = {"type": "json_object", "schema": dict(json_schema)}
        return body

    def _audit(self, started: float, **details: Any) -> None:
        self.vault.audit.append(
            current_actor(),
            "llm.external.chat",
            self.endpoint.name,
            url=self.url,
            model=self.model,
            purpose=self.purpose,
            sends=sorted(self.sends),
            latency_s=round(time.monotonic() - started, 3),
            **details,
        )

    def chat(
        self,
        messages: Sequence[Message],
        max_tokens: int = 256,
        temperature: float = 0.0,
        json_schema: Mapping[str, Any] | None = None,
        *,
        seed: int | None = None,
    ) -> ChatResult:
        check_messages(messages)
        # Re-read the policy: a revocation applies to a running service at its next call.
        self._approve(load_policy(self._policy_dir), self.url, self.model)
        data = json.dumps(self._body(messages, max_tokens, temperature, json_schema, seed)).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(f"{self.url}/chat/completions", data=data, headers=headers, method="POST")
        started = time.monotonic()
        try:
            with self._opener.open(request, timeout=self.endpoint.timeout_s) as resp:
                status = resp.status
                payload = resp.read()
        except urllib.error.HTTPError as exc:
            reason = _error_text(exc.read() or b"")
            self._audit(started, status="error", http_status=exc.code)
            kind = EndpointUnavailable if exc.code in RETRYABLE_HTTP else MemoError
            raise kind(f"{self.identity} answered HTTP {exc.code}: {reason}") from None
        except (urllib.error.URLError, TimeoutError, OSError, http.client.HTTPException) as exc:
            why = getattr(exc, "reason", exc)
            self._audit(started, status="error", error=type(why).__name__)
            raise EndpointUnavailable(f"cannot reach {self.url} ({why}); check the endpoint is up") from None
        try:
            doc = json.loads(payload)
            choice = doc["choices"][0]
            text = choice["message"]["content"] or ""
            usage = doc.get("usage") or {}
        except (ValueError, KeyError, IndexError, TypeError):
            self._audit(started, status="error", http_status=status, error="bad_response")
            raise MemoError(f"{self.identity} returned a response that is not an OpenAI chat completion") from None
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        finish: FinishReason = "length" if choice.get("finish_reason") == "length" else "stop"
        seconds = time.monotonic() - started
        self._audit(
            started,
            status="ok",
            http_status=status,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            finish_reason=finish,
        )
        return ChatResult(text, finish, GenerationStats(prompt_tokens, completion_tokens, seconds), self.identity, seed)

    def chat_many(
        self,
        conversations: Sequence[Sequence[Message]],
        max_tokens: int = 256,
        temperature: float = 0.0,
        json_schema: Mapping[str, Any] | None = None,
        *,
        seed: int | None = None,
    ) -> list[ChatResult]:
        """One request after another: each is approved and audited on its own."""
        return [self.chat(m, max_tokens, temperature, json_schema, seed=seed) for m in conversations]
