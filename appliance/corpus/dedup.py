"""Near-duplicate detection with MinHash over word shingles (datasketch).

Real wikis hold copied pages with a word or two changed; they are kept (the difference may matter)
but marked, so that reflections do not learn the same facts twice and conflicts can be surfaced.

The vault's documents are indexed in the catalog (:class:`BandIndex`: the LSH bands of each
current version's signature, one indexed row per band), so a new document is compared with the
few documents that share a band, read on demand — not with an index rebuilt from every signature
at the start of each ingest, which made adding a handful of files to a large vault cost seconds.
Documents of the run in progress sit in an in-memory :class:`NearDuplicateIndex` beside it.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from typing import Any

import numpy as np
from datasketch import MinHash, MinHashLSH

from appliance.config import IngestParams

BANDS_META = "minhash_bands"  # catalog meta: "1" once every current signature's bands are in minhash_bands

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
    """In-memory LSH over the documents of one ingest run (the catalog's :class:`BandIndex` holds the rest)."""

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


@lru_cache(maxsize=8)
def lsh_shape(threshold: float, permutations: int) -> tuple[int, int]:
    """(bands, rows per band) that datasketch's LSH picks for this threshold: the same candidates."""
    lsh = MinHashLSH(threshold=threshold, num_perm=permutations)
    return lsh.b, lsh.r


def similarity(a: bytes, b: bytes) -> float:
    """Estimated Jaccard similarity of two stored signatures (what ``MinHash.jaccard`` computes)."""
    x, y = np.frombuffer(a, dtype=np.uint64), np.frombuffer(b, dtype=np.uint64)
    return float(np.count_nonzero(x == y)) / len(x)


class BandIndex:
    """The catalog's LSH index of current versions' signatures (table ``minhash_bands``).

    A band's key is a 64-bit BLAKE2b of its hash values: equal bands give equal keys (a rare
    collision only adds a candidate, which the similarity check then drops)."""

    def __init__(self, params: IngestParams) -> None:
        self.params = params
        self.bands, self.rows = lsh_shape(params.near_duplicate_threshold, params.minhash_permutations)

    def keys(self, blob: bytes) -> list[tuple[int, int]]:
        values = np.frombuffer(blob, dtype=np.uint64)
        out = []
        for band in range(self.bands):
            digest = hashlib.blake2b(values[band * self.rows:(band + 1) * self.rows].tobytes(), digest_size=8).digest()
            out.append((band, int.from_bytes(digest, "little", signed=True)))
        return out

    def record(self, db: Any, doc_id: str, blob: bytes | None, previous: bytes | None = None) -> None:
        """``doc_id``'s current version now has signature ``blob`` (None: none, e.g. an exact
        duplicate, or a forgotten document); ``previous`` is the signature it replaces."""
        if previous:
            db.executemany("DELETE FROM minhash_bands WHERE band=? AND key=? AND doc_id=?",
                           [(band, key, doc_id) for band, key in self.keys(previous)])
        if blob:
            db.executemany("INSERT OR IGNORE INTO minhash_bands (band, key, doc_id) VALUES (?, ?, ?)",
                           [(band, key, doc_id) for band, key in self.keys(blob)])

    def current(self, db: Any, doc_id: str) -> bytes | None:
        """The signature of ``doc_id``'s current version (what its rows in the index were made from)."""
        row = db.execute("SELECT minhash FROM versions WHERE doc_id=? AND status='current'", (doc_id,)).fetchone()
        return row["minhash"] if row else None

    def candidates(self, db: Any, blob: bytes) -> list[tuple[str, bytes]]:
        """Current, non-forgotten documents sharing a band with ``blob``, with their signatures."""
        keys = self.keys(blob)
        marks = ", ".join("(?, ?)" for _ in keys)
        rows = db.execute(
            "SELECT DISTINCT v.doc_id, v.minhash FROM versions v JOIN documents d ON d.id = v.doc_id "
            f"WHERE v.status = 'current' AND v.minhash IS NOT NULL AND d.forgotten_at IS NULL AND v.doc_id IN "
            f"(SELECT doc_id FROM minhash_bands WHERE (band, key) IN (VALUES {marks})) ORDER BY v.doc_id",
            [x for k in keys for x in k],
        ).fetchall()
        return [(r["doc_id"], r["minhash"]) for r in rows]

    def complete(self, db: Any) -> bool:
        row = db.execute("SELECT value FROM meta WHERE key=?", (BANDS_META,)).fetchone()
        return bool(row and row[0] == "1")

    def rebuild(self, db: Any) -> int:
        """Index every current signature (once, for a catalog of an earlier release); returns how many."""
        db.execute("DELETE FROM minhash_bands")
        rows = db.execute("SELECT doc_id, minhash FROM versions WHERE status = 'current' AND minhash IS NOT NULL").fetchall()
        for r in rows:
            self.record(db, r["doc_id"], r["minhash"])
        db.execute("INSERT OR REPLACE INTO meta VALUES (?, '1')", (BANDS_META,))
        return len(rows)
