"""A generator pool: several OpenAI-compatible servers (vLLM, llama.cpp's server) used as one
:class:`~appliance.llm.base.ChatModel`.

A site that outgrows one box already runs inference servers on its GPU nodes; reflection drives
them, it does not schedule them. ``chat_many`` fans a batch out over the members with up to
``in_flight`` requests outstanding at each (a server batches concurrent requests itself: that is
where vLLM's throughput comes from), and hands a request that failed — the member is down, timed
out, or said 429/5xx — to another member, after which the failed member rests for a back-off that
doubles with each failure in a row. A batch therefore completes while any member answers; only
when every try of a request failed does it raise, and the caller (one reflection unit) is then not
stored, so a re-run redoes that unit and no other. Errors that no other member would answer
differently (a refusal by policy, a malformed request) are raised at once.

Each request is one call of the member's :class:`OpenAICompatModel`: approved against the policy
in force and audited (``llm.external.chat``) on its own; a member taken out of rotation is audited
as ``llm.pool.member_down``. The pool's identity names the pool and its model, never its members,
so reflections do not change when a node is added or removed.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from appliance.config import current_actor
from appliance.errors import MemoError
from appliance.llm.base import ChatModel, ChatResult, Message
from appliance.llm.openai_compat import EndpointUnavailable, OpenAICompatModel
from appliance.policy import DataKind, Policy
from appliance.policy.schema import Pool
from appliance.vault.store import Vault


@dataclass(frozen=True)
class Backoff:
    """How a pool treats failures: tries per request beyond the first, and a member's rest."""

    retries: int = 3
    first_s: float = 1.0
    max_s: float = 60.0

    def rest(self, failures: int) -> float:
        """Seconds a member that failed ``failures`` times in a row is left out."""
        return min(self.max_s, self.first_s * 2 ** max(0, failures - 1))


@dataclass
class MemberStats:
    """What one member did, for progress lines and benchmarks."""

    name: str
    requests: int = 0
    failures: int = 0
    completion_tokens: int = 0
    prompt_tokens: int = 0


@dataclass
class _Member:
    name: str
    model: ChatModel
    in_flight: int
    busy: int = 0
    failures_in_row: int = 0
    down_until: float = 0.0
    stats: MemberStats = field(init=False)

    def __post_init__(self) -> None:
        self.stats = MemberStats(self.name)

    def free(self, now: float) -> bool:
        return self.busy < self.in_flight and now >= self.down_until


@dataclass
class _Task:
    index: int
    tries: int = 0
    tried: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)


