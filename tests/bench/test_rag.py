"""Retrieval baselines over a real vault: the document holding a fact comes back in the top-k."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.bench.rag import BM25Retriever, DenseRetriever, RagAnswerer, embedding_model_dir, load_passages
from appliance.corpus.documents import forget_document, list_documents
from appliance.corpus.ingest import ingest
from appliance.vault.store import Vault
from tests.bench.conftest import EchoModel

# question → the sample document (by file name) that holds its answer
FACTS = {
    "What is the hostname of the VPN gateway?": "vpn-setup.md",
    "What is the helpdesk phone extension?": "helpdesk-faq.html",
    "Who is the site manager of Little Osier?": "sites.md",
    "How many days of annual leave do full-time employees get per year?": "leave-policy.txt",
    "Which team owns Frostline?": "systems-inventory.html",
    "Who leads Platform Services?": "org-chart.md",
}


@pytest.fixture
def small_vault(vault: Vault, small_corpus: Path) -> Vault:
    ingest(vault, [small_corpus])
    return vault


def _doc_names(vault: Vault) -> dict[str, str]:
    return {d.id: Path(d.source).name for d in list_documents(vault)}


def test_passages_are_current_chunks_with_titles(small_vault: Vault) -> None:
    passages = load_passages(small_vault)
    assert len(passages) == sum(d.chunks for d in list_documents(small_vault))
    assert all(p.text and p.title and p.indexed_text.startswith(p.title) for p in passages)
    gone = next(d for d in list_documents(small_vault) if d.source.endswith("vpn-setup.md"))
    forget_document(small_vault, gone.id, actor="tester")
    assert gone.id not in {p.doc_id for p in load_passages(small_vault)}


def test_bm25_finds_the_document_of_each_fact(small_vault: Vault) -> None:
    names = _doc_names(small_vault)
    bm25 = BM25Retriever(load_passages(small_vault))
    for question, doc in FACTS.items():
        hits = bm25.search(question, 3)
        assert doc in [names[h.passage.doc_id] for h in hits], question
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert len(bm25.search("xyzzy plugh", 100)) == len(bm25.passages)  # k is capped, no error on unknown words


def test_embedding_model_ships_in_its_package() -> None:
    path = embedding_model_dir()
    assert (path / "model.safetensors").exists() and (path / "tokenizer.json").exists()


@pytest.mark.slow
def test_dense_finds_the_document_of_each_fact(small_vault: Vault, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    names = _doc_names(small_vault)
    dense = DenseRetriever(load_passages(small_vault))
    emb = dense.embedder.encode(["Who leads Platform Services?"])
    assert emb.shape == (1, 384) and abs(float((emb**2).sum()) - 1.0) < 1e-4  # L2-normalised
    for question, doc in FACTS.items():
        assert doc in [names[h.passage.doc_id] for h in dense.search(question, 3)], question


def test_rag_prompt_holds_ranked_passages_within_budget(small_vault: Vault) -> None:
    model = EchoModel()
    rag = RagAnswerer(model, BM25Retriever(load_passages(small_vault)), k=3, max_tokens=32, context_tokens=200)
    result = rag.answer("What is the hostname of the VPN gateway?")
    prompt = model.last[-1]["content"]
    assert prompt.startswith("Context:\n\n[1] ") and prompt.rstrip().endswith("Question: What is the hostname of the VPN gateway?")
    assert len(prompt) // 4 < 200 + 60  # the passages were cut to the budget
    assert result.sources and result.sources[0] == result.hits[0].passage.doc_id
    assert result.tokens["executive_completion"] == 10 and result.seconds >= 0
    assert set(result.timings) == {"retrieve", "generate"}


@pytest.mark.slow
def test_rag_answers_with_the_bundled_executive(small_vault: Vault, bundled_gguf: Path) -> None:
    from appliance.llm.connect import open_model

    model = open_model(small_vault, "local", "executive")
    rag = RagAnswerer(model, BM25Retriever(load_passages(small_vault)), k=2, max_tokens=48)
    result = rag.answer("What is the hostname of the VPN gateway?")
    assert result.answer and result.tokens["executive_prompt"] > 100 and result.tokens["executive_completion"] > 0
    assert "vpn-setup.md" in [_doc_names(small_vault)[d] for d in result.sources]
