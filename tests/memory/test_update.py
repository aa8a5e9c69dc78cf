"""Continual updates and forgetting: what changed, candidate reports, and (slow) the real pipeline."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from appliance.config import Settings, TrainParams
from appliance.corpus.ingest import ingest
from appliance.errors import MemoError
from appliance.llm.base import ChatResult, GenerationStats
from appliance.memory.candidate_eval import compare, probe_sets, report_digest
from appliance.memory.update import changed_documents, run_update
from appliance.memory.versions import create_version, get_version, promoted, set_status
from appliance.memory.recall import Memory
from appliance.reflect.store import QAPair, ReflectionUnit, save_unit
from appliance.vault.keys import Secret
from appliance.vault.store import Vault
from tests.conftest import FAST_KDF, PASSPHRASE


def _docs(vault: Vault, root: Path, texts: dict[str, str]) -> dict[str, str]:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (root / name).write_text(text)
    ingest(vault, [root])
    from appliance.corpus.documents import list_documents

    return {Path(d.source).name: d.id for d in list_documents(vault)}


def test_changed_documents_follow_the_lineage(vault: Vault, tmp_path: Path) -> None:
    ids = _docs(vault, tmp_path / "c", {"a.md": "# A\n\nAlpha is led by Ann.\n", "b.md": "# B\n\nBeta sits in Bree.\n",
                                        "c.md": "# C\n\nGamma costs 9 EUR.\n"})
    v1 = create_version(vault, None, "base", "lora", "t", {"reflections": {"documents": [ids["a.md"], ids["b.md"]]}})
    assert changed_documents(vault, v1.id) == [ids["c.md"]]
    # an update covering c, recorded with document versions, on top of v1
    v2 = create_version(vault, v1.id, "base", "merge", "t", {"merge": {"old": [v1.id], "task_vector": v1.id},
                                                              "documents_considered": [ids["c.md"]],
                                                              "document_versions": {ids["c.md"]: 1}})
    assert changed_documents(vault, v2.id) == []
    (tmp_path / "c" / "c.md").write_text("# C\n\nGamma costs 12 EUR from May.\n")
    ingest(vault, [tmp_path / "c"])  # a new version of c
    assert changed_documents(vault, v2.id) == [ids["c.md"]]
    assert changed_documents(vault, v1.id) == [ids["c.md"]]


class _Table:
    """A chat backend that answers from a fixed table (the memory under test is the table)."""

    def __init__(self, identity: str, answers: dict[str, str]) -> None:
        self.identity, self.answers = identity, answers

    def chat_many(self, conversations, max_tokens=256, temperature=0.0, json_schema=None):  # noqa: ANN001, ANN201
        return [ChatResult(self.answers.get(c[-1]["content"], "I don't know."), "stop", GenerationStats(1, 1, 0.0), self.identity)
                for c in conversations]


def Scripted(identity: str, answers: dict[str, str]) -> Memory:  # noqa: N802 - reads as the class it stands for
    """The report's arithmetic under test: a memory asked in the chat layout, answering from a table."""
    return Memory(_Table(identity, answers), legacy=True)


D_OLD, D_KEEP, D_NEW = "doc-0000000000a1", "doc-0000000000b2", "doc-0000000000c3"


def _pair(i: str, kind: str, q: str, span: str, docs: list[str]) -> QAPair:
    return QAPair(id=i, kind=kind, question=q, answer=f"{span}. ...", answer_span=span, doc_ids=docs)


PAIRS = [
    _pair("1", "paraphrase", "Who runs Alpha?", "Ann", [D_OLD]),
    _pair("2", "paraphrase", "Where is Beta?", "Bree", [D_KEEP]),
    _pair("3", "paraphrase", "What does Beta weigh?", "4 kg", [D_KEEP]),
    _pair("4", "paraphrase", "What is the per diem?", "52 EUR", [D_NEW]),
    _pair("5", "current", "What is the per diem now?", "52 EUR", [D_NEW, D_OLD]),
    _pair("6", "fact", "What is the per diem in the new policy?", "52 EUR", [D_NEW]),
]


