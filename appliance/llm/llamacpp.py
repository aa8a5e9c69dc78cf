"""Local generation with llama.cpp (through llama-cpp-python's C API bindings).

Why not ``llama_cpp.Llama``? It decodes one sequence at a time; reflection generation sends
hundreds of independent prompts, and llama.cpp decoding several sequences in one batch was ~1.7x
the throughput of one-by-one on 2 cores (see ``chat_many``). So this module drives the C API
directly: one engine with continuous batching serves single calls (a batch of one) and many, with
the same sampler chain as ``Llama`` (repeat penalty, then grammar, then greedy or top-k/p/min-p +
temperature), so a prompt's answer does not depend on what it was batched with.

Also handled here:

* **Threads** from the cores other processes leave free (:class:`~appliance.llm.cpu.CoreMeter`),
  re-checked every second while generating; never llama.cpp's half-the-cores default.
* **Encrypted models** are loaded from ``/proc/self/fd/N`` of a sealed memfd
  (:meth:`ModelRegistry.open_gguf`): no plaintext GGUF on disk.
* **Noise**: llama.cpp's log goes to the ``appliance.llm.llamacpp`` logger (DEBUG), not stderr.
* **CPU kernels**: builds with ``-march=native`` on a CPU advertising AMX use AMX/repacked weight
  buffers. In some VMs AMX instructions fault (SIGSEGV in ``ldtilecfg``), killing the process at the
  first multi-token decode. A throw-away subprocess probes that once per model; if it crashes the
  model is loaded without those buffers (``MEMO_LLAMA_EXTRA_BUFFERS=0|1`` skips the probe).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import llama_cpp.llama_cpp as C
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from llama_cpp.llama_grammar import json_schema_to_gbnf

from appliance.errors import MemoError
from appliance.llm.base import ChatResult, FinishReason, GenerationStats, Message, check_messages
from appliance.llm.cpu import CoreMeter
from appliance.llm.registry import DEFAULT_MODEL, ModelRegistry

log = logging.getLogger(__name__)

_init_lock = threading.Lock()
_initialised = False
_probe_cache: dict[str, bool] = {}
_GGML_LOG_LEVEL_ERROR = 4  # enum ggml_log_level in ggml.h (llama_cpp's _logger maps an older order)


# ------------------------------------------------------------------------------ process setup
@C.llama_log_callback
def _route_log(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
    """llama.cpp/ggml log lines go to Python logging: quiet unless someone asks for DEBUG."""
    if level == _GGML_LOG_LEVEL_ERROR:
        log.warning("llama.cpp: %s", text.decode("utf-8", "replace").rstrip())
    elif log.isEnabledFor(logging.DEBUG):
        log.debug("llama.cpp: %s", text.decode("utf-8", "replace").rstrip())


def _ensure_backend() -> None:
    global _initialised
    with _init_lock:
        if not _initialised:
            C.llama_log_set(_route_log, ctypes.c_void_p(0))
            C.llama_backend_init()
            _initialised = True


_PROBE = r"""
import ctypes, sys
import llama_cpp.llama_cpp as C
quiet = C.llama_log_callback(lambda level, text, user: None)
C.llama_log_set(quiet, ctypes.c_void_p(0))
C.llama_backend_init()
model = C.llama_model_load_from_file(sys.argv[1].encode(), C.llama_model_default_params())
if not model:
    sys.exit(3)
