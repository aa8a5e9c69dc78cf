"""Queries over ingested documents, and forgetting one (its content is destroyed, not hidden)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from appliance.config import current_actor
from appliance.corpus.dedup import BandIndex
from appliance.errors import MemoError
from appliance.vault.store import Vault


@dataclass
class DocumentSummary:
    id: str
    title: str
    source: str
    version: int
    versions: int
    status: str
    media_type: str
    chunks: int
    words: int
    duplicate_of: str | None
    duplicate_kind: str | None
    similarity: float | None
    ingested_at: str

    @property
    def duplicate_label(self) -> str:
        """How a listing shows the duplicate relation: "exact of doc-…", "near of doc-… (0.69)"."""
        if not self.duplicate_of:
            return ""
        label = f"{self.duplicate_kind} of {self.duplicate_of}"
        if self.similarity is not None and self.duplicate_kind == "near":
            label += f" ({self.similarity:.2f})"
        return label

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class DocumentDetail:
    summary: DocumentSummary
    history: list[dict[str, Any]] = field(default_factory=list)
    text: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary.to_dict(), "history": self.history, **({"text": self.text} if self.text is not None else {})}


_LATEST = """
SELECT d.id, d.source, d.forgotten_at, v.*,
       (SELECT COUNT(*) FROM versions x WHERE x.doc_id = d.id) AS n_versions
FROM documents d JOIN versions v ON v.doc_id = d.id
WHERE v.version = (SELECT MAX(version) FROM versions y WHERE y.doc_id = d.id)
"""


def _summary(row) -> DocumentSummary:  # noqa: ANN001
    return DocumentSummary(
        id=row["id"], title=row["title"], source=row["source"], version=row["version"], versions=row["n_versions"],
        status=row["status"], media_type=row["media_type"], chunks=row["n_chunks"], words=row["n_words"],
        duplicate_of=row["duplicate_of"], duplicate_kind=row["duplicate_kind"], similarity=row["similarity"],
        ingested_at=row["ingested_at"],
    )


def list_documents(vault: Vault, include_forgotten: bool = False) -> list[DocumentSummary]:
    sql = _LATEST + ("" if include_forgotten else " AND d.forgotten_at IS NULL") + " ORDER BY d.source"
    with vault.read() as db:
        return [_summary(r) for r in db.execute(sql)]


def show_document(vault: Vault, doc_id: str, with_text: bool = False) -> DocumentDetail:
    with vault.read() as db:
        row = db.execute(_LATEST + " AND d.id = ?", (doc_id,)).fetchone()
        if row is None:
            raise MemoError(f"no document {doc_id!r}; list them with `memo docs list`")
        history = [
            {k: r[k] for k in ("version", "status", "title", "size_bytes", "n_chunks", "ingested_at", "superseded_at",
                                 "duplicate_of", "duplicate_kind", "similarity")}
            for r in db.execute("SELECT * FROM versions WHERE doc_id=? ORDER BY version", (doc_id,))
        ]
    detail = DocumentDetail(_summary(row), history)
    if with_text and row["text_oid"]:
        detail.text = vault.get_object(row["text_oid"]).decode()
    return detail


def forget_document(vault: Vault, doc_id: str, actor: str | None = None) -> dict[str, Any]:
    """Destroy every version's content and the reflections derived from it; keep only an opaque
    tombstone so a re-ingest is noticed.

    Objects shared with other documents (identical chunks) are kept for them. What the memory
    layer derived from the document (evaluation probe texts, trained weights) is the application
    layer's part of forgetting (:func:`appliance.app.corpus.forget`), so the corpus imports no memory.
    """
    actor = actor or current_actor()
    with vault.read() as db:
        row = db.execute("SELECT forgotten_at FROM documents WHERE id=?", (doc_id,)).fetchone()
    if row is None:
        raise MemoError(f"no document {doc_id!r}; list them with `memo docs list`")
    if row["forgotten_at"]:
        raise MemoError(f"document {doc_id} was already forgotten at {row['forgotten_at']}")
    vault.audit.append(actor, "docs.forget", doc_id)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with vault.transaction() as db:
        source = db.execute("SELECT source FROM documents WHERE id=?", (doc_id,)).fetchone()["source"]
        mine = set()
        for r in db.execute("SELECT raw_oid, text_oid FROM versions WHERE doc_id=?", (doc_id,)):
            mine.update(o for o in r if o)
        mine.update(r[0] for r in db.execute("SELECT oid FROM chunks WHERE doc_id=?", (doc_id,)))
        n_versions = db.execute("SELECT COUNT(*) FROM versions WHERE doc_id=?", (doc_id,)).fetchone()[0]
        db.execute("DELETE FROM chunks WHERE doc_id=?", (doc_id,))
        bands = BandIndex(vault.settings.ingest)
        bands.record(db, doc_id, None, previous=bands.current(db, doc_id))
        db.execute(
            "UPDATE versions SET status='forgotten', title='[forgotten]', raw_oid=NULL, text_oid=NULL, minhash=NULL,"
            " n_chunks=0, superseded_at=COALESCE(superseded_at, ?) WHERE doc_id=?",
            (now, doc_id),
        )
        tombstone = "forgotten:" + vault.mac(source.encode(), "forgotten-source")
        db.execute("UPDATE documents SET source=?, forgotten_at=? WHERE id=?", (tombstone, now, doc_id))
        still_used = vault.referenced_objects(db)
        destroyed = sorted(mine - still_used)
    for oid in destroyed:  # after the commit: a crash before this leaves orphans that `gc` removes
        vault.delete_object(oid)
    from appliance.reflect.store import drop_documents, load_units, save_unit  # reflections are derived content: they go too

    units = drop_documents(vault, {doc_id})
    pairs_dropped = 0
    for unit in load_units(vault):  # pairs of other documents' units that cite it (supersessions, relations)
        keep = [p for p in unit.pairs if doc_id not in p.doc_ids]
        if len(keep) != len(unit.pairs):
            pairs_dropped += len(unit.pairs) - len(keep)
            save_unit(vault, unit.model_copy(update={"pairs": keep}))
    result = {"doc_id": doc_id, "versions": n_versions, "objects_destroyed": len(destroyed),
              "objects_shared_kept": len(mine) - len(destroyed), "reflection_units_destroyed": units,
              "reflection_pairs_destroyed": pairs_dropped}
    vault.audit.append(actor, "docs.forgotten", doc_id, **{k: v for k, v in result.items() if k != "doc_id"})
    return result
