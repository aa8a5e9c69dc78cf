import threading
from pathlib import Path

import pytest

from appliance.corpus.documents import forget_document, list_documents, show_document
from appliance.corpus.ingest import IngestCancelled, ingest
from appliance.errors import MemoError
from appliance.vault.store import Vault
from tests.conftest import SAMPLE_CORPUS


def test_sample_corpus_ingest_finds_duplicates(vault: Vault) -> None:
    report = ingest(vault, [SAMPLE_CORPUS])
    s = report.summary()
    assert s["files"] == len([p for p in SAMPLE_CORPUS.rglob("*") if p.is_file()])
    assert s["skipped"] == 0 and s["duplicate"] == 1 and s["near_duplicates"] >= 1
    docs = {Path(d.source).name: d for d in list_documents(vault)}
    backup = docs["vpn-setup-backup.md"]
    assert backup.duplicate_kind == "exact" and backup.duplicate_of == docs["vpn-setup.md"].id and backup.chunks == 0
    copy = docs["shipping-checklist-copy.md"]
    near_pair = {copy.duplicate_of, docs["shipping-checklist.md"].duplicate_of}
    assert docs["shipping-checklist.md"].id in near_pair or copy.id in near_pair
    # re-running is idempotent
    again = ingest(vault, [SAMPLE_CORPUS]).summary()
    assert again["unchanged"] == s["files"] and again["chunks"] == 0
    assert vault.verify().ok


def test_changed_file_becomes_new_version(vault: Vault, tmp_path: Path) -> None:
    f = tmp_path / "policy.md"
    f.write_text("# Travel policy\n\nThe per diem is 45 EUR.\n")
    first = ingest(vault, [f]).outcomes[0]
    assert first.status == "added" and first.version == 1
    f.write_text("# Travel policy\n\nThe per diem is 52 EUR. This replaces the 45 EUR rate.\n")
    second = ingest(vault, [f]).outcomes[0]
    assert second.status == "new_version" and second.version == 2 and second.doc_id == first.doc_id
    detail = show_document(vault, first.doc_id, with_text=True)
    assert [h["status"] for h in detail.history] == ["superseded", "current"]
    assert detail.history[0]["superseded_at"]
    assert "52 EUR" in (detail.text or "")
    with vault.read() as db:
        assert db.execute("SELECT COUNT(*) FROM chunks WHERE doc_id=?", (first.doc_id,)).fetchone()[0] == 2


def test_bad_inputs_are_skipped_with_reason_and_lose_nothing(vault: Vault, tmp_path: Path, settings) -> None:  # noqa: ANN001
    good = tmp_path / "good.txt"
    good.write_text("Kestrel Yard opens at 06:00.")
    (tmp_path / "bin.txt").write_bytes(bytes(range(1, 32)) * 5)
    (tmp_path / "pic.jpg").write_bytes(b"\xff\xd8\xff")
    big = tmp_path / "big.txt"
    big.write_text("word " * 100)
    from dataclasses import replace

    vault.settings = replace(settings, ingest=replace(settings.ingest, max_file_bytes=200))
    report = ingest(vault, [tmp_path])
    by_name = {Path(o.path).name: o for o in report.outcomes}
    assert by_name["good.txt"].status == "added"
    assert "binary" in by_name["bin.txt"].reason
    assert "unsupported file type" in by_name["pic.jpg"].reason
    assert "exceeds" in by_name["big.txt"].reason
    assert len(list_documents(vault)) == 1
    actions = [e.action for e in vault.audit.entries()]
    assert actions.count("ingest.skipped") == 3


def test_missing_path_is_an_error(vault: Vault, tmp_path: Path) -> None:
    with pytest.raises(MemoError, match="no such file"):
        ingest(vault, [tmp_path / "nope"])


def test_cancel_keeps_committed_work_and_rerun_completes(vault: Vault, tmp_path: Path) -> None:
    for i in range(10):
        (tmp_path / f"d{i}.md").write_text(f"# Doc {i}\n\nFact {i}: the code of site {i} is S-{i * 11}.")
    cancel = threading.Event()

    def stop_after_four(outcome, done, total) -> None:  # noqa: ANN001
        if done == 4:
            cancel.set()

    with pytest.raises(IngestCancelled, match="re-run"):
        ingest(vault, [tmp_path], progress=stop_after_four, cancel=cancel)
    assert len(list_documents(vault)) == 4
    report = ingest(vault, [tmp_path]).summary()
    assert report["unchanged"] == 4 and report["added"] == 6
    assert len(list_documents(vault)) == 10


def test_forget_destroys_content_but_keeps_shared_chunks(vault: Vault, tmp_path: Path) -> None:
    shared = "Shared paragraph about the Kestrel Yard loading dock."
    a, b = tmp_path / "a.md", tmp_path / "b.md"
    a.write_text(f"# A\n\nAlpha-only fact: code ZQ-77.\n\n{shared}")
    b.write_text(f"{shared}")
    ingest(vault, [a, b])
    doc_a = next(d for d in list_documents(vault) if d.source.endswith("a.md"))
    with vault.read() as db:
        oids_a = {r[0] for r in db.execute("SELECT raw_oid FROM versions WHERE doc_id=?", (doc_a.id,))}
    result = forget_document(vault, doc_a.id, actor="dpo")
    assert result["objects_destroyed"] >= 3
    for oid in oids_a:
        assert not vault._object_path(oid).exists()
    assert [d.source.endswith("b.md") for d in list_documents(vault)] == [True]
    forgotten = next(d for d in list_documents(vault, include_forgotten=True) if d.id == doc_a.id)
    assert forgotten.status == "forgotten" and forgotten.title == "[forgotten]" and "a.md" not in forgotten.source
    assert vault.verify().ok
    # a re-ingest of the forgotten file is refused unless explicitly allowed
    again = ingest(vault, [a]).outcomes[0]
    assert again.status == "skipped" and "allow-forgotten" in again.reason
    assert ingest(vault, [a], allow_forgotten=True).outcomes[0].status in ("added", "new_version")
    with pytest.raises(MemoError, match="no document"):
        forget_document(vault, "doc-000000000000")
