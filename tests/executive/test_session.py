"""Audited answering, locally and through an approved external (OpenAI-compatible) executive."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.errors import MemoError
from appliance.executive.agent import Executive, ExecutiveParams
from appliance.executive.session import EXECUTIVE_SENDS, ask, open_executive
from appliance.llm.connect import open_model
from appliance.llm.llamacpp import LlamaCppModel
from appliance.vault.store import Vault
from tests.llm.test_openai_compat import _approve, _policy_dir, llama_server  # noqa: F401 - fixture

SMALL = ExecutiveParams(max_sub_questions=2, max_hops=1, memory_max_tokens=32, answer_max_tokens=32)


def test_every_question_is_audited_with_its_trace(vault: Vault, bundled_model: LlamaCppModel) -> None:
    ex = Executive(bundled_model, bundled_model, "mem-test", SMALL)
    trace = ask(vault, ex, "What is the capital of France?", actor="dr.ines", channel="cli")
    [entry] = [e for e in vault.audit.entries() if e.action == "qa.ask"]
    assert entry.actor == "dr.ines" and entry.target == "mem-test"
    d = entry.details
    assert d["question"] == trace.question and d["answer"] == trace.answer and d["channel"] == "cli"
    assert [s["question"] for s in d["sub_questions"]] == [s.question for s in trace.sub_answers]
    assert d["executive"] == bundled_model.identity and d["memory"] == bundled_model.identity
    assert d["tokens"] == trace.tokens and d["timings"] == trace.timings and d["seconds"] == trace.seconds
    assert vault.audit.verify().ok


def test_a_failed_question_is_audited_too(vault: Vault, bundled_model: LlamaCppModel) -> None:
    ex = Executive(bundled_model, bundled_model, "mem-test", SMALL)
    with pytest.raises(MemoError):
        ask(vault, ex, "?" * 3000, actor="dr.ines", channel="api")
    [entry] = [e for e in vault.audit.entries() if e.action == "qa.failed"]
    assert entry.details["channel"] == "api" and "characters long" in entry.details["error"]


def test_without_a_promoted_memory_ask_says_what_to_do(vault: Vault) -> None:
    with pytest.raises(MemoError, match="no memory is promoted"):
        open_executive(vault)


def test_an_executive_that_may_not_receive_memory_answers_is_refused(
    tmp_path: Path, vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    narrow = _approve("http://127.0.0.1:9/v1", "m").replace("questions, sub_questions, memory_answers", "questions")
    monkeypatch.setenv("MEMO_POLICIES", str(_policy_dir(tmp_path, narrow)))
    with pytest.raises(MemoError, match="memory_answers"):
        open_model(vault, "approved", "executive", sends=EXECUTIVE_SENDS)


@pytest.mark.slow
def test_external_executive_answers_through_a_local_openai_server(
    tmp_path: Path, vault: Vault, bundled_model: LlamaCppModel, llama_server: str, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    """Acceptance: an approved 'external' executive (a real OpenAI-compatible server) answers;
    the audit log shows each external call (no text) and the question with its trace."""
    monkeypatch.setenv("MEMO_POLICIES", str(_policy_dir(tmp_path, _approve(llama_server, "smollm2", "json_object"))))
    external = open_model(vault, "approved", "executive", sends=EXECUTIVE_SENDS)
    ex = Executive(external, bundled_model, "mem-test", SMALL)  # swapping the executive: no retraining
    trace = ask(vault, ex, "What is the capital of France?", actor="dr.ines")
    assert trace.executive.startswith("openai:approved:smollm2@") and trace.answer.strip()
    assert "Paris" in trace.sub_answers[0].answer  # the memory (local) answered the original question

    entries = list(vault.audit.entries())
    calls = [e for e in entries if e.action == "llm.external.chat"]
    qa = [e for e in entries if e.action == "qa.ask"]
    assert len(qa) == 1 and qa[0].details["executive"] == trace.executive
    # decomposition + (maybe) follow-up + synthesis went out; the memory's work did not
    assert len(calls) >= 2 and all(c.details["status"] == "ok" for c in calls)
    assert sum(c.details["prompt_tokens"] for c in calls) == trace.tokens["executive_prompt"]
    assert "France" not in json.dumps([c.to_dict() for c in calls])  # external-call entries carry no text
    assert qa[0].seq > calls[-1].seq and vault.audit.verify().ok
