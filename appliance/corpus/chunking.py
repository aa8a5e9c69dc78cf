"""Split a document into overlapping chunks on paragraph and sentence boundaries.

Chunks are what the generator model reads to write reflections, so they stay small enough for a
135M-parameter model to keep in view, and overlap so that a fact cut at a boundary survives whole
in one of the two neighbours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from appliance.config import ChunkingParams

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


@dataclass(frozen=True)
class Chunk:
    seq: int
    text: str
    n_words: int


def _words(text: str) -> int:
    return len(text.split())


def _units(text: str, limit: int) -> list[str]:
    """Paragraphs, with over-long paragraphs cut into sentences, over-long sentences into words."""
    units: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        para = para.strip()
        if not para:
            continue
        if _words(para) <= limit:
            units.append(para)
            continue
        for sentence in _SENTENCE.split(para):
            words = sentence.split()
            for i in range(0, len(words), limit):
                units.append(" ".join(words[i : i + limit]))
    return units


def chunk_text(text: str, params: ChunkingParams) -> list[Chunk]:
    units = _units(text, params.target_words)
    chunks: list[Chunk] = []
    current: list[str] = []
    count = 0
    carried = 0  # units at the head of `current` repeated from the previous chunk
    for unit in units:
        n = _words(unit)
        if current and count + n > params.target_words and len(current) > carried:
            chunks.append(Chunk(len(chunks), "\n\n".join(current), count))
            overlap: list[str] = []
            kept = 0
            for prev in reversed(current):
                w = _words(prev)
                if kept + w > params.overlap_words:
                    break
                overlap.insert(0, prev)
                kept += w
            current, count, carried = overlap, kept, len(overlap)
        current.append(unit)
        count += n
    if current and len(current) > carried:
        chunks.append(Chunk(len(chunks), "\n\n".join(current), count))
    return chunks
