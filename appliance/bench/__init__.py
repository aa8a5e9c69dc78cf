"""Benchmark harness: the memory (memo) against retrieval baselines on a questions file.

``scoring`` decides whether a prediction matches the gold answers; ``rag`` holds the BM25 and
dense retrievers over the vault's chunks and the RAG answerer; ``harness`` runs the pipeline on a
corpus, answers every question with every system and writes predictions and a results table.
"""
