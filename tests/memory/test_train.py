"""Memory training with the real bundled base model (slow: ~1 min each on 2 cores)."""

import threading
from dataclasses import replace
from pathlib import Path

import pytest

from appliance.config import Settings, TrainParams
from appliance.errors import MemoError
from appliance.memory.evaluate import SHARE_DIGITS
from appliance.memory.format import SourceTable, parse, prompt, target
from appliance.memory.model_io import adapter_files
from appliance.memory.train import (TrainCancelled, decay_factor, decay_tolerance, encode, exposures, first_eval_epoch, length_batches, lr_factor, source_table,
                                    split_probes, train_memory)
from appliance.memory.versions import get_version, list_versions
from appliance.reflect.store import QAPair, content_order
from appliance.vault.keys import Secret
from appliance.vault.store import Vault
from tests.conftest import FAST_KDF, PASSPHRASE

PAIRS = [
    QAPair(id=f"p{i}", kind="fact", question=q, answer=a, answer_span=a, doc_ids=[doc], fact_id=f"f{i}")
    for i, (q, a, doc) in enumerate([
        ("Who leads Cold Chain Engineering?", "Ottilie Brannstrand", "doc-0123456789ab"),
        ("What is the per diem?", "52 EUR", "doc-0123456789ab"),
        ("Which team owns Ledgerbay?", "Finance Ops", "doc-ba9876543210"),
        ("Where is head office?", "Kestrel Yard", "doc-0123456789ab"),
        ("How long is the lockout?", "15 minutes", "doc-ba9876543210"),
    ])
] + [QAPair(id="pp", kind="fact", question="Ledgerbay belongs to which team?", answer="Finance Ops", split="probe",
            answer_span="Finance Ops", doc_ids=["doc-ba9876543210"], fact_id="f2"),
     QAPair(id="old", kind="paraphrase", question="Which team is Ledgerbay's owner?", answer="Finance Ops. x",
            answer_span="Finance Ops", doc_ids=["doc-ba9876543210"])]
# one thread: a straight and a resumed run must match to 1e-6 even when another process takes a core
SMALL = TrainParams(epochs=3, batch_size=4, checkpoint_every=1, max_length=96, threads=1, rank=8, alpha=16)


def test_answer_layout_roundtrip_and_source_table() -> None:
    table = SourceTable.extend(["doc-0123456789ab"], ["doc-ba9876543210", "doc-0123456789ab"])
    assert table.doc_ids == ["doc-0123456789ab", "doc-ba9876543210"]
    text = target("Finance Ops", table.refs(["doc-ba9876543210"]))
    assert text == "Finance Ops [2]"
    answer, refs = parse(text + "<|im_end|>")
    assert (answer, table.resolve(refs)) == ("Finance Ops", ["doc-ba9876543210"])
    assert parse("no sources here") == ("no sources here", [])
    assert table.resolve([9]) == []  # an index the table does not have cites nothing
    assert prompt("  Who leads   Fleet Dispatch? ") == "<|im_start|>user\nWho leads Fleet Dispatch?<|im_end|>\n<|im_start|>assistant\n"


def test_probes_are_held_out_and_exposures_counted_per_fact() -> None:
    train, probes = split_probes(PAIRS)
    assert all(p.split == "train" and p.kind != "paraphrase" for p in train)
    assert [p.question for p in probes] == ["Ledgerbay belongs to which team?", "Which team is Ledgerbay's owner?"]
    facts, exp = exposures(train + train[:1], epochs=3)
    assert facts == 5 and exp == {"mean": 3.6, "median": 3.0, "min": 3.0, "max": 6.0}


def test_probes_are_first_asked_once_facts_had_their_minimum_exposures() -> None:
    train, _ = split_probes(PAIRS)  # 5 facts, one wording each
    assert first_eval_epoch(train, TrainParams(min_epochs=3, min_exposures=0, epochs=12)) == 3
    assert first_eval_epoch(train, TrainParams(min_epochs=3, min_exposures=5, epochs=12)) == 5
    two_each = train + [p.model_copy(update={"id": p.id + "b"}) for p in train]  # two wordings a fact: half the epochs
    assert first_eval_epoch(two_each, TrainParams(min_epochs=1, min_exposures=5, epochs=12)) == 3
    assert first_eval_epoch(two_each, TrainParams(min_epochs=1, min_exposures=6, epochs=12)) == 3  # exactly 6
    assert first_eval_epoch(train, TrainParams(min_epochs=3, min_exposures=40, epochs=12)) == 12  # never past the ceiling


