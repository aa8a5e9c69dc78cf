"""Evaluation of a memory: held-out probes (wordings never trained on), scored per document.

"contains": the gold answer occurs in the memory's answer (normalised); "exact": the answer's
first sentence is the gold answer. Per-document accuracy lets a later merge be compared with the
version it replaces, document by document.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appliance.memory.recall import DEFAULT_MAX_TOKENS, Memory
from appliance.memory.probes import Probe
from appliance.reflect.validate import normalise

SHARE_DIGITS = 4  # recalls and other shares are reported rounded to this many decimals


@dataclass
class ProbeOutcome:
    question: str
    gold: str
    answer: str
    sources: list[str]
    doc_ids: list[str]
    contains: bool
    exact: bool
    source_correct: bool
    confidence: float = 1.0
    kind: str = ""


@dataclass
class EvalReport:
    model: str
    probes: int
    contains: float
    exact: float
    source_accuracy: float
    per_document: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0
    outcomes: list[ProbeOutcome] = field(default_factory=list)

    def to_dict(self, with_outcomes: bool = False) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "outcomes"}
        if with_outcomes:
            d["outcomes"] = [o.__dict__ for o in self.outcomes]
        return d


def score(answer: str, gold: str) -> tuple[bool, bool]:
    a, g = normalise(answer), normalise(gold)
    first = normalise(answer.split(". ")[0])
    return bool(g) and f" {g} " in f" {a} ", first == g


def evaluate(memory: Memory, probes: list[Probe], progress: Callable[[int, int], None] | None = None,
             batch: int = 16, max_tokens: int = DEFAULT_MAX_TOKENS) -> EvalReport:
    started = time.monotonic()
    outcomes: list[ProbeOutcome] = []
    for i in range(0, len(probes), batch):
        part = probes[i : i + batch]
        for p, r in zip(part, memory.ask([p.question for p in part], max_tokens)):
            contains, exact = score(r.answer, p.answer)
            outcomes.append(ProbeOutcome(p.question, p.answer, r.answer, r.sources, p.doc_ids, contains, exact,
                                         bool(set(r.sources) & set(p.doc_ids)), r.confidence, p.kind))
        if progress:
            progress(min(i + batch, len(probes)), len(probes))
    n = len(outcomes) or 1
    per_doc: dict[str, dict[str, float]] = {}
    for doc in sorted({d for o in outcomes for d in o.doc_ids}):
        mine = [o for o in outcomes if doc in o.doc_ids]
        per_doc[doc] = {"probes": len(mine), "contains": round(sum(o.contains for o in mine) / len(mine), SHARE_DIGITS),
                        "exact": round(sum(o.exact for o in mine) / len(mine), SHARE_DIGITS)}
    return EvalReport(
        model=memory.identity, probes=len(outcomes),
        contains=round(sum(o.contains for o in outcomes) / n, SHARE_DIGITS),
        exact=round(sum(o.exact for o in outcomes) / n, SHARE_DIGITS),
        source_accuracy=round(sum(o.source_correct for o in outcomes) / n, SHARE_DIGITS), per_document=per_doc,
        seconds=round(time.monotonic() - started, 2), outcomes=outcomes,
    )


class TransformersChat:
    """A memory model in transformers answering like the served one: same prompt, greedy.

    Used to evaluate candidates before they are exported (and approved): their weights never
    leave RAM. Prompts are left-padded and decoded in batches.
    """

    def __init__(self, model: Any, tokenizer: Any, identity: str) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self._identity = identity

    @property
    def identity(self) -> str:
        return self._identity

    def chat(self, messages, max_tokens: int = 256, temperature: float = 0.0, json_schema=None):  # noqa: ANN001, ANN201
        return self.chat_many([messages], max_tokens, temperature, json_schema)[0]

    def chat_many(self, conversations, max_tokens: int = 256, temperature: float = 0.0, json_schema=None):  # noqa: ANN001, ANN201
        tok = self.tokenizer
        prompts = [tok.apply_chat_template(list(c), add_generation_prompt=True, tokenize=True, return_dict=False)
                   for c in conversations]
        return self._generate(prompts, max_tokens, temperature, json_schema, False)

    def complete_many(self, prompts, max_tokens: int = 256, temperature: float = 0.0, json_schema=None, *,  # noqa: ANN001, ANN201
                      stop=(), special: bool = False, logprobs: bool = False):
        """Raw prompts (special tokens parsed when ``special``), as :meth:`LlamaCppModel.complete_many`."""
        tok = self.tokenizer
        ids = [tok(p, add_special_tokens=not special)["input_ids"] for p in prompts]
        return self._generate(ids, max_tokens, temperature, json_schema, logprobs)

    def _generate(self, prompts, max_tokens, temperature, json_schema, logprobs):  # noqa: ANN001, ANN202
        import torch

        from appliance.errors import MemoError
        from appliance.llm.base import ChatResult, GenerationStats

        if json_schema is not None or temperature != 0.0:
            raise MemoError("the transformers evaluator only decodes greedily, without a schema")
        tok = self.tokenizer
        width = max(len(p) for p in prompts)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        dev = next(self.model.parameters()).device
        ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts], device=dev)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=dev)
        stops = [tok.eos_token_id]
        end = tok.convert_tokens_to_ids("<|im_end|>")
        if isinstance(end, int) and end >= 0 and end not in stops:
            stops.append(end)
        started = time.monotonic()
        with torch.inference_mode():
            y = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_tokens, do_sample=False,
                                    temperature=None, top_p=None, top_k=None, repetition_penalty=None,
                                    eos_token_id=stops, pad_token_id=pad, return_dict_in_generate=True,
                                    output_logits=logprobs)
        seconds = time.monotonic() - started
        seqs = y.sequences[:, width:]
        chosen = None
        if logprobs:  # log-softmax of the raw logits at each chosen token: [batch, steps]
            logits = torch.stack(y.logits, dim=1).float()
            chosen = torch.log_softmax(logits, dim=-1).gather(-1, seqs[:, : logits.shape[1], None]).squeeze(-1).tolist()
        results = []
        for n, (row, p) in enumerate(zip(seqs.tolist(), prompts)):
            cut = next((i for i, t in enumerate(row) if t in stops), None)
            body = row if cut is None else row[:cut]
            raw = tok.decode(body, skip_special_tokens=True)
            text = raw.strip()
            lp = tuple(chosen[n][: len(body) + (cut is not None)]) if chosen is not None else None
            starts = None
            if lp is not None:  # where each token begins in the (stripped) text, as llama.cpp reports it
                lead = len(raw) - len(raw.lstrip())
                starts = tuple(max(0, len(tok.decode(body[:i], skip_special_tokens=True).encode()) - lead)
                               for i in range(len(lp)))
            results.append(ChatResult(text, "length" if cut is None else "stop",
                                      GenerationStats(len(p), len(body), seconds), self._identity, token_logprobs=lp,
                                      token_starts=starts))
        return results
