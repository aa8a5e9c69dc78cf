"""The daemon end to end, in subprocesses, on a tiny random base model (trainings take seconds):

1. a document dropped in the inbox ends as a merged candidate in the approval queue, every step
   audited, and no two trainings overlap;
2. SIGKILL at a random step of a training, restart: the run is detected as interrupted, re-run,
   resumes from its checkpoint and finishes (5 trials).
"""

from __future__ import annotations

import random
import signal
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from appliance.config import Settings, TrainParams
from appliance.reflect.store import QAPair, ReflectionUnit, save_unit
from appliance.scheduler.runs import RunStore
from appliance.vault.keys import Secret
from appliance.vault.store import Vault
from tests.conftest import FAST_KDF, PASSPHRASE
from tests.scheduler.conftest import add_tiny_model, start_daemon, stop, wait_for, write_policies

TINY_TRAINING = "{epochs: 4, batch_size: 4, max_length: 128, rank: 4, checkpoint_every: 4}"


def _unit(doc: str, facts: list[tuple[str, str]], tag: str, probes: bool = True) -> ReflectionUnit:
    """``probes``: a held-out paraphrase per fact (training then stops when they stop improving)."""
    pairs = []
    for i, (q, a) in enumerate(facts):
        pairs.append(QAPair(id=f"{tag}{i}", kind="fact", question=q, answer=f"{a}. The answer is {a}.", answer_span=a, doc_ids=[doc]))
        if probes:
            pairs.append(QAPair(id=f"{tag}{i}p", kind="paraphrase", question="Tell me: " + q, answer=f"{a}.", answer_span=a,
                                doc_ids=[doc]))
    return ReflectionUnit(unit_id=f"u-{tag}", unit_kind="chunk", doc_ids=[doc], chunk_oids=[], generator="test",
                          prompt_version="t", created_at=datetime.now(timezone.utc).isoformat(), pairs=pairs)


def _vault(home: Path, tiny_gguf: Path) -> Vault:
    vault = Vault.init(Settings(home=home, kdf=FAST_KDF), Secret(passphrase=PASSPHRASE), actor="root")
    add_tiny_model(home, tiny_gguf)
    return vault


def _overlaps(runs: list[dict]) -> list[tuple[int, int]]:
    spans = sorted((r["started_at"], r["finished_at"] or "9999", r["id"]) for r in runs)
    return [(a[2], b[2]) for a, b in zip(spans, spans[1:]) if b[0] < a[1]]


@pytest.mark.slow
def test_inbox_document_becomes_a_candidate_in_the_approval_queue(tmp_path: Path, tiny_gguf: Path) -> None:
    from appliance.approvals.records import pending
    from appliance.memory.train import split_probes, train_memory
    from appliance.memory.versions import set_status
    from appliance.reflect.store import load_pairs

    home, inbox = tmp_path / "home", tmp_path / "inbox"
    vault = _vault(home, tiny_gguf)
    old = "doc-00000000old1"
    save_unit(vault, _unit(old, [("Who leads Cold Chain?", "Ottilie Brannstrand"), ("Where is head office?", "Kestrel Yard")], "old"))
    serving = train_memory(vault, split_probes(load_pairs(vault))[0], TrainParams(epochs=1, batch_size=4, max_length=128, rank=4),
                           base_model="tiny", actor="root")
    set_status(vault, serving.id, "promoted")
    jobs = ("    - {name: ingest, task: ingest, every: 1s}\n    - {name: reflect, task: reflect, every: 2s}\n"
            "    - {name: update, task: update, every: 2s}\n    - {name: retrain, task: retrain, every: 3s}\n"
            "    - {name: retention, task: retention, every: 3s}\n")
    policies = write_policies(tmp_path / "policies", inbox, jobs, TINY_TRAINING)
    log = tmp_path / "daemon.log"
    proc = start_daemon(home, policies, log)
    try:
        wait_for(lambda: "scheduled (ingest" in log.read_text(), 120, "the daemon to start", proc, log)
        inbox.mkdir(exist_ok=True)
        (inbox / "travel.md").write_text("# Travel policy 2025\n\nThe daily travel allowance is 52 EUR. "
                                         "Marisol Okonkwo runs the travel desk in Kestrel Yard.\n")

        def candidate():  # noqa: ANN202
            for v in pending(vault):
                if v.lineage.get("update_of") == serving.id and v.method == "merge" and "candidate_eval" in v.metrics:
                    return v
            return None

        cand = wait_for(candidate, 540, "an update candidate", proc, log, every=1.0)
        # let a retrain that may have been waiting for the lock finish too, then stop cleanly
        time.sleep(4)
        wait_for(lambda: not [r for r in RunStore(home).running() if r["task"] in ("update", "retrain")], 240,
                 "trainings to finish", proc, log, every=1.0)
    finally:
        stop(proc)
    assert not list(inbox.glob("*.md"))  # ingested and deleted: no plaintext copy left behind
    doc = cand.lineage["update_documents"]
    assert len(doc) == 1 and doc[0] != old
    entries = list(vault.audit.entries())
    acts = [e.action for e in entries]

    def first(action: str, target: str | None = None, after: int = -1) -> int:
        return next(i for i, e in enumerate(entries) if i > after and e.action == action and (target is None or e.target == target))

    i_ingest = first("job.start", "ingest")
    i_reflect = first("job.start", "reflect", first("ingest.finish", after=i_ingest))
    i_update = first("job.start", "update", first("reflect.finish", after=i_reflect))
    i_train = first("memory.train.start", after=i_update)
    i_merge = first("memory.merge", cand.id, first("memory.train.finish", after=i_train))
    i_cand = first("memory.candidate", cand.id, i_merge)
    i_eval = first("memory.evaluate", cand.id, i_cand)
    assert first("job.finish", "update", i_eval) > i_eval
    assert acts.count("job.failed") == 0, [e.details for e in entries if e.action == "job.failed"]
    assert entries[i_update].actor == "memo-daemon" and entries[i_update].details["documents"] == doc
    # every audited start has its finish; trainings never overlap (audit and run table agree)
    starts = [e.details["run"] for e in entries if e.action == "job.start"]
    ends = {e.details["run"] for e in entries if e.action in ("job.finish", "job.failed")}
    assert set(starts) <= ends
    depth = 0
    for a in acts:
        depth += {"memory.train.start": 1, "memory.train.finish": -1}.get(a, 0)
        assert depth in (0, 1), "two trainings overlapped"
    training = [r for r in RunStore(home).history(limit=1000) if r["task"] in ("update", "retrain", "retention")
                and r["status"] != "missed"]
    assert len(training) >= 3 and _overlaps(training) == []
    assert vault.audit.verify().ok


