"""Reflections with the real bundled generator on part of the sample corpus."""

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance.config import Settings
from appliance.corpus.documents import forget_document, list_documents
from appliance.corpus.ingest import ingest
from appliance.llm.connect import open_model
from appliance.reflect.generate import plan_units, reflect, stats
from appliance.reflect.store import load_pairs, load_units, unit_ids_on_disk
from appliance.reflect.validate import answer_supported, dedup_key
from appliance.vault.keys import Secret
from appliance.vault.store import Vault
from tests.conftest import FAST_KDF, PASSPHRASE, SAMPLE_CORPUS

DOCS = [SAMPLE_CORPUS / "hr" / "travel-policy-2024.md", SAMPLE_CORPUS / "hr" / "travel-policy-2025.md",
        SAMPLE_CORPUS / "hr" / "org-chart.md", SAMPLE_CORPUS / "it" / "systems-inventory.html"]


@pytest.fixture(scope="module")
def reflected(tmp_path_factory) -> Vault:  # noqa: ANN001
    home = tmp_path_factory.mktemp("refl") / "home"
    vault = Vault.init(Settings(home=home, kdf=FAST_KDF), Secret(passphrase=PASSPHRASE))
    ingest(vault, DOCS)
    model = open_model(vault, "local", "generator")
    report = reflect(vault, model)
    assert report.generated == report.planned > 0
    return vault


@pytest.mark.slow
def test_pairs_cover_every_document_and_are_supported(reflected: Vault) -> None:
    pairs = load_pairs(reflected)
    docs = {d.id: d for d in list_documents(reflected)}
    per_doc = {d: [p for p in pairs if d in p.doc_ids] for d in docs}
    assert all(len(v) >= 5 for v in per_doc.values()), {docs[d].title: len(v) for d, v in per_doc.items()}
    kinds = {p.kind for p in pairs}
    assert {"fact", "reverse", "current", "composed", "unknown"} <= kinds
    for p in pairs:
        assert p.question.endswith("?") and p.doc_ids and set(p.doc_ids) <= set(docs)
        assert p.kind == "unknown" or answer_supported(p.answer_span, p.source)  # the value is in its source
        assert p.fact_id and p.split in ("train", "probe")
    assert len({dedup_key(p.question, ordered=True) for p in pairs}) == len(pairs)  # a fronted wording reorders its cloze
    # several training wordings per fact; probes held out, never a trained question
    train = [p for p in pairs if p.split == "train"]
    per_fact: dict[str, int] = {}
    for p in train:
        per_fact[p.fact_id] = per_fact.get(p.fact_id, 0) + 1
    assert sum(per_fact.values()) / len(per_fact) >= 3
    probes = [p for p in pairs if p.split == "probe"]
    assert probes and not {dedup_key(p.question) for p in probes} & {dedup_key(p.question) for p in train}
    # the value in force: the 2025 policy's changed values say what they replaced; the 2024 policy is
    # only ever asked about as itself
    new_id = next(d for d, doc in docs.items() if doc.title.endswith("2025"))
    old_id = next(d for d, doc in docs.items() if "2024" in doc.title)
    per_diem = [p for p in pairs if p.kind == "current" and "52 EUR" in p.answer]
    assert per_diem and all(p.doc_ids[0] == new_id and "replaced 45 EUR" in p.answer for p in per_diem)
    assert any(p.question.endswith("now?") for p in per_diem)
    assert all("2024" in p.question for p in pairs if p.doc_ids == [old_id])
    # composed: the lead of the team that owns a system, without naming the team
    composed = [p for p in pairs if p.kind == "composed" and p.answer_span == "Marek Tollefsrud"]
    assert composed and all("Routewise" in p.question and "Fleet Dispatch" not in p.question for p in composed)
    st = stats(reflected)
    assert st.pairs >= len(pairs) and 0 < st.rejection_rate < 1 and st.completion_tokens > 0
    assert st.facts > 0 and st.coverage >= 0.9


@pytest.mark.slow
def test_rerun_generates_nothing_and_forget_drops_reflections(reflected: Vault) -> None:
    model = open_model(reflected, "local", "generator")
    again = reflect(reflected, model)
    assert again.generated == 0 and again.pairs == 0
    victim = next(d for d in list_documents(reflected) if d.title.startswith("Org chart"))
    forget_document(reflected, victim.id)
    assert all(victim.id not in u.doc_ids for u in load_units(reflected))
    assert all(victim.id not in p.doc_ids for p in load_pairs(reflected))


@pytest.mark.slow
def test_sigkill_during_reflect_then_rerun_completes_without_duplicates(tmp_path: Path, cli_env: dict[str, str]) -> None:
    settings = Settings(home=Path(cli_env["MEMO_HOME"]), kdf=FAST_KDF)
    vault = Vault.init(settings, Secret(passphrase=PASSPHRASE), cli_env["MEMO_USER"])
    ingest(vault, DOCS[2:])
    planned = {u.unit_id for u in plan_units(vault, open_model(vault).identity, settings.reflect)}
    rng = random.Random(3)
    for trial in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "appliance.cli", "reflect"], env=cli_env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(6, 14))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        vault = Vault.open(settings, Secret(passphrase=PASSPHRASE))
        assert vault.verify().ok
        assert unit_ids_on_disk(vault) <= planned
    r = subprocess.run([sys.executable, "-m", "appliance.cli", "reflect", "--json"], env=cli_env, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr
    vault = Vault.open(settings, Secret(passphrase=PASSPHRASE))
    assert unit_ids_on_disk(vault) == planned
    units = load_units(vault)
    ids = [p.id for u in units for p in u.pairs]
    assert len(ids) == len(set(ids))  # no pair stored twice
    assert vault.verify().ok
