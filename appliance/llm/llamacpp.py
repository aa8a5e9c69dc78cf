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
* **Shared prompt prefixes**: reflection sends many prompts that repeat a long few-shot prefix and
  differ in a short tail; on this CPU a prompt token costs about as much as a generated one, so
  re-reading the prefix dominated. A batch's common prefix is now decoded once, into a reserved
  sequence, and copied to the others (``llama_memory_seq_cp``); reserved sequences keep the last
  few prefixes between calls (LRU, ``prefix_cache``); and a request starts from the longest prefix
  any sequence holds (a finished one keeps its KV until reused: two questions about one fact, a
  conversation continued). Answers are bit-identical to decoding without sharing
  (``share_prefix=False``) and to decoding each prompt alone: see :class:`_Engine` and
  :meth:`LlamaCppModel._step` for the two llama.cpp behaviours that had to be designed around.
  Results report the prompt tokens served from cache (``GenerationStats.cached_tokens``, and
  cumulatively :attr:`LlamaCppModel.totals`).
* **Greedy fast path**: greedy decoding without a grammar picks the token in numpy, with the same
  repeat penalty arithmetic as llama.cpp's sampler (whose penalty step probes a hash map for every
  one of the 49k vocabulary entries, per token).
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
from dataclasses import asdict, dataclass, field
from typing import Any

import llama_cpp.llama_cpp as C
import numpy as np
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
    ``share_prefix`` reuses the KV of prompt prefixes already decoded (in this call or kept from
    earlier ones); ``prefix_cache`` is how many shared prefixes are kept between calls.
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
    share_prefix: bool = True
    prefix_cache: int = 4

    def __post_init__(self) -> None:
        if self.n_ctx < 64 or self.n_batch < 1:
            raise MemoError("n_ctx must be at least 64 tokens and n_batch at least 1")
        if not 1 <= self.max_parallel <= min(64, self.n_batch):
            raise MemoError(f"max_parallel must be between 1 and {min(64, self.n_batch)}")
        if self.threads is not None and self.threads < 1:
            raise MemoError("threads must be at least 1 (or None to choose from free cores)")
        if not 0 <= self.prefix_cache <= 16:
            raise MemoError("prefix_cache must be between 0 and 16")


@dataclass
class EngineTotals:
    """Cumulative counters of one model, for benchmarks and diagnostics."""

    calls: int = 0
    requests: int = 0
    prompt_tokens: int = 0  # logical prompt length, as reported per result
    cached_tokens: int = 0  # of those, served from KV already in the cache instead of decoded
    completion_tokens: int = 0
    decodes: int = 0  # llama_decode calls

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class _Request:
    tokens: list[int]
    max_tokens: int
    temperature: float
    seed: int | None
    grammar: str | None
    stop: tuple[bytes, ...]
    logprobs: bool = False


@dataclass
class _Slot:
    index: int  # position of the request in the caller's list
    seq: int
    request: _Request
    sampler: Any  # a llama.cpp sampler chain, or None for the greedy fast path
    pending: list[int]  # prompt tokens still to decode
    pos: int = 0
    cached: int = 0  # prompt tokens whose KV came from another sequence
    next_token: int | None = None
    logits_at: int | None = None
    out: list[int] = field(default_factory=list)
    text: bytearray = field(default_factory=bytearray)
    recent: deque[int] = field(default_factory=deque)  # penalty window of the greedy fast path
    logprobs: list[float] = field(default_factory=list)  # of each chosen token, when the request asks
    starts: list[int] = field(default_factory=list)  # the byte offset in ``text`` at which each of them begins


@dataclass
class _Raw:
    text: str
    finish: FinishReason
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    seconds: float
    seed: int | None
    logprobs: tuple[float, ...] | None = None
    starts: tuple[int, ...] | None = None


