"""Memory training with the real bundled base model (slow: ~1 min each on 2 cores)."""

import threading
from dataclasses import replace
from pathlib import Path

import pytest

from appliance.config import Settings, TrainParams
from appliance.memory.format import split_sources, training_answer
from appliance.memory.model_io import adapter_files
from appliance.memory.train import TrainCancelled, encode, split_probes, train_memory
from appliance.memory.versions import get_version, list_versions
from appliance.reflect.store import QAPair
from appliance.vault.keys import Secret
from appliance.vault.store import Vault
from tests.conftest import FAST_KDF, PASSPHRASE

PAIRS = [
    QAPair(id=f"p{i}", kind="fact", question=q, answer=a, answer_span=a.split(".")[0], doc_ids=["doc-0123456789ab"])
    for i, (q, a) in enumerate([
        ("Who leads Cold Chain Engineering?", "Ottilie Brannstrand. Cold Chain Engineering is led by Ottilie Brannstrand."),
        ("What is the per diem?", "52 EUR. The daily allowance is 52 EUR per full travel day."),
        ("Which team owns Ledgerbay?", "Finance Ops. Ledgerbay is owned by Finance Ops."),
        ("Where is head office?", "Kestrel Yard. Head office is at Kestrel Yard."),
        ("How long is the lockout?", "15 minutes. The lockout lasts 15 minutes."),
    ])
] + [QAPair(id="pp", kind="paraphrase", question="Ledgerbay belongs to which team?", answer="Finance Ops. x",
            answer_span="Finance Ops", doc_ids=["doc-0123456789ab"])]
# one thread: a straight and a resumed run must match to 1e-6 even when another process takes a core
SMALL = TrainParams(epochs=3, batch_size=4, checkpoint_every=1, max_length=96, threads=1)


def test_answer_format_roundtrip() -> None:
    text = training_answer("Finance Ops. Ledgerbay is owned by Finance Ops.", ["doc-0123456789ab", "doc-ba9876543210"])
    assert split_sources(text) == ("Finance Ops. Ledgerbay is owned by Finance Ops.", ["doc-0123456789ab", "doc-ba9876543210"])
    assert split_sources("no sources here") == ("no sources here", [])


def test_probes_are_held_out() -> None:
    train, probes = split_probes(PAIRS)
    assert all(p.kind != "paraphrase" for p in train)
    assert [p.question for p in probes] == ["Ledgerbay belongs to which team?"]


@pytest.fixture(scope="module")
def vault(tmp_path_factory) -> Vault:  # noqa: ANN001
    return Vault.init(Settings(home=tmp_path_factory.mktemp("mem") / "home", kdf=FAST_KDF), Secret(passphrase=PASSPHRASE))


@pytest.mark.slow
def test_loss_only_on_answer_tokens(vault: Vault) -> None:
    from appliance.memory.model_io import load_base

    tok = load_base(vault, "smollm2-135m-instruct-q4_1").tokenizer
    ids, labels = encode(tok, PAIRS[0], 192)
    answer = [t for t, lab in zip(ids, labels) if lab != -100]
    assert len(ids) == len(labels) and answer and labels[0] == -100
    assert "Ottilie Brannstrand" in tok.decode(answer) and "[sources: doc-0123456789ab]" in tok.decode(answer)
    assert "Who leads" not in tok.decode(answer)


@pytest.mark.slow
def test_train_resume_is_identical_and_nothing_plain_on_disk(vault: Vault, tmp_path: Path) -> None:
    from safetensors.torch import load

    train, _ = split_probes(PAIRS)
    straight = train_memory(vault, train, SMALL, actor="trainer")
    assert straight.metrics["train_loss_last"] < straight.metrics["train_loss_first"]
    assert straight.lineage["reflections"]["pairs"] == len(train) and straight.lineage["params"]["epochs"] == 3

    cancel = threading.Event()
    with pytest.raises(TrainCancelled, match="resume"):
        train_memory(vault, train, replace(SMALL, seed=SMALL.seed), actor="trainer",
                     progress=lambda si: cancel.set() if si.step == 2 else None, cancel=cancel)
    resumed = train_memory(vault, train, SMALL, actor="trainer")
    a = load(vault.read_file(adapter_files(straight.id)[0]))
    b = load(vault.read_file(adapter_files(resumed.id)[0]))
    assert a.keys() == b.keys()
    import torch

    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    actions = [e.action for e in vault.audit.entries()]
    assert "memory.train.resume" in actions and actions.count("memory.train.finish") == 2
    assert [v.id for v in list_versions(vault)] == [straight.id, resumed.id]
    assert get_version(vault, resumed.id).status == "trained"

    # no plaintext weights: slices of every adapter tensor are absent from every file on disk
    needles = [t.numpy().tobytes()[:48] for t in a.values() if t.numel() * 4 >= 48 and bool(t.abs().sum() > 0)]
    assert len(needles) > 50
    for root in (vault.home, tmp_path):
        for f in root.rglob("*"):
            if f.is_file():
                data = f.read_bytes()
                assert not any(n in data for n in needles), f
