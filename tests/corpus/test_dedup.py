"""Near duplicates against what the vault already holds: the catalog's LSH band index finds a
reworded copy of a document ingested in an earlier run, follows new versions and forgetting, and
is rebuilt once for a catalog that predates it. Same candidates as datasketch's LSH."""

from __future__ import annotations

import random
from pathlib import Path

from datasketch import MinHashLSH

from appliance.config import IngestParams
from appliance.corpus.dedup import BANDS_META, BandIndex, lsh_shape, minhash, to_blob
from appliance.corpus.documents import forget_document
from appliance.corpus.ingest import ingest
from appliance.vault import catalog as cat
from appliance.vault.store import Vault

WORDS = "cold room tote logger van route policy vendor audit shift lead team badge depot freezer pallet".split()


def _text(seed: int, n: int = 120) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n)) + f". Reference {seed}."


def _outcome(report, name: str):  # noqa: ANN001, ANN202
    return next(o for o in report.outcomes if o.path.endswith(name))


def test_a_reworded_copy_of_an_earlier_runs_document_is_marked(vault: Vault, tmp_path: Path) -> None:
    original = _text(1)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "orig.md").write_text(original)
    (tmp_path / "a" / "other.md").write_text(_text(2))
    first = ingest(vault, [tmp_path / "a"])
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "copy.md").write_text(original.replace("Reference 1", "Reference one, edited"))
    second = ingest(vault, [tmp_path / "b"])  # a new run: only the catalog knows orig.md
    copy = _outcome(second, "copy.md")
    assert copy.status == "added" and copy.duplicate_of == _outcome(first, "orig.md").doc_id and copy.similarity >= 0.5

    (tmp_path / "a" / "orig.md").write_text(_text(3))  # orig.md's current text no longer matches
    ingest(vault, [tmp_path / "a"])
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "copy2.md").write_text(original + " Another edit.")
    third = ingest(vault, [tmp_path / "c"])
    assert _outcome(third, "copy2.md").duplicate_of == copy.doc_id  # the copy still holds that text; orig.md does not

    forget_document(vault, copy.doc_id, actor="tester")
    with vault.read() as db:
        assert db.execute("SELECT COUNT(*) FROM minhash_bands WHERE doc_id=?", (copy.doc_id,)).fetchone()[0] == 0


def test_the_band_index_is_rebuilt_once_for_an_older_catalog(vault: Vault, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "orig.md").write_text(_text(4))
    ingest(vault, [tmp_path / "d"])
    with vault.transaction() as db:  # as a catalog of the previous release is: signatures, no band rows
        db.execute("DELETE FROM minhash_bands")
        db.execute("DELETE FROM meta WHERE key=?", (BANDS_META,))
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "copy.md").write_text(_text(4) + " Edited.")
    report = ingest(vault, [tmp_path / "e"])
    assert _outcome(report, "copy.md").duplicate_of is not None
    with vault.read() as db:
        assert cat.get_meta(db, BANDS_META) == "1"
        assert db.execute("SELECT COUNT(DISTINCT doc_id) FROM minhash_bands").fetchone()[0] == 2


def test_band_keys_give_the_candidates_datasketch_gives() -> None:
    params = IngestParams()
    index = BandIndex(params)
    assert (index.bands, index.rows) == lsh_shape(params.near_duplicate_threshold, params.minhash_permutations)
    lsh = MinHashLSH(threshold=params.near_duplicate_threshold, num_perm=params.minhash_permutations)
    texts = {f"d{i}": _text(i % 7) + (f" variant {i}" if i >= 7 else "") for i in range(30)}
    sigs = {k: minhash(t, params) for k, t in texts.items()}
    keys = {k: set(index.keys(to_blob(m))) for k, m in sigs.items()}
    for k, m in sigs.items():
        lsh.insert(k, m)
    for k, m in sigs.items():
        ours = {o for o in sigs if keys[o] & keys[k]}
        assert ours == set(lsh.query(m)), k
