"""Does the exported GGUF, served by llama.cpp, answer like the trained model in transformers?

Both sides decode greedily (temperature 0, no repetition penalty) for the same probe questions,
rendered with the same chat template (the GGUF's: the transformers tokenizer built from the base
GGUF carries it). transformers gets the template's token ids from its tokenizer; llama.cpp
tokenizes the same rendered text with its own tokenizer, as a server would (a difference is
reported per probe as ``prompt_tokens_match``).

Metrics (pooled over probes):

* ``answer_agreement``: fraction of probes whose answers are identical (generated tokens up to
  and excluding the end-of-turn token, decoded with the same tokenizer, whitespace stripped);
* ``token_agreement``: greedy-token agreement up to the first divergence,
  ``sum(matched) / sum(compared)``, where per probe ``matched`` is the length of the common prefix
  of the two generated token sequences (end-of-turn token included) and ``compared`` is the
  longer sequence's length. Positions after a divergence count as disagreements: their contexts
  differ, so comparing them would mean nothing. 1.0 means every answer is token-identical;
* ``teacher_forced_agreement`` (diagnostic, not gated): llama.cpp is fed transformers' answer and,
  at each of its positions, picks its own top-1 token; the fraction equal to transformers' token.
  It measures per-step fidelity without the cascade after a first divergence.

:func:`export_and_verify` exports into memory, checks, and stores the file in the vault only if
``answer_agreement`` (and optionally ``token_agreement``) reach their thresholds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from appliance.config import current_actor
from appliance.errors import MemoError
from appliance.export.gguf_writer import (
    DEFAULT_OUTPUT_TYPE,
    ExportInfo,
    OutputType,
    export_to_memory,
    store_in_vault,
)

DEFAULT_PROBES: tuple[str, ...] = (
    "What is the capital of France?",
    "What is the largest planet in our solar system?",
    "Who wrote the play Romeo and Juliet?",
    "What is the boiling point of water at sea level in Celsius?",
    "How many days are there in a leap year?",
    "What gas do plants absorb from the air?",
    "What is the chemical symbol for gold?",
    "Which ocean is the largest?",
    "What is the square root of 81?",
    "Name the primary colors.",
)
DEFAULT_MAX_NEW_TOKENS = 32


@dataclass
class Generation:
    """One greedy answer: generated token ids (end-of-turn included if reached) and its text."""

    tokens: list[int]
    text: str
    seconds: float
    prompt_tokens: int

    @property
    def tokens_per_second(self) -> float:
        return len(self.tokens) / self.seconds if self.seconds > 0 else 0.0


@dataclass
class ProbeResult:
    question: str
    reference: str  # transformers answer
    candidate: str  # llama.cpp answer
    exact: bool
    matched_tokens: int
    compared_tokens: int
    first_divergence: int | None  # index of the first differing generated token, None if identical
    prompt_tokens_match: bool
    forced_matches: int | None = None  # reference tokens llama.cpp also picks, fed the reference prefix
    reference_tokens: list[int] = field(default_factory=list)
    candidate_tokens: list[int] = field(default_factory=list)


@dataclass
class AgreementReport:
    probes: list[ProbeResult]
    answer_agreement: float
    token_agreement: float
    teacher_forced_agreement: float | None
    max_new_tokens: int
    template_match: bool  # the GGUF's chat template is the one the transformers side used
    reference_seconds: list[float]
    candidate_seconds: list[float]
    gguf: str = ""

    @property
    def n_exact(self) -> int:
        return sum(p.exact for p in self.probes)

    def summary(self) -> str:
        text = (
            f"{self.n_exact}/{len(self.probes)} answers identical ({self.answer_agreement:.0%}), "
            f"greedy-token agreement {self.token_agreement:.1%}"
        )
        if self.teacher_forced_agreement is not None:
            text += f", teacher-forced top-1 {self.teacher_forced_agreement:.1%}"
        return text

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["n_exact"] = self.n_exact
        d["summary"] = self.summary()
        return d


# ---------------------------------------------------------------------------------- prompts
def prompt_text(tokenizer: Any, question: str) -> str:
    """The memory's own prompt layout (:mod:`appliance.memory.format`): the check exercises the model
    as it will be asked."""
    from appliance.memory.format import prompt

    return prompt(question)


def prompt_ids(tokenizer: Any, question: str) -> list[int]:
    return [int(i) for i in tokenizer(prompt_text(tokenizer, question), add_special_tokens=False)["input_ids"]]


def stop_ids(tokenizer: Any) -> list[int]:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise MemoError("the tokenizer has no end-of-sequence token; cannot stop greedy generation")
    return [int(eos)]


def _answer_text(tokenizer: Any, tokens: Sequence[int], stops: Sequence[int]) -> str:
    body = [t for t in tokens if t not in stops]
    return tokenizer.decode(body, skip_special_tokens=True).strip()


# ---------------------------------------------------------------------------------- transformers
def generate_reference(
    model: Any, tokenizer: Any, questions: Sequence[str], max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
) -> list[Generation]:
    """Greedy answers from the transformers model (the ground truth the GGUF must reproduce)."""
    import torch

    stops = stop_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    model.eval()
    out: list[Generation] = []
    device = next(model.parameters()).device
    for q in questions:
        ids = prompt_ids(tokenizer, q)
        x = torch.tensor([ids], device=device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            y = model.generate(
                input_ids=x,
                attention_mask=torch.ones_like(x),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                repetition_penalty=None,
                eos_token_id=stops,
                pad_token_id=pad,
            )
        seconds = time.perf_counter() - t0
        tokens = [int(t) for t in y[0, len(ids) :].tolist()]
        if any(t in stops for t in tokens):  # drop padding after the end-of-turn token
            tokens = tokens[: next(i for i, t in enumerate(tokens) if t in stops) + 1]
        out.append(Generation(tokens, _answer_text(tokenizer, tokens, stops), seconds, len(ids)))
    return out


# ---------------------------------------------------------------------------------- llama.cpp
_PARAMS_LOCK = threading.Lock()


@contextmanager
def _model_params(use_extra_bufts: bool) -> Iterator[None]:
    """Let ``Llama(...)`` build its model params with ``use_extra_bufts`` set as asked.

    llama-cpp-python does not expose that field; its constructor takes the defaults from
    ``llama_model_default_params``, which is wrapped here for the duration of one construction.
    """
    import llama_cpp.llama_cpp as lc

    with _PARAMS_LOCK:
        original = lc.llama_model_default_params

        def patched() -> Any:
            params = original()
            params.use_extra_bufts = use_extra_bufts
            return params

        lc.llama_model_default_params = patched
        try:
            yield
        finally:
            lc.llama_model_default_params = original


def load_llama(
    path: str,
    n_threads: int | None = None,
    n_ctx: int = 512,
    logits_all: bool = False,
    use_extra_bufts: bool = False,
) -> Any:
    """A llama.cpp model from a path (``/proc/self/fd/N`` of a memfd works), quiet, CPU.

    ``use_extra_bufts`` is off by default: with it, a ``-march=native`` build places quantised
    weights in ggml's AMX buffer wherever the CPU advertises AMX, and on this development VM
    (AMX flags in /proc/cpuinfo, tile state not usable) the first matrix product then dies with a
    general-protection fault (SIGSEGV in ``ggml_backend_amx_mul_mat`` at ``ldtilecfg``), taking
    the whole process with it. The plain CPU kernels give the same results, a little slower.
    """
    from llama_cpp import Llama

    if n_threads is None:
        from appliance.llm.cpu import advise_threads

        n_threads = advise_threads()
    try:
        with _model_params(use_extra_bufts):
            return Llama(
                model_path=path,
                n_ctx=n_ctx,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                logits_all=logits_all,
                verbose=False,
            )
    except (ValueError, RuntimeError) as exc:
        raise MemoError(f"llama.cpp could not load the exported GGUF: {exc}") from None


def generate_llamacpp(
    llama: Any,
    tokenizer: Any,
    questions: Sequence[str],
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
) -> tuple[list[Generation], list[bool]]:
    """Greedy answers from llama.cpp, and per probe whether its prompt tokens equal transformers'."""
    stops = stop_ids(tokenizer)
    gens: list[Generation] = []
    matches: list[bool] = []
    for q in questions:
        text = prompt_text(tokenizer, q)
        ids = llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        matches.append(ids == prompt_ids(tokenizer, q))
        llama.reset()  # full prompt evaluation each time: no KV reuse across probes
        tokens: list[int] = []
        t0 = time.perf_counter()
        for tok in llama.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
            tokens.append(int(tok))
            if tok in stops or tok == llama.token_eos() or len(tokens) >= max_new_tokens:
                break
        seconds = time.perf_counter() - t0
        gens.append(Generation(tokens, _answer_text(tokenizer, tokens, stops), seconds, len(ids)))
    return gens, matches