def test_candidate_report_retention_acquisition_superseded() -> None:
    sets = probe_sets(PAIRS, {D_NEW})
    assert sets.counts() == {"old": 3, "new": 1, "superseded": 1}
    serving = Scripted("mem-1", {"Who runs Alpha?": "Ann. Alpha is led by Ann.", "Where is Beta?": "Bree.",
                                 "What is the per diem now?": "48 EUR."})
    candidate = Scripted("mem-2", {"Who runs Alpha?": "Ann.", "Where is Beta?": "In Kent.", "What does Beta weigh?": "4 kg.",
                                   "What is the per diem?": "52 EUR a day.", "What is the per diem now?": "52 EUR."})
    r = compare(candidate, serving, sets)
    assert r["retention"] == 0.5  # of the 2 old probes the serving memory answered, 1 is still answered
    assert r["old_accuracy"] == {"reference": round(2 / 3, 4), "candidate": round(2 / 3, 4)}
    assert r["acquisition"] == 1.0 and r["new_accuracy_reference"] == 0.0
    assert r["superseded"] == {"reference": 0.0, "candidate": 1.0}  # the changed policy now answers its new value
    assert r["per_document"][D_KEEP] == {"probes": 2, "candidate": 0.5, "reference": 0.5, "delta": 0.0}
    assert r["per_document"][D_NEW]["delta"] == 1.0
    assert report_digest(r) == report_digest(dict(reversed(list(r.items())))) and report_digest(None) == "none"
    first = compare(candidate, None, sets)
    assert first["retention"] is None and first["reference"] is None


def test_forgetting_scrubs_probe_texts_but_not_signed_reports(vault: Vault, tmp_path: Path) -> None:
    from appliance.app.corpus import forget
    from appliance.app.session import Session
    from appliance.approvals.records import evaluation_report, report_digest as signed_digest
    from appliance.memory.update import _store_report

    ids = _docs(vault, tmp_path / "s", {"a.md": "# A\n\nAlpha is led by Ann.\n", "b.md": "# B\n\nBeta sits in Bree.\n"})
    pairs = [_pair("1", "paraphrase", "Who runs Alpha?", "Ann", [ids["a.md"]]),
             _pair("2", "paraphrase", "Where is Beta?", "Bree", [ids["b.md"]])]
    report = compare(Scripted("c", {"Who runs Alpha?": "Ann."}), None, probe_sets(pairs, set()))
    v = create_version(vault, None, "base", "lora", "t", {})
    _store_report(vault, v.id, report, "t")
    before = signed_digest(evaluation_report(get_version(vault, v.id)))
    assert result_count(vault, v.id) == 2
    assert forget(Session.of(vault), ids["a.md"], candidate=False).evaluation_probes_destroyed == 1  # the forget use case
    after = get_version(vault, v.id)
    assert [o["question"] for o in after.metrics["candidate_eval_outcomes"]["old"]] == ["Where is Beta?"]
    assert "Who runs Alpha" not in str(after.metrics)
    assert signed_digest(evaluation_report(after)) == before  # approvals of that version stay valid


def result_count(vault: Vault, version_id: str) -> int:
    return sum(map(len, get_version(vault, version_id).metrics["candidate_eval_outcomes"].values()))


def test_update_needs_a_promoted_memory_and_something_new(vault: Vault) -> None:
    with pytest.raises(MemoError, match="no memory is promoted"):
        run_update(vault, generator=None)
    v = create_version(vault, None, "base", "lora", "t", {"reflections": {"documents": []}})
    set_status(vault, v.id, "promoted")
    with pytest.raises(MemoError, match="no new or changed documents"):
        run_update(vault, generator=None)
    with pytest.raises(MemoError, match="unknown update method"):
        run_update(vault, method="average", generator=None)


# ------------------------------------------------------------------ slow: the real bundled model
FACTS = {
    "old": [("Who leads Cold Chain Engineering?", "Ottilie Brannstrand", "Who is the lead of Cold Chain Engineering?"),
            ("Which system does Cold Chain Engineering use?", "Frostwick", "Which system is used by Cold Chain Engineering?")],
    "keep": [("Where is the head office?", "Kestrel Yard", "Where is head office located?"),
             ("Which team owns Ledgerbay?", "Finance Ops", "Ledgerbay is owned by which team?")],
    "new": [("What is the daily travel allowance?", "Quillon Token", "What is the travel allowance per day?"),
            ("Who runs the travel desk?", "Marisol Okonkwo", "Who is in charge of the travel desk?")],
}
# one thread: the float sums, hence the few-probe retention and acquisition asserted below, do not depend on the load
# min_epochs = epochs: every epoch runs (a stop on 2–6 held-out probes of a 6-fact toy would end an update
# before it re-learned what it rehearses)
SMALL = TrainParams(epochs=10, min_epochs=10, batch_size=4, max_length=96, checkpoint_every=50, threads=1)