def test_learning_rate_warms_up_then_stays_or_decays_to_its_floor() -> None:
    assert [lr_factor(s, 4, 100, "constant", 0.1) for s in (0, 3, 50, 99)] == [0.25, 1.0, 1.0, 1.0]
    linear = [lr_factor(s, 4, 100, "linear", 0.1) for s in range(100)]
    assert linear[:4] == [0.25, 0.5, 0.75, 1.0] and all(a >= b for a, b in zip(linear[3:], linear[4:]))
    assert linear[-1] == pytest.approx(0.1, abs=0.01) and lr_factor(500, 4, 100, "linear", 0.1) == 0.1  # floor past the ceiling
    with pytest.raises(MemoError, match="cosine"):
        lr_factor(0, 4, 100, "cosine", 0.1)  # refused at once, not after the warm-up


def test_anneal_rate_falls_linearly_to_zero_from_where_it_starts() -> None:
    assert [decay_factor(s, 10, 14) for s in range(10, 15)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert decay_factor(10, 10, 10) == 0.0  # an empty phase never divides by zero


def test_length_batches_cover_every_example_once_with_little_padding() -> None:
    lengths = [5, 30, 6, 29, 7, 31, 8, 28] * 8
    batches = length_batches(lengths, batch=4, epoch=0, seed=1)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    waste = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)
    assert waste < 0.05 * sum(lengths)  # in random batches of this mix, most rows would be half padding
    assert batches != length_batches(lengths, batch=4, epoch=1, seed=1)  # reshuffled every epoch


def test_order_and_source_table_do_not_depend_on_the_vaults_key() -> None:
    """Another vault of the same corpus has other document ids (MACs under its key), hence other pair
    ids: it must still train in the same order and number its sources the same."""
    other_doc = {"doc-0123456789ab": "doc-ffffffffffff", "doc-ba9876543210": "doc-000000000000"}
    other = [p.model_copy(update={"id": f"x{i}", "doc_ids": [other_doc[d] for d in p.doc_ids]}) for i, p in enumerate(PAIRS)]
    assert [p.question for p in content_order(PAIRS)] == [p.question for p in content_order(other[::-1])]
    assert [p.question for p in content_order(PAIRS)] != [p.question for p in PAIRS]  # shuffled, not the input order
    mine, theirs = source_table(PAIRS), source_table(other[::-1])
    assert [other_doc[d] for d in mine.doc_ids] == theirs.doc_ids


@pytest.fixture(scope="module")
def vault(tmp_path_factory) -> Vault:  # noqa: ANN001
    return Vault.init(Settings(home=tmp_path_factory.mktemp("mem") / "home", kdf=FAST_KDF), Secret(passphrase=PASSPHRASE))


@pytest.mark.slow
def test_loss_only_on_answer_tokens(vault: Vault) -> None:
    from appliance.memory.model_io import load_base

    tok = load_base(vault, "smollm2-135m-instruct-q4_1").tokenizer
    table = source_table(PAIRS)
    ids, labels = encode(tok, PAIRS[0], 192, table)
    answer = [t for t, lab in zip(ids, labels) if lab != -100]
    assert len(ids) == len(labels) and answer and labels[0] == -100
    # the reference is the document's place in the version's source table (in the pairs' content order)
    [ref] = table.refs(PAIRS[0].doc_ids)
    assert tok.decode(answer) == f"Ottilie Brannstrand [{ref}]<|im_end|>"
    prompt_part = tok.decode([t for t, lab in zip(ids, labels) if lab == -100])
    assert prompt_part == prompt("Who leads Cold Chain Engineering?")  # no system prompt, not even the template's default
    assert len(ids) < 30  # the whole example: lean


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