params = C.llama_context_default_params()
params.n_ctx, params.n_batch, params.n_ubatch, params.n_threads, params.n_threads_batch = 64, 16, 16, 1, 1
ctx = C.llama_init_from_model(model, params)
n_vocab = C.llama_vocab_n_tokens(C.llama_model_get_vocab(model))
tokens = (C.llama_token * 16)(*[(7 * i + 11) % n_vocab for i in range(16)])
sys.exit(0 if C.llama_decode(ctx, C.llama_batch_get_one(tokens, 16)) == 0 else 4)
"""


def extra_buffers_safe(path: str, key: str, fd: int | None = None) -> bool:
    """Whether llama.cpp's extra CPU buffer types (AMX, repacked weights) run on this machine.

    Probed in a subprocess because the failure is a crash, not an error. ``fd`` is passed on
    when ``path`` is ``/proc/self/fd/N``; ``key`` (the model's checksum) caches the answer.
    """
    forced = os.environ.get("MEMO_LLAMA_EXTRA_BUFFERS")
    if forced in ("0", "1"):
        return forced == "1"
    if key in _probe_cache:
        return _probe_cache[key]
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE, path],
            pass_fds=(fd,) if fd is not None else (),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=300,
            check=False,
        )
        ok = proc.returncode == 0
    except subprocess.TimeoutExpired:
        ok = False
    if not ok:
        log.warning("llama.cpp's AMX/repacked CPU kernels crash on this machine; using the generic ones")
    _probe_cache[key] = ok
    return ok


# ------------------------------------------------------------------------------ options
@dataclass(frozen=True)
class LlamaCppOptions:
    """Runtime knobs. Defaults suit the bundled 135M model on a small box.

    ``n_ctx`` is per sequence (prompt + answer). ``max_parallel`` sequences share one batch in
    ``chat_many``. ``threads=None`` chooses from free cores at each call. ``seed=None`` draws a
    fresh seed per call (reported in the result); any int makes sampling reproducible.
    """

    n_ctx: int = 2048
    max_parallel: int = 8
    n_batch: int = 512
    threads: int | None = None
    max_threads: int | None = None
    seed: int | None = None
    repeat_penalty: float = 1.1
    repeat_last_n: int = 64
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    use_mmap: bool = True
    use_mlock: bool = False
    extra_buffers: bool | None = None  # None: probe; False: generic kernels; True: trust the build

    def __post_init__(self) -> None:
        if self.n_ctx < 64 or self.n_batch < 1:
            raise MemoError("n_ctx must be at least 64 tokens and n_batch at least 1")
        if not 1 <= self.max_parallel <= min(64, self.n_batch):
            raise MemoError(f"max_parallel must be between 1 and {min(64, self.n_batch)}")
        if self.threads is not None and self.threads < 1:
            raise MemoError("threads must be at least 1 (or None to choose from free cores)")


@dataclass
class _Request:
    tokens: list[int]
    max_tokens: int
    temperature: float
    seed: int | None
    grammar: str | None
    stop: tuple[bytes, ...]


@dataclass
class _Slot:
    index: int  # position of the request in the caller's list
    seq: int
    request: _Request
    sampler: Any
    pending: list[int]
    pos: int = 0
    next_token: int | None = None
    logits_at: int | None = None
    out: list[int] = field(default_factory=list)
    text: bytearray = field(default_factory=bytearray)


@dataclass
class _Raw:
    text: str
    finish: FinishReason
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    seed: int | None


# ------------------------------------------------------------------------------ the model
class LlamaCppModel:
    """A GGUF model in llama.cpp. Load it with :meth:`load`; one generation runs at a time."""

    def __init__(self, path: str, identity: str, options: LlamaCppOptions, extra_buffers: bool) -> None:
        _ensure_backend()
        self.options = options
        self._identity = identity
        self._lock = threading.RLock()
        self._meter = CoreMeter(max_threads=options.max_threads)
        self._contexts: dict[int, Any] = {}
        self._batch: Any = None
        params = C.llama_model_default_params()
        params.n_gpu_layers = 0
        params.use_mmap = options.use_mmap
        params.use_mlock = options.use_mlock
        params.use_extra_bufts = extra_buffers
        self._model = C.llama_model_load_from_file(path.encode(), params)
        if not self._model:
            raise MemoError(f"llama.cpp could not load {identity}: not a GGUF it supports, or out of memory")
        self._vocab = C.llama_model_get_vocab(self._model)
        self.n_vocab = C.llama_vocab_n_tokens(self._vocab)
        self.n_ctx_train = C.llama_model_n_ctx_train(self._model)
        self._formatter = self._chat_formatter()

    @classmethod
    def load(
        cls, registry: ModelRegistry, name: str = DEFAULT_MODEL, options: LlamaCppOptions | None = None
    ) -> "LlamaCppModel":
        """Verify the model's checksum and load exactly the verified bytes (vault models from RAM)."""
        options = options or LlamaCppOptions()
        with registry.open_gguf(name) as opened:
            extra = options.extra_buffers
            if extra is None:
                extra = extra_buffers_safe(opened.path, opened.info.sha256, opened.fd)
            identity = f"llamacpp:{opened.info.name}@sha256:{opened.info.sha256[:12]}"
            return cls(opened.path, identity, options, extra)

    @property
    def identity(self) -> str:
        return self._identity

    # -------------------------------------------------------------- lifecycle
    def close(self) -> None:
        with self._lock:
            for ctx in self._contexts.values():
                C.llama_free(ctx)
            self._contexts.clear()
            if self._batch is not None:
                C.llama_batch_free(self._batch)
                self._batch = None
            if self._model:
                C.llama_model_free(self._model)
                self._model = None

    def __enter__(self) -> "LlamaCppModel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # -------------------------------------------------------------- tokens and templates
    def tokenize(self, text: str, special: bool = True, add_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (C.llama_token * cap)()
        n = C.llama_tokenize(self._vocab, data, len(data), buf, cap, add_special, special)
        if n < 0:
            cap = -n
            buf = (C.llama_token * cap)()
            n = C.llama_tokenize(self._vocab, data, len(data), buf, cap, add_special, special)
        if n < 0:
            raise MemoError(f"{self.identity}: text could not be tokenised")
        return list(buf[:n])

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text, special=False, add_special=False))

    def _piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = C.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = C.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        return buf.raw[: max(n, 0)]

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return (C.llama_vocab_get_text(self._vocab, token) or b"").decode("utf-8", "replace")

    def _chat_formatter(self) -> Jinja2ChatFormatter | None:
        template = C.llama_model_chat_template(self._model, None)
        if not template:
            return None
        eos = C.llama_vocab_eos(self._vocab)
        return Jinja2ChatFormatter(
            template=template.decode("utf-8"),
            eos_token=self._token_text(eos),
            bos_token=self._token_text(C.llama_vocab_bos(self._vocab)),
            stop_token_ids=[eos],
        )

    def format_chat(self, messages: Sequence[Message]) -> tuple[list[int], tuple[bytes, ...]]:
        """Prompt tokens for a conversation, via the chat template stored in the GGUF."""
        check_messages(messages)
        if self._formatter is None:
            raise MemoError(f"{self.identity} has no chat template (a base model?); use complete() instead")
        try:
            result = self._formatter(messages=[dict(m) for m in messages])  # type: ignore[misc]
        except Exception as exc:  # the template's own raise_exception(), or a Jinja error
            raise MemoError(f"{self.identity}: its chat template rejected the messages: {exc}") from None
        stops = result.stop if isinstance(result.stop, list) else [result.stop] if result.stop else []
        tokens = self.tokenize(result.prompt, special=True, add_special=not result.added_special)
        return tokens, tuple(s.encode() for s in stops if s)

    @staticmethod
    def grammar_for(json_schema: Mapping[str, Any]) -> str:
        """GBNF grammar for a JSON schema; unsupported schemas fail loudly instead of degrading."""
        try:
            return json_schema_to_gbnf(json.dumps(json_schema))
        except Exception as exc:
            raise MemoError(f"JSON schema not supported for constrained generation: {exc}") from None

    # -------------------------------------------------------------- public generation API
    def chat(
        self,
        messages: Sequence[Message],
        max_tokens: int = 256,
        temperature: float = 0.0,
        json_schema: Mapping[str, Any] | None = None,
        *,
        seed: int | None = None,
        stop: Sequence[str] = (),
    ) -> ChatResult:
        return self.chat_many([messages], max_tokens, temperature, json_schema, seed=seed, stop=stop)[0]

    def chat_many(
        self,
        conversations: Sequence[Sequence[Message]],
        max_tokens: int = 256,
        temperature: float = 0.0,
        json_schema: Mapping[str, Any] | None = None,
        *,
        seed: int | None = None,
        stop: Sequence[str] = (),
    ) -> list[ChatResult]:
        """Answer many conversations, decoded together (``max_parallel`` at a time), in input order."""
        grammar = self.grammar_for(json_schema) if json_schema is not None else None
        requests = []
        for messages in conversations:
            tokens, template_stops = self.format_chat(messages)
            stops = template_stops + tuple(s.encode() for s in stop if s)
            requests.append(self._request(tokens, max_tokens, temperature, seed, grammar, stops))
        return self._results(self._generate(requests))

    def complete(
        self,
        prompt: str,
        max_tokens: int = 256,
        temperature: float = 0.0,
        json_schema: Mapping[str, Any] | None = None,
        *,
        seed: int | None = None,
        stop: Sequence[str] = (),
    ) -> ChatResult:
        """Raw text continuation (no chat template), e.g. for base models and probes."""
        return self.complete_many([prompt], max_tokens, temperature, json_schema, seed=seed, stop=stop)[0]

    def complete_many(
        self,
        prompts: Sequence[str],
        max_tokens: int = 256,
        temperature: float = 0.0,
        json_schema: Mapping[str, Any] | None = None,
        *,
        seed: int | None = None,
        stop: Sequence[str] = (),
    ) -> list[ChatResult]:
        grammar = self.grammar_for(json_schema) if json_schema is not None else None
        stops = tuple(s.encode() for s in stop if s)
        requests = [
            self._request(self.tokenize(p, special=False, add_special=True), max_tokens, temperature, seed, grammar, stops)
            for p in prompts
        ]
        return self._results(self._generate(requests))

    # -------------------------------------------------------------- engine
    def _request(
        self,
        tokens: list[int],
        max_tokens: int,
        temperature: float,
        seed: int | None,
        grammar: str | None,
        stop: tuple[bytes, ...],
    ) -> _Request:
        if max_tokens < 1:
            raise MemoError("max_tokens must be at least 1")
        if not tokens:
            raise MemoError("the prompt is empty")
        if len(tokens) >= self.options.n_ctx:
            raise MemoError(
                f"prompt has {len(tokens)} tokens but the context holds {self.options.n_ctx}; "
                f"shorten it or raise n_ctx (the model was trained on {self.n_ctx_train})"
            )
        if temperature > 0:
            seed = seed if seed is not None else self.options.seed
            if seed is None:
                seed = int.from_bytes(os.urandom(4), "little")
        else:
            seed = None
        return _Request(tokens, max_tokens, temperature, seed, grammar, stop)

    def _results(self, raws: list[_Raw]) -> list[ChatResult]:
        return [
            ChatResult(
                text=r.text,
                finish_reason=r.finish,
                stats=GenerationStats(r.prompt_tokens, r.completion_tokens, r.seconds),
                model=self.identity,
                seed=r.seed,
            )
            for r in raws
        ]

    def _threads(self) -> int:
        return self.options.threads or self._meter.threads()

    def _context(self, n_seq: int, threads: int) -> Any:
        """A context for ``n_seq`` parallel sequences (cached: creating one costs ~20 ms per sequence)."""
        size = 1 if n_seq == 1 else self.options.max_parallel
        ctx = self._contexts.get(size)
        if ctx is None:
            params = C.llama_context_default_params()
            params.n_ctx = self.options.n_ctx * size
            params.n_seq_max = size
            params.kv_unified = False  # each sequence gets its own n_ctx cells; prompts share nothing
            params.n_batch = self.options.n_batch
            params.n_ubatch = self.options.n_batch
            params.flash_attn_type = C.LLAMA_FLASH_ATTN_TYPE_DISABLED  # same numerics as llama_cpp.Llama
            params.no_perf = True
            params.n_threads = threads
            params.n_threads_batch = threads
            ctx = C.llama_init_from_model(self._model, params)
            if not ctx:
                raise MemoError(f"{self.identity}: could not allocate a context of {params.n_ctx} tokens; lower n_ctx")
            self._contexts[size] = ctx
        if self._batch is None:
            self._batch = C.llama_batch_init(self.options.n_batch, 0, 1)
        return ctx

    def _sampler(self, req: _Request) -> Any:
        chain = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
        add = lambda s: C.llama_sampler_chain_add(chain, s)  # noqa: E731 - the chain owns what it is given
        o = self.options
        if o.repeat_penalty != 1.0:
            add(C.llama_sampler_init_penalties(self.n_vocab, o.repeat_last_n, o.repeat_penalty, 0.0, 0.0))
        if req.grammar is not None:
            grammar = C.llama_sampler_init_grammar(self._vocab, req.grammar.encode(), b"root")
            if not grammar:
                C.llama_sampler_free(chain)
                raise MemoError("llama.cpp rejected the grammar made from the JSON schema; simplify the schema")
            add(grammar)
        if req.temperature <= 0:
            add(C.llama_sampler_init_greedy())
        else:
            add(C.llama_sampler_init_top_k(o.top_k))
            add(C.llama_sampler_init_top_p(o.top_p, 1))
            add(C.llama_sampler_init_min_p(o.min_p, 1))
            add(C.llama_sampler_init_temp(req.temperature))
            add(C.llama_sampler_init_dist(req.seed if req.seed is not None else 0))
        return chain

    def _generate(self, requests: list[_Request]) -> list[_Raw]:
        """Continuous batching: free slots take the next prompt while others keep generating."""
        if not requests:
            return []
        with self._lock:
            if not self._model:
                raise MemoError(f"{self.identity} was closed")
            threads = self._threads()
            ctx = self._context(len(requests), threads)
            C.llama_set_n_threads(ctx, threads, threads)
            n_slots = C.llama_n_seq_max(ctx)
            n_ctx_seq = C.llama_n_ctx_seq(ctx)
            memory = C.llama_get_memory(ctx)
            C.llama_memory_clear(memory, True)
            queue = deque(enumerate(requests))
            slots: list[_Slot | None] = [None] * n_slots
            raws: list[_Raw | None] = [None] * len(requests)
            started = last_check = time.monotonic()
            try:
                while queue or any(slots):
                    for seq in range(n_slots):
                        if slots[seq] is None and queue:
                            index, req = queue.popleft()
                            slots[seq] = _Slot(index, seq, req, self._sampler(req), list(req.tokens))
                    self._decode_step(ctx, slots)
                    for seq, slot in enumerate(slots):
                        if slot is None or slot.logits_at is None:
                            continue
                        finish = self._sample(ctx, slot, n_ctx_seq)
                        if finish is not None:
                            raws[slot.index] = self._finish(slot, finish, started)
                            C.llama_memory_seq_rm(memory, seq, -1, -1)
                            C.llama_sampler_free(slot.sampler)
                            slots[seq] = None
                    if self.options.threads is None and time.monotonic() - last_check >= 1.0:
                        last_check = time.monotonic()
                        now = self._meter.threads()
                        if now != threads:
                            threads = now
                            C.llama_set_n_threads(ctx, threads, threads)
            finally:
                for slot in slots:
                    if slot is not None:
                        C.llama_sampler_free(slot.sampler)
        return [r for r in raws if r is not None]

    def _decode_step(self, ctx: Any, slots: list[_Slot | None]) -> None:
        """One llama_decode: each generating sequence's last token, then prompt tokens to fill the batch."""
        batch = self._batch
        cap = self.options.n_batch
        n = 0

        def put(token: int, pos: int, seq: int, logits: bool) -> None:
            nonlocal n
            batch.token[n] = token
            batch.pos[n] = pos
            batch.n_seq_id[n] = 1
            batch.seq_id[n][0] = seq
            batch.logits[n] = logits
            n += 1

        for slot in slots:
            if slot is not None and slot.next_token is not None:
                slot.logits_at = n
                put(slot.next_token, slot.pos, slot.seq, True)
                slot.pos += 1
                slot.next_token = None
        for slot in slots:
            if slot is None or not slot.pending or n >= cap:
                continue
            take = slot.pending[: cap - n]
            del slot.pending[: len(take)]
            for i, token in enumerate(take):
                last = not slot.pending and i == len(take) - 1
                if last:
                    slot.logits_at = n
                put(token, slot.pos, slot.seq, last)
                slot.pos += 1
        batch.n_tokens = n
        if n == 0:
            return
        rc = C.llama_decode(ctx, batch)
        if rc != 0:
            raise MemoError(f"{self.identity}: llama_decode failed ({rc}); lower max_parallel or n_ctx")

    def _sample(self, ctx: Any, slot: _Slot, n_ctx_seq: int) -> FinishReason | None:
        """Sample the slot's next token; say why it finished, or None to continue."""
        token = C.llama_sampler_sample(slot.sampler, ctx, slot.logits_at)  # also accepts the token
        slot.logits_at = None
        if C.llama_vocab_is_eog(self._vocab, token):
            return "stop"
        slot.out.append(token)
        slot.text += self._piece(token)
        for stop in slot.request.stop:
            at = slot.text.find(stop)
            if at >= 0:
                del slot.text[at:]
                return "stop"
        if len(slot.out) >= slot.request.max_tokens or slot.pos + 1 >= n_ctx_seq:
            return "length"
        slot.next_token = token
        return None

    def _finish(self, slot: _Slot, finish: FinishReason, started: float) -> _Raw:
        return _Raw(
            text=slot.text.decode("utf-8", "replace"),
            finish=finish,
            prompt_tokens=len(slot.request.tokens),
            completion_tokens=len(slot.out),
            seconds=time.monotonic() - started,
            seed=slot.request.seed,
        )