class GeneratorPool:
    """Several chat models serving one model, used as one (see the module docstring)."""

    def __init__(self, name: str, model: str, members: Sequence[tuple[str, ChatModel]], in_flight: int = 4,
                 backoff: Backoff | None = None, on_down: Callable[[str, str, float], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not members:
            raise MemoError(f"generator pool {name!r} has no members")
        self.name = name
        self.model = model
        self.backoff = backoff or Backoff()
        self._members = [_Member(n, m, in_flight) for n, m in members]
        self._on_down = on_down
        self._clock = clock
        self._lock = threading.Lock()  # one batch at a time: the members' slots are this batch's
        self._executor = ThreadPoolExecutor(max_workers=in_flight * len(self._members), thread_name_prefix=f"pool-{name}")

    @classmethod
    def from_policy(cls, policy: Policy, pool: Pool, vault: Vault, sends: Collection[DataKind] | None = None) -> "GeneratorPool":
        """The pool ``pool`` of ``policy``: each member opened through the policy gate (refused there
        if it is not an approved generator that may receive what is sent)."""
        problems = policy.pool_problems(pool)
        if problems:
            raise MemoError(problems[0])
        members = [(n, OpenAICompatModel.from_policy(policy, n, "generator", vault, sends)) for n in pool.endpoints]
        model = policy.endpoint(pool.endpoints[0]).model

        def down(member: str, error: str, rest: float) -> None:
            vault.audit.append(current_actor(), "llm.pool.member_down", member, pool=pool.name, error=error,
                               rest_s=round(rest, 2))

        return cls(pool.name, model, members, pool.in_flight,
                   Backoff(pool.retries, pool.backoff_s, pool.max_backoff_s), on_down=down)

    @property
    def identity(self) -> str:
        return f"pool:{self.name}:{self.model}"

    @property
    def members(self) -> list[MemberStats]:
        return [m.stats for m in self._members]

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "GeneratorPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ calls
    def chat(self, messages: Sequence[Message], max_tokens: int = 256, temperature: float = 0.0,
             json_schema: Mapping[str, Any] | None = None, *, seed: int | None = None) -> ChatResult:
        return self.chat_many([messages], max_tokens, temperature, json_schema, seed=seed)[0]

    def chat_many(self, conversations: Sequence[Sequence[Message]], max_tokens: int = 256, temperature: float = 0.0,
                  json_schema: Mapping[str, Any] | None = None, *, seed: int | None = None) -> list[ChatResult]:
        """Every conversation answered once, in input order, by whichever member was free."""
        if not conversations:
            return []

        def call(member: _Member, messages: Sequence[Message]) -> ChatResult:
            model: Any = member.model
            return model.chat(messages, max_tokens, temperature, json_schema, seed=seed)

        with self._lock:
            return self._run([list(c) for c in conversations], call)

    def _pick(self, task: _Task, now: float) -> _Member | None:
        """A free member, preferring one that has not failed this request, then the least busy."""
        free = [m for m in self._members if m.free(now)]
        if not free:
            return None
        fresh = [m for m in free if m.name not in task.tried] or free
        return min(fresh, key=lambda m: (m.busy / m.in_flight, m.failures_in_row))

    def _run(self, conversations: list[list[Message]], call: Callable[[_Member, Sequence[Message]], ChatResult]) -> list[ChatResult]:
        results: list[ChatResult | None] = [None] * len(conversations)
        queue: deque[_Task] = deque(_Task(i) for i in range(len(conversations)))
        running: dict[Future[ChatResult], tuple[_Task, _Member]] = {}
        try:
            while queue or running:
                now = self._clock()
                while queue:
                    member = self._pick(queue[0], now)
                    if member is None:
                        break
                    task = queue.popleft()
                    task.tries += 1
                    task.tried.add(member.name)
                    member.busy += 1
                    member.stats.requests += 1
                    running[self._executor.submit(call, member, conversations[task.index])] = (task, member)
                if not running:  # every member is resting: wait for the first to come back
                    time.sleep(max(0.0, min(m.down_until for m in self._members) - self._clock()))
                    continue
                resting = [m.down_until - now for m in self._members if m.down_until > now]
                done, _ = wait(list(running), timeout=min(resting) if queue and resting else None,
                               return_when=FIRST_COMPLETED)
                for fut in done:
                    task, member = running.pop(fut)
                    member.busy -= 1
                    self._settle(fut, task, member, results, queue)
        except BaseException:
            for fut in running:
                fut.cancel()
            raise
        return results  # type: ignore[return-value]

    def _settle(self, fut: Future[ChatResult], task: _Task, member: _Member, results: list[ChatResult | None],
                queue: deque[_Task]) -> None:
        try:
            result = fut.result()
        except EndpointUnavailable as exc:
            member.failures_in_row += 1
            member.stats.failures += 1
            rest = self.backoff.rest(member.failures_in_row)
            member.down_until = self._clock() + rest
            if member.failures_in_row == 1 and self._on_down is not None:
                self._on_down(member.name, str(exc), rest)
            task.errors.append(f"{member.name}: {exc}")
            if task.tries > self.backoff.retries:
                raise MemoError(f"generator pool {self.name!r}: a request failed {task.tries} times "
                                f"({'; '.join(task.errors[-3:])}); check the pool's servers and re-run "
                                "(finished units are kept)") from None
            queue.appendleft(task)  # retried first, on another member when one is free
            return
        member.failures_in_row = 0
        member.down_until = 0.0
        member.stats.completion_tokens += result.stats.completion_tokens
        member.stats.prompt_tokens += result.stats.prompt_tokens
        results[task.index] = result