KILL_TRIALS = 5
# long enough that an idle machine is still training when the kill comes (kills fall in steps 2..26)
KILL_EPOCHS = 60


def _kill_trial(tmp_path: Path, tiny_gguf: Path, trial: int, kill_at: int) -> bool:
    """One trial: SIGKILL the daemon once training has passed ``kill_at`` steps, restart, check the
    job finished from where it was. Returns whether it resumed from a checkpoint."""
    from appliance.approvals.records import pending

    home, inbox = tmp_path / f"home{trial}", tmp_path / f"inbox{trial}"
    vault = _vault(home, tiny_gguf)
    facts = [(f"What is the code of item {i} in batch {trial}?", f"K{trial}{i:02d}") for i in range(12)]
    # no held-out probes: the tiny model would plateau at once and stop early; every epoch must run
    save_unit(vault, _unit("doc-0000000batch", facts, f"t{trial}", probes=False))
    policies = write_policies(tmp_path / f"pol{trial}", inbox, "    - {name: retrain, task: retrain, every: 1s}\n",
                              "{epochs: %d, batch_size: 2, max_length: 128, rank: 4, checkpoint_every: 3, base_model: tiny}" % KILL_EPOCHS)
    total = KILL_EPOCHS * 6
    log = tmp_path / f"daemon{trial}.log"
    proc = start_daemon(home, policies, log)
    runs = RunStore(home)

    def step() -> int:
        for r in runs.running():
            if r["job"] == "retrain" and r["progress"] and r["progress"].startswith("step "):
                return int(r["progress"].split()[1].split("/")[0])
        return 0

    try:
        wait_for(lambda: step() >= kill_at, 300, f"step {kill_at} (trial {trial})", proc, log, every=0.1)
        proc.send_signal(signal.SIGKILL)
        seen = step()  # progress is written about once a second: the daemon may have been a little further
        proc.wait()
    finally:
        stop(proc, signal.SIGKILL)
    killed = [r for r in runs.history("retrain") if r["status"] == "running"]
    assert len(killed) == 1 and not pending(vault)  # died mid-training, nothing produced
    proc = start_daemon(home, policies, log)
    try:
        cand = wait_for(lambda: [v for v in pending(vault) if v.status == "candidate"], 300,
                        f"the resumed training (trial {trial})", proc, log, every=0.5)
        # the candidate is recorded a moment before its run is closed: a stop in between would
        # (rightly) leave the run to be re-run at the next start, which is not what this checks
        wait_for(lambda: not [r for r in runs.running() if r["job"] == "retrain"], 60,
                 f"the resumed run to close (trial {trial})", proc, log, every=0.2)
    finally:
        stop(proc)
    assert len(cand) == 1 and cand[0].metrics["steps"] == total and cand[0].metrics["train_loss_last"] > 0
    hist = {r["id"]: r for r in runs.history("retrain", 100)}
    assert hist[killed[0]["id"]]["status"] == "interrupted"
    again = [r for r in hist.values() if r["resumes"] == killed[0]["id"]]
    assert len(again) == 1 and again[0]["status"] == "succeeded" and again[0]["summary"]["candidate"] == cand[0].id
    acts = [(e.action, e.target) for e in vault.audit.entries()]
    assert ("job.interrupted", "retrain") in acts
    assert sum(a == "memory.train.finish" for a, _ in acts) == 1  # trained once, not twice
    assert vault.audit.verify().ok
    resume = next((e for e in vault.audit.entries() if e.action == "memory.train.resume"), None)
    if resume is None:
        assert seen <= 3  # only a kill before the first checkpoint starts over
        return False
    # step == total: killed after the last checkpoint but before the version was recorded; the
    # restart then records it without training again (trained once is checked above)
    assert 3 <= resume.details["step"] <= total and resume.details["step"] % 3 == 0
    assert resume.details["step"] >= seen - 3  # from the last checkpoint before the kill
    return True


@pytest.mark.slow
def test_killed_training_resumes_after_restart(tmp_path: Path, tiny_gguf: Path) -> None:
    """5 trials, two at a time (each daemon start spends most of its time loading the model)."""
    from concurrent.futures import ThreadPoolExecutor

    rng = random.Random(7)
    points = [rng.randint(2, 30 - 4) for _ in range(KILL_TRIALS)]
    with ThreadPoolExecutor(2) as pool:
        resumed = list(pool.map(lambda t: _kill_trial(tmp_path, tiny_gguf, t, points[t]), range(KILL_TRIALS)))
    assert len(resumed) == KILL_TRIALS and sum(resumed) >= KILL_TRIALS - 2, (points, resumed)