def _unit(doc: str, key: str, superseded: str | None = None) -> ReflectionUnit:
    pairs = []
    for i, (q, a, para) in enumerate(FACTS[key]):
        pairs.append(QAPair(id=f"{key}{i}", kind="fact", question=q, answer=f"{a}. The answer is {a}.", answer_span=a, doc_ids=[doc]))
        pairs.append(QAPair(id=f"{key}{i}p", kind="paraphrase", question=para, answer=f"{a}. The answer is {a}.", answer_span=a,
                            doc_ids=[doc]))
    if superseded:
        q, a, _ = FACTS[key][0]
        pairs.append(QAPair(id=f"{key}c", kind="current", question=q.replace("?", " now?"), answer=f"{a}. In force now.",
                            answer_span=a, doc_ids=[doc, superseded]))
    return ReflectionUnit(unit_id=f"u-{key}", unit_kind="chunk", doc_ids=[doc], chunk_oids=[], generator="test",
                          prompt_version="t", created_at=datetime.now(timezone.utc).isoformat(), pairs=pairs)


@pytest.fixture(scope="module")
def slow_vault(tmp_path_factory) -> tuple[Vault, dict[str, str]]:  # noqa: ANN001
    tmp = tmp_path_factory.mktemp("upd")
    vault = Vault.init(Settings(home=tmp / "home", kdf=FAST_KDF), Secret(passphrase=PASSPHRASE))
    ids = _docs(vault, tmp / "docs", {"old.md": "# Cold chain\n\nOttilie Brannstrand leads it.\n",
                                      "keep.md": "# Sites\n\nHead office: Kestrel Yard.\n"})
    docs = {"old": ids["old.md"], "keep": ids["keep.md"]}
    for key in ("old", "keep"):
        save_unit(vault, _unit(docs[key], key))
    return vault, docs


@pytest.mark.slow
def test_update_then_forget_with_the_real_model(slow_vault, tmp_path: Path) -> None:  # noqa: ANN001
    from appliance.memory.train import split_probes, train_memory
    from appliance.reflect.store import load_pairs

    vault, docs = slow_vault
    train, _ = split_probes(load_pairs(vault))
    v1 = train_memory(vault, train, SMALL, actor="trainer")
    set_status(vault, v1.id, "promoted")

    # a new document arrives (its reflections already written): task vector from v1, merged linearly
    ids = _docs(vault, tmp_path / "new", {"travel.md": "# Travel 2025\n\nAllowance: Quillon Token.\n"})
    docs["new"] = ids["travel.md"]
    save_unit(vault, _unit(docs["new"], "new", superseded=docs["old"]))
    result = run_update(vault, "linear", params=SMALL, generator=None)
    assert result.documents == [docs["new"]]
    cand = get_version(vault, result.candidate.id)
    assert cand.status == "candidate" and cand.method == "merge" and promoted(vault).id == v1.id
    assert cand.lineage["merge"]["old"] == [v1.id] and cand.lineage["merge"]["task_vector"] == result.task_vector.id
    r = cand.metrics["candidate_eval"]
    assert r["probes"] == {"old": 4, "new": 2, "superseded": 1}
    assert r["acquisition"] >= 0.5 and r["new_accuracy_reference"] == 0.0  # the update taught the new facts
    assert r["superseded"]["candidate"] == 1.0
    # 4 old probes: what a linear merge with 1:1 replay keeps of the old facts the reference knew varies
    # with the training text (1/3 to 1/2 and more); how much merges keep at scale is measured by
    # bench/continual.py, not here
    assert r["old_accuracy"]["reference"] >= 0.5 and r["retention"] is not None and r["retention"] > 0.3
    assert changed_documents(vault, cand.id) == []

    # forgetting "old": retrained without it; its facts go from answered to not answered
    from appliance.memory.update import forget_with_candidate

    res = forget_with_candidate(vault, docs["old"], SMALL)
    rep = res["report"]
    print("\nforget report:", {k: v for k, v in rep.items() if k != "probes"})
    for x in res["shown"]:
        print(f"  {'answered' if x['before'] else 'not answered'} -> {'ANSWERED' if x['after'] else 'not answered'}: {x['question']}")
    assert rep["forgotten_probes"] == 4 and rep["forgotten_answered_before"] >= 0.75
    assert rep["forgotten_answered_after"] == 0.0 and rep["still_answered"] == 0
    assert rep["retained_accuracy"]["candidate"] >= 0.5 and rep["retention"] is not None and rep["retention"] >= 0.5
    assert all("Ottilie" not in str(v) for v in rep.values())  # the report keeps hashes, not the forgotten text
    forgot = get_version(vault, res["candidate"])
    assert forgot.status == "candidate" and forgot.lineage["forgotten"] == [docs["old"]]
    assert not load_pairs(vault, {docs["old"]})
    # versions that learned the forgotten document can never serve again
    from appliance.export.pipeline import promote_version

    with pytest.raises(MemoError, match="forgotten document"):
        promote_version(vault, cand.id, "alice")
    actions = [e.action for e in vault.audit.entries()]
    assert {"memory.merge", "memory.candidate", "memory.evaluate", "docs.forget", "memory.forget.candidate"} <= set(actions)