@dataclass
class _Engine:
    """One llama.cpp context: ``n_slots`` generation sequences, then reserved prefix sequences.

    Every sequence has its own KV stream (``kv_unified=False``), filled from cell 0 as a fresh
    decode fills it: in one unified cell pool, where a sequence's cells lie changes float rounding
    (20 of 74 greedy reflection answers changed). Between streams ``llama_memory_seq_cp`` copies
    the whole stream buffer (a few ms at n_ctx=2048), cheap next to decoding what it saves.
    ``kv[seq]`` lists the tokens whose KV the sequence holds (positions 0..n-1). A slot keeps its KV
    after its request finished, until it is reused, so later requests (in this call or the next)
    can start from what they share with it.
    """

    ctx: Any
    n_slots: int
    kv: list[list[int]]
    used: list[int]  # LRU clock per sequence
    clock: int = 0

    def touch(self, seq: int) -> None:
        self.clock += 1
        self.used[seq] = self.clock


# Prompt tokens a sequence decodes in one go, at least (see _step).
_MIN_CHUNK = 2
# Below this, a batch's common prefix is not worth a reserved sequence (sharing still happens).
_MIN_SHARED_PREFIX = 32
# A request waits one step for a sequence whose prompt is being decoded when it shares this many
# more tokens with it than with anything decoded already (e.g. two questions on one fact).
_WAIT_GAIN = 8
# Queued requests looked at for one that need not wait.
_QUEUE_WINDOW = 32


def _common(a: list[int], b: list[int], limit: int) -> int:
    """Length of the common prefix of two token lists, at most ``limit``."""
    n = min(len(a), len(b), limit)
    if n <= 0:
        return 0
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo] and a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


