"""Near-duplicate detection with MinHash over word shingles (datasketch).

Real wikis hold copied pages with a word or two changed; they are kept (the difference may matter)
but marked, so that reflections do not learn the same facts twice and conflicts can be surfaced.
"""

from __future__ import annotations

import re

import numpy as np
from datasketch import MinHash, MinHashLSH

from appliance.config import IngestParams

SCHEME = "affine32"  # fixed so stored signatures stay comparable across datasketch releases


def minhash(text: str, params: IngestParams) -> MinHash:
    words = re.findall(r"\w+", text.lower())
    k = params.shingle_words
    shingles = {" ".join(words[i : i + k]) for i in range(max(1, len(words) - k + 1))}
    mh = MinHash(num_perm=params.minhash_permutations, seed=1, scheme=SCHEME)
    mh.update_batch([s.encode() for s in shingles])
    return mh


def to_blob(mh: MinHash) -> bytes:
    return np.asarray(mh.hashvalues, dtype=np.uint64).tobytes()


def from_blob(blob: bytes, params: IngestParams) -> MinHash:
    values = np.frombuffer(blob, dtype=np.uint64)
    return MinHash(num_perm=params.minhash_permutations, seed=1, hashvalues=values, scheme=SCHEME)


class NearDuplicateIndex:
    """In-memory LSH over the current versions, rebuilt from the catalog at each ingest."""

    def __init__(self, params: IngestParams) -> None:
        self.params = params
        self._lsh = MinHashLSH(threshold=params.near_duplicate_threshold, num_perm=params.minhash_permutations)
        self._sigs: dict[str, MinHash] = {}

    def add(self, key: str, mh: MinHash) -> None:
        if key in self._sigs:
            self.remove(key)
        self._lsh.insert(key, mh)
        self._sigs[key] = mh

    def remove(self, key: str) -> None:
        if key in self._sigs:
            self._lsh.remove(key)
            del self._sigs[key]

    def best_match(self, mh: MinHash, exclude: str) -> tuple[str, float] | None:
        best: tuple[str, float] | None = None
        for key in self._lsh.query(mh):
            if key == exclude:
                continue
            sim = float(mh.jaccard(self._sigs[key]))
            if sim >= self.params.near_duplicate_threshold and (best is None or sim > best[1]):
                best = (key, sim)
        return best