def llamacpp_logits(llama: Any, ids: Sequence[int]) -> Any:
    """Next-token logits at every position of ``ids`` (the model must be loaded with ``logits_all``)."""
    import numpy as np

    llama.reset()
    llama.eval(list(ids))
    return np.array(llama.scores[: len(ids)], dtype=np.float32)


# ---------------------------------------------------------------------------------- comparison
def compare(
    questions: Sequence[str],
    reference: Sequence[Generation],
    candidate: Sequence[Generation],
    prompt_matches: Sequence[bool] | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    template_match: bool = True,
    forced_matches: Sequence[int] | None = None,
) -> AgreementReport:
    if not (len(questions) == len(reference) == len(candidate)):
        raise MemoError("agreement check: questions and answers differ in number")
    if not questions:
        raise MemoError("agreement check needs at least one probe question")
    probes: list[ProbeResult] = []
    matched_sum = compared_sum = 0
    for i, (q, a, b) in enumerate(zip(questions, reference, candidate)):
        matched = 0
        for x, y in zip(a.tokens, b.tokens):
            if x != y:
                break
            matched += 1
        compared = max(len(a.tokens), len(b.tokens))
        identical = a.tokens == b.tokens
        probes.append(
            ProbeResult(
                question=q,
                reference=a.text,
                candidate=b.text,
                exact=a.text == b.text,
                matched_tokens=matched,
                compared_tokens=compared,
                first_divergence=None if identical else matched,
                prompt_tokens_match=True if prompt_matches is None else bool(prompt_matches[i]),
                forced_matches=None if forced_matches is None else int(forced_matches[i]),
                reference_tokens=list(a.tokens),
                candidate_tokens=list(b.tokens),
            )
        )
        matched_sum += matched
        compared_sum += compared
    return AgreementReport(
        probes=probes,
        answer_agreement=sum(p.exact for p in probes) / len(probes),
        token_agreement=matched_sum / compared_sum if compared_sum else 1.0,
        teacher_forced_agreement=None
        if forced_matches is None
        else sum(forced_matches) / max(1, sum(len(g.tokens) for g in reference)),
        max_new_tokens=max_new_tokens,
        template_match=template_match,
        reference_seconds=[g.seconds for g in reference],
        candidate_seconds=[g.seconds for g in candidate],
    )