# ------------------------------------------------------------------------------ the model
class LlamaCppModel:
    """A GGUF model in llama.cpp. Load it with :meth:`load`; one generation runs at a time."""

    def __init__(self, path: str, identity: str, options: LlamaCppOptions, extra_buffers: bool) -> None:
        _ensure_backend()
        self.options = options
        self._identity = identity
        self._lock = threading.RLock()
        self._meter = CoreMeter(max_threads=options.max_threads)
        self._engines: dict[int, _Engine] = {}
        self._batch: Any = None
        self._batch_views: tuple[Any, ...] = ()
        self._pieces: dict[int, bytes] = {}
        self._fast_greedy = True  # tests turn it off to compare with llama.cpp's own sampler chain
        penalty = np.float32(options.repeat_penalty)
        self._penalty = None if options.repeat_last_n <= 0 or penalty == 1.0 else penalty
        self.totals = EngineTotals()
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
            for eng in self._engines.values():
                C.llama_free(eng.ctx)
            self._engines.clear()
            if self._batch is not None:
                self._batch_views = ()
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

    def clear_cache(self) -> None:
        """Forget every cached prefix and finished sequence (the next call decodes from scratch)."""
        with self._lock:
            for eng in self._engines.values():
                self._forget(eng)

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
        piece = self._pieces.get(token)
        if piece is None:
            buf = ctypes.create_string_buffer(64)
            n = C.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = C.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
            piece = self._pieces[token] = buf.raw[: max(n, 0)]
        return piece

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
        special: bool = False,
        logprobs: bool = False,
    ) -> ChatResult:
        """Raw text continuation (no chat template), e.g. for base models and probes."""
        return self.complete_many([prompt], max_tokens, temperature, json_schema, seed=seed, stop=stop, special=special,
                                  logprobs=logprobs)[0]

    def complete_many(
        self,
        prompts: Sequence[str],
        max_tokens: int = 256,
        temperature: float = 0.0,
        json_schema: Mapping[str, Any] | None = None,
        *,
        seed: int | None = None,
        stop: Sequence[str] = (),
        special: bool = False,
        logprobs: bool = False,
    ) -> list[ChatResult]:
        """Continue raw prompts. ``special``: the prompt spells special tokens (``<|im_start|>``) as
        text and they are parsed as such (the memory's own layout, :mod:`appliance.memory.format`);
        ``logprobs``: report the log-probability of every generated token (greedy decoding only)."""
        grammar = self.grammar_for(json_schema) if json_schema is not None else None
        stops = tuple(s.encode() for s in stop if s)
        requests = []
        for p in prompts:
            tokens = self.tokenize(p, special=special, add_special=not special)
            req = self._request(tokens, max_tokens, temperature, seed, grammar, stops)
            if logprobs:
                if temperature > 0 or grammar is not None:
                    raise MemoError("log-probabilities are reported for greedy decoding without a schema only")
                req.logprobs = True
            requests.append(req)
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
                stats=GenerationStats(r.prompt_tokens, r.completion_tokens, r.seconds, cached_tokens=r.cached_tokens),
                model=self.identity,
                seed=r.seed,
                token_logprobs=r.logprobs,
                token_starts=r.starts,
            )
            for r in raws
        ]

    def _threads(self) -> int:
        return self.options.threads or self._meter.threads()

    def _engine(self, n_seq: int, threads: int) -> _Engine:
        """A context for ``n_seq`` parallel sequences (cached: creating one costs ~20 ms per sequence).

        A single request uses the parallel context when that exists already, so that it shares
        the prefixes kept there. Each reserved prefix costs a stream of ``n_ctx`` cells.
        """
        o = self.options
        size = 1 if n_seq == 1 and o.max_parallel not in self._engines else o.max_parallel
        eng = self._engines.get(size)
        if eng is None:
            n_seq_max = size + (o.prefix_cache if o.share_prefix and size > 1 else 0)
            params = C.llama_context_default_params()
            params.n_ctx = o.n_ctx * n_seq_max
            params.n_seq_max = n_seq_max
            params.kv_unified = False  # each sequence gets its own n_ctx cells (see _Engine)
            params.n_batch = o.n_batch
            params.n_ubatch = o.n_batch
            params.flash_attn_type = C.LLAMA_FLASH_ATTN_TYPE_DISABLED  # same numerics as llama_cpp.Llama
            params.no_perf = True
            params.n_threads = threads
            params.n_threads_batch = threads
            ctx = C.llama_init_from_model(self._model, params)
            if not ctx:
                raise MemoError(f"{self.identity}: could not allocate a context of {params.n_ctx} tokens; lower n_ctx")
            eng = self._engines[size] = _Engine(ctx, size, [[] for _ in range(n_seq_max)], [0] * n_seq_max)
        if self._batch is None:
            cap = o.n_batch
            batch = C.llama_batch_init(cap, 0, 1)
            as_array = lambda ptr, ctype: (ctype * cap).from_address(ctypes.addressof(ptr.contents))  # noqa: E731
            n_seq_id = as_array(batch.n_seq_id, ctypes.c_int32)
            n_seq_id[:] = [1] * cap  # one sequence per token, always
            self._batch_views = (
                as_array(batch.token, C.llama_token),
                as_array(batch.pos, C.llama_pos),
                as_array(batch.logits, ctypes.c_int8),
                [batch.seq_id[i] for i in range(cap)],
            )
            self._batch = batch
        return eng

    def _forget(self, eng: _Engine) -> None:
        C.llama_memory_clear(C.llama_get_memory(eng.ctx), True)
        eng.kv = [[] for _ in eng.kv]

    def _sampler(self, req: _Request) -> Any:
        o = self.options
        if req.temperature <= 0 and req.grammar is None and (self._fast_greedy or req.logprobs):
            return None  # greedy fast path (_pick_greedy)
        chain = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
        add = lambda s: C.llama_sampler_chain_add(chain, s)  # noqa: E731 - the chain owns what it is given
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
            eng = self._engine(len(requests), threads)
            ctx = eng.ctx
            C.llama_set_n_threads(ctx, threads, threads)
            queue = list(enumerate(requests))
            slots: list[_Slot | None] = [None] * eng.n_slots
            raws: list[_Raw | None] = [None] * len(requests)
            started = last_check = time.monotonic()
            decodes = self.totals.decodes
            ok = False
            try:
                prefix_decoded = self._share_prefix(eng, requests)
                while queue or any(slots):
                    self._fill(eng, slots, queue)
                    self._step(eng, slots, raws, started)
                    if self.options.threads is None and time.monotonic() - last_check >= 1.0:
                        last_check = time.monotonic()
                        now = self._meter.threads()
                        if now != threads:
                            threads = now
                            C.llama_set_n_threads(ctx, threads, threads)
                ok = True
            finally:
                for slot in slots:
                    if slot is not None and slot.sampler is not None:
                        C.llama_sampler_free(slot.sampler)
                if not ok:  # the cache may hold half-decoded sequences: start clean next time
                    self._forget(eng)
            done = [r for r in raws if r is not None]
            if done and prefix_decoded:  # the shared prefix was decoded on behalf of the first request
                done[0].cached_tokens = max(0, done[0].cached_tokens - prefix_decoded)
            t = self.totals
            t.calls += 1
            t.requests += len(done)
            t.prompt_tokens += sum(r.prompt_tokens for r in done)
            t.cached_tokens += sum(r.cached_tokens for r in done)
            t.completion_tokens += sum(r.completion_tokens for r in done)
            log.debug("%d requests: %d prompt tokens, %d from cache, %d decodes", len(done),
                      sum(r.prompt_tokens for r in done), sum(r.cached_tokens for r in done), t.decodes - decodes)
        return done

    # ---------------------------------------------------------- prefix sharing
    def _holder(self, eng: _Engine, tokens: list[int], limit: int, prefer: int) -> tuple[int, int]:
        """The sequence holding the longest prefix of ``tokens[:limit]`` (``prefer`` on ties), and its length."""
        src, best = prefer, _common(eng.kv[prefer], tokens, limit)
        for seq, held in enumerate(eng.kv):
            if seq != prefer and len(held) > best:
                k = _common(held, tokens, limit)
                if k > best:
                    src, best = seq, k
        return src, best

    def _load(self, eng: _Engine, seq: int, tokens: list[int], limit: int) -> int:
        """Make ``seq`` hold the longest prefix of ``tokens[:limit]`` any sequence has; returns its length.

        Between streams llama.cpp copies a whole sequence (the buffer copy runs at the next
        decode, a few ms), so the copy is trimmed to the shared part afterwards.
        """
        mem = C.llama_get_memory(eng.ctx)
        src, match = self._holder(eng, tokens, limit, prefer=seq)
        if src != seq:
            C.llama_memory_seq_rm(mem, seq, -1, -1)
            C.llama_memory_seq_cp(mem, src, seq, -1, -1)
            eng.kv[seq] = list(eng.kv[src])
            eng.touch(src)
        if len(eng.kv[seq]) > match:
            if not C.llama_memory_seq_rm(mem, seq, match, -1):
                C.llama_memory_seq_rm(mem, seq, -1, -1)
                match = 0
            del eng.kv[seq][match:]
        return match

    def _share_prefix(self, eng: _Engine, requests: list[_Request]) -> int:
        """Put the requests' common prefix in a reserved sequence, reusing a kept one; returns tokens decoded."""
        reserved = range(eng.n_slots, len(eng.kv))
        if not reserved or len(requests) < 2 or not self.options.share_prefix:  # a lone prompt's slot keeps it
            return 0
        first = requests[0].tokens
        shared = min(len(r.tokens) for r in requests) - _MIN_CHUNK  # each request decodes its own tail
        for r in requests[1:]:
            shared = _common(first, r.tokens, shared)
        if shared < _MIN_SHARED_PREFIX:
            return 0
        best, match = max(((p, _common(eng.kv[p], first, shared)) for p in reserved), key=lambda pm: pm[1])
        if match == shared:  # kept from an earlier call
            eng.touch(best)
            return 0
        if not (match and match == len(eng.kv[best])):  # not extendable: take the least recently used one
            others = [p for p in reserved if p != best] or [best]
            best = min(others, key=lambda p: (bool(eng.kv[p]), eng.used[p]))
        start = self._load(eng, best, first, shared)  # from whichever sequence holds most of it
        if 0 < shared - start < _MIN_CHUNK:
            start = self._load(eng, best, first, shared - _MIN_CHUNK)
        self._prefill(eng, best, first, start, shared)
        eng.touch(best)
        return shared - start

    def _prefill(self, eng: _Engine, seq: int, tokens: list[int], start: int, end: int) -> None:
        """Decode ``tokens[start:end]`` into ``seq`` without logits."""
        while start < end:
            n = self._chunk(end - start)
            self._put_prompt(0, seq, tokens[start : start + n], start, logits=False)
            self._decode(eng.ctx, n)
            eng.kv[seq].extend(tokens[start : start + n])
            start += n

    def _chunk(self, remaining: int) -> int:
        """Tokens of a prompt to decode in one go: at most n_batch, never leaving a single one."""
        cap = self.options.n_batch
        if remaining <= cap:
            return remaining
        return cap - 1 if remaining - cap < _MIN_CHUNK and cap > _MIN_CHUNK else cap

    def _put_prompt(self, at: int, seq: int, tokens: list[int], pos: int, logits: bool) -> int:
        """Write prompt tokens into the batch from index ``at``; returns the next free index."""
        token, positions, want, seq_ids = self._batch_views
        k = len(tokens)
        token[at : at + k] = tokens
        positions[at : at + k] = range(pos, pos + k)
        want[at : at + k] = [0] * k
        for i in range(at, at + k):
            seq_ids[i][0] = seq
        if logits:
            want[at + k - 1] = 1
        return at + k

    def _fill(self, eng: _Engine, slots: list[_Slot | None], queue: list[tuple[int, _Request]]) -> None:
        """Start queued requests in free slots, each in the free slot that holds most of its prompt."""
        free = [seq for seq, slot in enumerate(slots) if slot is None]
        while free and queue:
            chosen = self._next(eng, slots, queue)
            if chosen is None:
                return  # all wait for a prompt being decoded now: the slot idles one step
            index, req = queue.pop(chosen)
            seq = free[0]
            if self.options.share_prefix:
                limit = len(req.tokens) - _MIN_CHUNK
                seq = max(free, key=lambda s: (_common(eng.kv[s], req.tokens, limit), -eng.used[s]))
            free.remove(seq)
            slots[seq] = self._start(eng, seq, index, req)

    def _next(self, eng: _Engine, slots: list[_Slot | None], queue: list[tuple[int, _Request]]) -> int | None:
        """Which queued request starts next: the first, unless it would share much more with a prompt
        being decoded right now (two questions about one fact) than with anything decoded already."""
        prefilling = [s for s in slots if s is not None and s.pending] if self.options.share_prefix else []
        if not prefilling:
            return 0
        for i in range(min(len(queue), _QUEUE_WINDOW)):
            tokens = queue[i][1].tokens
            limit = len(tokens) - _MIN_CHUNK
            soon = max(_common(s.request.tokens, tokens, limit) for s in prefilling)
            if soon < _WAIT_GAIN or soon < self._holder(eng, tokens, limit, prefer=0)[1] + _WAIT_GAIN:
                return i
        return None

    def _start(self, eng: _Engine, seq: int, index: int, req: _Request) -> _Slot:
        if self.options.share_prefix:
            match = self._load(eng, seq, req.tokens, len(req.tokens) - _MIN_CHUNK)
        else:
            C.llama_memory_seq_rm(C.llama_get_memory(eng.ctx), seq, -1, -1)
            eng.kv[seq] = []
            match = 0
        eng.touch(seq)
        recent: deque[int] = deque(maxlen=max(self.options.repeat_last_n, 1))
        return _Slot(index, seq, req, self._sampler(req), req.tokens[match:], pos=match, cached=match, recent=recent)

    # ---------------------------------------------------------- decoding and sampling
    def _decode(self, ctx: Any, n: int) -> None:
        self._batch.n_tokens = n
        rc = C.llama_decode(ctx, self._batch)
        self.totals.decodes += 1
        if rc != 0:
            raise MemoError(f"{self.identity}: llama_decode failed ({rc}); lower max_parallel or n_ctx")

    def _step(self, eng: _Engine, slots: list[_Slot | None], raws: list[_Raw | None], started: float) -> None:
        """One step: a decode of every generating sequence's last token, then of prompt chunks.

        llama.cpp's CPU kernels round differently when a sequence has one token in a micro-batch
        than when it has several (attention takes another matmul path), and it cuts a mixed batch
        into micro-batches of equal tokens per sequence, so prompts of uneven length left some
        with one token: answers changed with what they were batched with. So generated tokens
        are decoded on their own, one per sequence, and each prompt chunk apart, with at least
        two tokens; a sequence's numbers then never depend on what else is decoded, or on which
        prefix was shared.
        """
        token, pos, logits, seq_ids = self._batch_views
        n = 0
        for slot in slots:
            if slot is not None and slot.next_token is not None:
                slot.logits_at = n
                token[n] = slot.next_token
                pos[n] = slot.pos
                logits[n] = 1
                seq_ids[n][0] = slot.seq
                eng.kv[slot.seq].append(slot.next_token)
                slot.pos += 1
                slot.next_token = None
                n += 1
        if n:
            self._decode(eng.ctx, n)
            self._collect(eng, slots, raws, started)
        for slot in slots:  # one decode per prompt chunk (grouping equal chunks measured ~4% slower)
            if slot is None or not slot.pending:
                continue
            take = slot.pending[: self._chunk(len(slot.pending))]
            del slot.pending[: len(take)]
            n = self._put_prompt(0, slot.seq, take, slot.pos, logits=not slot.pending)
            self._decode(eng.ctx, n)
            eng.kv[slot.seq].extend(take)
            slot.pos += n
            if not slot.pending:
                slot.logits_at = n - 1
                self._collect(eng, slots, raws, started)

    def _collect(self, eng: _Engine, slots: list[_Slot | None], raws: list[_Raw | None], started: float) -> None:
        """Sample every slot whose logits the last decode produced; retire finished ones."""
        for seq, slot in enumerate(slots):
            if slot is None or slot.logits_at is None:
                continue
            finish = self._sample(eng.ctx, slot)
            if finish is not None:
                raws[slot.index] = self._finish(slot, finish, started)
                if slot.sampler is not None:
                    C.llama_sampler_free(slot.sampler)
                slots[seq] = None  # its KV stays until the slot is reused

    def _pick_greedy(self, ctx: Any, slot: _Slot) -> int:
        """Greedy choice after the repeat penalty, with llama.cpp's arithmetic (penalties + greedy samplers)."""
        logits = np.ctypeslib.as_array(C.llama_get_logits_ith(ctx, slot.logits_at), shape=(self.n_vocab,))
        if not slot.recent or self._penalty is None:
            scores = logits
        else:
            ids = np.fromiter(set(slot.recent), dtype=np.int64, count=-1)
            values = logits[ids]
            scores = logits.copy()
            scores[ids] = np.where(values <= 0, values * self._penalty, values / self._penalty)
        token = int(scores.argmax())  # first maximum, like llama_sampler_greedy
        if slot.request.logprobs:  # of the model's own distribution (before any penalty)
            top = float(logits.max())
            slot.logprobs.append(float(logits[token]) - top - float(np.log(np.exp(logits - top, dtype=np.float64).sum())))
            slot.starts.append(len(slot.text))
        return token

    def _sample(self, ctx: Any, slot: _Slot) -> FinishReason | None:
        """Sample the slot's next token; say why it finished, or None to continue."""
        if slot.sampler is None:
            token = self._pick_greedy(ctx, slot)
            slot.recent.append(token)
        else:
            token = C.llama_sampler_sample(slot.sampler, ctx, slot.logits_at)  # also accepts the token
        slot.logits_at = None
        if C.llama_vocab_is_eog(self._vocab, token):
            return "stop"
        slot.out.append(token)
        piece = self._piece(token)
        text = slot.text
        text += piece
        for stop in slot.request.stop:
            at = text.find(stop, max(0, len(text) - len(piece) - len(stop) + 1))
            if at >= 0:
                del text[at:]
                return "stop"
        if len(slot.out) >= slot.request.max_tokens or slot.pos + 1 >= self.options.n_ctx:
            return "length"
        slot.next_token = token
        return None

    def _finish(self, slot: _Slot, finish: FinishReason, started: float) -> _Raw:
        return _Raw(
            text=slot.text.decode("utf-8", "replace"),
            finish=finish,
            prompt_tokens=len(slot.request.tokens),
            cached_tokens=slot.cached,
            completion_tokens=len(slot.out),
            seconds=time.monotonic() - started,
            seed=slot.request.seed,
            logprobs=tuple(slot.logprobs) if slot.request.logprobs else None,
            starts=tuple(slot.starts) if slot.request.logprobs else None,
        )