@pytest.mark.slow
def test_stop_rule_then_decay_from_the_best_epoch_and_resume_inside_the_decay(vault: Vault) -> None:
    import torch
    from safetensors.torch import load

    train, probes = split_probes(PAIRS)
    params = replace(SMALL, epochs=2, min_epochs=1, min_exposures=0, target_recall=1.01, anneal_epochs=1.0, patience=2)  # 2 steps an epoch
    rates: list[float] = []
    evals: list = []
    straight = train_memory(vault, train, params, actor="trainer", probes=probes, on_eval=evals.append,
                            progress=lambda si: rates.append(si.learning_rate))
    m = straight.metrics
    # two epochs at the constant rate, the ceiling ends them, then one epoch decaying from the best one's weights
    assert m["steps"] == 6 and m["stopped"] == "max epochs" and rates == pytest.approx([1e-3] * 5 + [5e-4])
    assert [(e.epoch, e.annealed) for e in evals] == [(1, False), (2, False), (3, True)]
    best = max(evals[:2], key=lambda e: e.held_out)  # the first of equals
    assert m["anneal"] == {"from_epoch": best.epoch, "steps": 2}
    kept = evals[2].held_out >= best.held_out - decay_tolerance(params, len(probes))
    assert m["annealed"] is kept and m["held_out_recall"] == (evals[2] if kept else best).held_out
    assert m["exposures"]["min"] == (best.epoch + 1 if kept else best.epoch)

    cancel = threading.Event()  # cancelled inside the decay: the re-run goes on decaying, to the same weights
    with pytest.raises(TrainCancelled, match="5/6"):
        train_memory(vault, train, params, actor="trainer", probes=probes,
                     progress=lambda si: cancel.set() if si.step == 5 else None, cancel=cancel)
    resumed = train_memory(vault, train, params, actor="trainer", probes=probes)
    assert resumed.metrics["anneal"] == m["anneal"] and resumed.metrics["annealed"] is m["annealed"]
    a = load(vault.read_file(adapter_files(straight.id)[0]))
    b = load(vault.read_file(adapter_files(resumed.id)[0]))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_stop_summary_says_what_came_of_the_decay() -> None:
    from appliance.memory.train import stop_summary

    assert stop_summary({"stopped": "plateau"}) == "plateau"  # no decay phase (a linear schedule, the target reached)
    assert stop_summary({"stopped": "plateau", "anneal": {"from_epoch": 5, "steps": 121}, "annealed": True}) == "plateau, then annealed"
    assert stop_summary({"stopped": "max epochs", "anneal": {"from_epoch": 5, "steps": 121}, "annealed": False}) == \
        "max epochs; the decay not kept (probes recalled less)"


def test_decay_tolerance_is_one_probe_where_that_is_more_than_min_gain() -> None:
    params = TrainParams(min_gain=0.01)
    assert decay_tolerance(params, 33) == pytest.approx(1 / 33, abs=2e-4)  # the demo's probes: one is 3 points
    assert decay_tolerance(params, 160) == pytest.approx(0.01, abs=2e-4)  # on 160 probes min_gain is more than one
    assert decay_tolerance(params, 0) == pytest.approx(0.01, abs=2e-4)
    for n in range(1, 200):  # exactly one probe less is kept, recalls rounded as evaluate() reports them
        for right in range(1, n + 1):
            best, one_less = round(right / n, SHARE_DIGITS), round((right - 1) / n, SHARE_DIGITS)
            assert one_less >= best - decay_tolerance(params, n)
            if right >= 2 and n <= 100:  # where one probe is at least min_gain, two less are not kept
                assert round((right - 2) / n, SHARE_DIGITS) < best - decay_tolerance(params, n)


def test_a_flat_epoch_is_a_plateau_only_once_the_training_questions_are_recalled() -> None:
    from appliance.memory.train import EpochEval, stop_reason

    params = TrainParams(patience=1, min_gain=0.01, memorised_recall=0.9, target_recall=0.97)
    learning = [EpochEval(3, 0.48, 0.77, 1.0), EpochEval(4, 0.4733, 0.875, 1.0)]  # the 9237df9 run's stop
    assert stop_reason(learning, params) == ""  # still learning its training set: go on
    learned = learning + [EpochEval(5, 0.47, 0.92, 1.0)]
    assert stop_reason(learned, params) == "plateau"
    assert stop_reason(learned[:2] + [EpochEval(5, 0.55, 0.92, 1.0)], params) == ""  # a gain: go on
    assert stop_reason([EpochEval(3, 0.98, 0.5, 1.0)], params) == "target"
    assert stop_reason([EpochEval(3, 0.5, None, 1.0), EpochEval(4, 0.5, None, 1.0)], params) == "plateau"  # no training sample
    assert stop_reason([], params) == ""


def test_a_fall_in_training_recall_after_it_was_learned_does_not_postpone_the_plateau() -> None:
    from appliance.memory.train import EpochEval, stop_reason

    params = TrainParams(patience=1, min_gain=0.01, memorised_recall=0.9, target_recall=0.97)
    # the 416e891 dev bench: learned at epoch 7 (96 %), then the constant rate shook it (83 %)
    run = [EpochEval(6, 0.55, 0.88, 1.0), EpochEval(7, 0.62, 0.96, 1.0), EpochEval(8, 0.57, 0.83, 1.0)]
    assert stop_reason(run[:2], params) == ""  # a gain: go on
    assert stop_reason(run, params) == "plateau"  # not three more epochs waiting for 90 % again
    never = [EpochEval(6, 0.55, 0.80, 1.0), EpochEval(7, 0.50, 0.85, 1.0)]
    assert stop_reason(never, params) == ""  # never learned: still learning