def teacher_forced_matches(llama: Any, prompt: Sequence[int], answer: Sequence[int]) -> int:
    """How many of ``answer``'s tokens are llama.cpp's own greedy choice given the answer so far.

    ``llama`` must be loaded with ``logits_all=True``. With ``answer`` a greedy reference, this
    counts per-step agreement without the cascade that follows a first divergence.
    """
    if not answer:
        return 0
    logits = llamacpp_logits(llama, list(prompt) + list(answer[:-1]))
    predicted = logits[len(prompt) - 1 :].argmax(-1)
    return int(sum(int(p) == int(t) for p, t in zip(predicted, answer)))


def check_agreement(
    model: Any,
    tokenizer: Any,
    gguf_path: str,
    probes: Sequence[str] = DEFAULT_PROBES,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    reference: Sequence[Generation] | None = None,
    n_threads: int | None = None,
) -> AgreementReport:
    """Compare the transformers model with the GGUF at ``gguf_path`` on ``probes``.

    ``reference`` (from :func:`generate_reference`) can be passed to reuse transformers' answers
    when several exports of the same weights are checked.
    """
    probes = list(probes)
    if reference is None:
        reference = generate_reference(model, tokenizer, probes, max_new_tokens)
    n_ctx = max(g.prompt_tokens + len(g.tokens) for g in reference) + max_new_tokens + 16
    n_ctx = max(256, -(-n_ctx // 64) * 64)
    # greedy generation as a server runs it (logits of the last position only) ...
    llama = load_llama(gguf_path, n_threads=n_threads, n_ctx=n_ctx)
    try:
        template = llama.metadata.get("tokenizer.chat_template")
        template_match = template is not None and template == getattr(tokenizer, "chat_template", None)
        candidate, matches = generate_llamacpp(llama, tokenizer, probes, max_new_tokens)
    finally:
        llama.close()
    # ... and one teacher-forced pass per probe over transformers' answer (all positions' logits)
    llama = load_llama(gguf_path, n_threads=n_threads, n_ctx=n_ctx, logits_all=True)
    try:
        forced = [
            teacher_forced_matches(llama, llama.tokenize(prompt_text(tokenizer, q).encode("utf-8"), add_bos=False, special=True), g.tokens)
            for q, g in zip(probes, reference)
        ]
    finally:
        llama.close()
    report = compare(probes, reference, candidate, matches, max_new_tokens, template_match, forced)
    report.gguf = gguf_path
    return report


@dataclass
class VerifiedExport:
    info: ExportInfo
    model: Any  # the registry's ModelInfo of the stored file
    report: AgreementReport


def export_and_verify(
    model: Any,
    tokenizer: Any,
    vault: Any,
    name: str,
    base_gguf: str | None = None,
    output_type: OutputType = DEFAULT_OUTPUT_TYPE,
    probes: Sequence[str] = DEFAULT_PROBES,
    min_answer_agreement: float = 0.9,
    min_token_agreement: float | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    reference: Sequence[Generation] | None = None,
    n_threads: int | None = None,
    actor: str | None = None,
    keep_f16: Sequence[str] = (),
) -> VerifiedExport:
    """Export to GGUF in memory, check it in llama.cpp against transformers, then store it.

    Raises :class:`MemoError` (and stores nothing) when the agreement is below the thresholds; the
    check and its outcome are written to the audit log either way. The default output type is f16
    (see ``gguf_writer.DEFAULT_OUTPUT_TYPE``: the untrained 135M base passes at f16, 10/10, and
    fails at q8_0, 2/10). ``keep_f16`` keeps matching tensors in f16 in a q8_0 file.
    """
    actor = actor or current_actor()
    with export_to_memory(model, base_gguf, output_type, name, keep_f16) as buf:
        report = check_agreement(model, tokenizer, buf.path, probes, max_new_tokens, reference, n_threads)
        report.gguf = f"models/{name}.gguf"
        ok = report.answer_agreement >= min_answer_agreement and (
            min_token_agreement is None or report.token_agreement >= min_token_agreement
        )
        details = dict(
            output_type=output_type,
            keep_f16=list(keep_f16),
            sha256=buf.info.sha256,
            size=buf.info.size,
            probes=len(report.probes),
            answer_agreement=round(report.answer_agreement, 4),
            token_agreement=round(report.token_agreement, 4),
            min_answer_agreement=min_answer_agreement,
            min_token_agreement=min_token_agreement,
            teacher_forced_agreement=None
            if report.teacher_forced_agreement is None
            else round(report.teacher_forced_agreement, 4),
            template_match=report.template_match,
        )
        if not ok:
            vault.audit.append(actor, "model.export_refused", name, **details)
            need = f"≥ {min_answer_agreement:.0%} answers"
            if min_token_agreement is not None:
                need += f" and ≥ {min_token_agreement:.0%} tokens"
            raise MemoError(
                f"GGUF export {name!r} ({output_type}) disagrees with the trained model: {report.summary()} "
                f"(need {need}); not stored — try output type f16, or check the model"
            )
        stored = store_in_vault(buf, vault, name, actor)
        vault.audit.append(actor, "model.export", name, **details)
        return VerifiedExport(buf.info, stored, report)
