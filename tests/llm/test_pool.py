"""The generator pool: policy names its members; a batch is spread over them, a failed request is
retried on another member, a failing member rests; with two real llama.cpp servers, one killed in
the middle of `memo reflect`, every unit is stored exactly once and every call is audited."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from appliance.corpus.ingest import ingest
from appliance.errors import MemoError
from appliance.llm.base import ChatModel
from appliance.llm.connect import open_model
from appliance.llm.pool import Backoff, GeneratorPool
from appliance.policy import load_policy, problems
from appliance.policy.audit import pin_policy
from appliance.reflect.generate import plan_units, reflect
from appliance.reflect.store import unit_ids_on_disk
from appliance.vault.store import Vault
from tests.conftest import SAMPLE_CORPUS
from tests.llm.servers import LlamaServer, pool_policy, start_all

ASK = [{"role": "user", "content": "Write one question."}]


# ------------------------------------------------------------------------------------ policy
def test_policy_checks_every_member_of_a_pool(tmp_path: Path) -> None:
    d = pool_policy(tmp_path / "p", [("a", "http://127.0.0.1:9/v1"), ("b", "http://127.0.0.1:10/v1")])
    assert problems(load_policy(d)) == []
    text = (d / "executives.yaml").read_text()
    bad = text.replace("endpoints: [a, b]", "endpoints: [a, b, local, ghost]").replace(
        "  - {name: b, kind: openai, url: 'http://127.0.0.1:10/v1', model: smollm2,",
        "  - {name: b, kind: openai, url: 'http://127.0.0.1:10/v1', model: other-model,")
    (d / "executives.yaml").write_text(bad)
    found = problems(load_policy(d))
    assert any("endpoint 'local' is local" in p for p in found)
    assert any("no endpoint named 'ghost'" in p for p in found)
    assert any("members serve different models" in p for p in found)
    assert all(str(d / "executives.yaml") in p and "\n" not in p for p in found)
    (d / "executives.yaml").write_text(text.replace("endpoints: [a, b]", "endpoints: [a, a]"))
    with pytest.raises(MemoError, match=r"executives\.yaml:\d+: pools\.0\.endpoints: an endpoint is listed twice"):
        load_policy(d)


def test_a_pool_is_opened_as_a_generator_only(vault: Vault, tmp_path: Path) -> None:
    pin_policy(vault, pool_policy(tmp_path / "p", [("a", "http://127.0.0.1:9/v1")]), actor="tester")
    pool = open_model(vault, "gen", "generator", sends={"document_text"})
    assert isinstance(pool, ChatModel) and pool.identity == "pool:gen:smollm2"
    pool.close()
    with pytest.raises(MemoError, match="is a generator pool, not an executive"):
        open_model(vault, "gen", "executive")


# ----------------------------------------------------------------- retries, with real HTTP servers
class _Handler(http.server.BaseHTTPRequestHandler):
    """An OpenAI chat endpoint whose behaviour the test sets: answer, refuse with a status, or drop."""

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server = self.server
        server.seen += 1  # type: ignore[attr-defined]
        mode = server.mode  # type: ignore[attr-defined]
        if mode == "drop":
            self.connection.close()  # as a killed server: the connection dies without an answer
            return
        if isinstance(mode, int):
            self.send_response(mode)
            self.end_headers()
            self.wfile.write(json.dumps({"error": {"message": f"status {mode}"}}).encode())
            return
        time.sleep(0.02)
        answer = {"choices": [{"message": {"content": f"{server.name}: {body['messages'][-1]['content']}"},  # type: ignore[attr-defined]
                               "finish_reason": "stop"}], "usage": {"prompt_tokens": 5, "completion_tokens": 3}}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def http_pair() -> Iterator[list[http.server.ThreadingHTTPServer]]:
    servers = []
    for name in ("x", "y"):
        s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        s.name, s.mode, s.seen = name, "ok", 0  # type: ignore[attr-defined]
        threading.Thread(target=s.serve_forever, daemon=True).start()
        servers.append(s)
    yield servers
    for s in servers:
        s.shutdown()
        s.server_close()


def _pool(vault: Vault, tmp_path: Path, servers: list, retries: int = 4) -> GeneratorPool:
    urls = [(s.name, f"http://127.0.0.1:{s.server_address[1]}/v1") for s in servers]
    pin_policy(vault, pool_policy(tmp_path / "p", urls, retries=retries, backoff_s=0.05), actor="tester")
    return open_model(vault, "gen", "generator", sends={"document_text"})  # type: ignore[return-value]


def test_requests_of_a_member_that_drops_them_are_answered_by_the_other(vault: Vault, tmp_path: Path, http_pair) -> None:  # noqa: ANN001
    x, y = http_pair
    x.mode = "drop"
    with _pool(vault, tmp_path, http_pair) as pool:
        asks = [[{"role": "user", "content": f"q{i}"}] for i in range(12)]
        results = pool.chat_many(asks, max_tokens=8)
        assert [r.text for r in results] == [f"y: q{i}" for i in range(12)]  # every one answered, in order
        stats = {m.name: m for m in pool.members}
        assert stats["x"].failures >= 1 and stats["y"].requests >= 12 and x.seen >= 1
    entries = list(vault.audit.entries())
    down = [e for e in entries if e.action == "llm.pool.member_down"]
    assert down and {e.target for e in down} == {"x"} and down[0].details["pool"] == "gen"
    calls = [e for e in entries if e.action == "llm.external.chat"]
    assert sum(e.details["status"] == "ok" for e in calls) == 12  # audited per call, failures too
    assert sum(e.details["status"] == "error" and e.target == "x" for e in calls) == x.seen


def test_a_busy_member_is_retried_after_its_rest(vault: Vault, tmp_path: Path, http_pair) -> None:  # noqa: ANN001
    x, y = http_pair
    y.mode = 503
    with _pool(vault, tmp_path, http_pair) as pool:
        assert {r.text for r in pool.chat_many([ASK] * 4, max_tokens=8)} == {"x: Write one question."}
        x.mode, y.mode = 429, "ok"  # x now overloaded: its requests go to y once y has rested
        assert {r.text for r in pool.chat_many([ASK] * 4, max_tokens=8)} == {"y: Write one question."}


def test_a_request_every_member_fails_raises_one_line(vault: Vault, tmp_path: Path, http_pair) -> None:  # noqa: ANN001
    for s in http_pair:
        s.mode = 503
    with _pool(vault, tmp_path, http_pair, retries=3) as pool:
        with pytest.raises(MemoError) as err:
            pool.chat_many([ASK] * 2, max_tokens=8)
    message = str(err.value)
    assert "failed 4 times" in message and "re-run" in message and "\n" not in message


def test_an_error_no_member_would_answer_differently_is_raised_at_once(vault: Vault, tmp_path: Path, http_pair) -> None:  # noqa: ANN001
    for s in http_pair:
        s.mode = 400
    with _pool(vault, tmp_path, http_pair) as pool:
        with pytest.raises(MemoError, match="HTTP 400"):
            pool.chat_many([ASK], max_tokens=8)
    assert sum(s.seen for s in http_pair) == 1


def test_backoff_doubles_and_is_capped() -> None:
    b = Backoff(retries=3, first_s=0.5, max_s=3.0)
    assert [b.rest(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


# ------------------------------------------------------------------ two real llama.cpp servers
@pytest.fixture
def llama_pair(tmp_path: Path, bundled_gguf: Path) -> Iterator[list[LlamaServer]]:
    servers = start_all([LlamaServer(bundled_gguf, tmp_path / f"{n}.log", threads=1) for n in ("a", "b")])
    yield servers
    for s in servers:
        s.stop()


@pytest.mark.slow
def test_a_member_killed_mid_reflect_loses_no_unit(vault: Vault, tmp_path: Path, llama_pair: list[LlamaServer]) -> None:
    a, b = llama_pair
    pin_policy(vault, pool_policy(tmp_path / "p", [("a", a.url), ("b", b.url)], in_flight=2, retries=6, backoff_s=0.5),
               actor="tester")
    docs = [SAMPLE_CORPUS / "hr" / "org-chart.md", SAMPLE_CORPUS / "hr" / "leave-policy.txt"]
    ingest(vault, docs)
    params = replace(vault.settings.reflect, facts_per_unit=3, generated_wordings=1, probe_attempts=1,
                     composed_generated_wordings=0, negatives_per_entity=0)
    pool = open_model(vault, "gen", "generator", sends={"document_text"})
    planned = {u.unit_id for u in plan_units(vault, pool.identity, params)}
    assert len(planned) >= 4

    def kill_a_once_it_has_answered() -> None:  # mid-run, while its requests are in flight
        while sum(e.action == "llm.external.chat" and e.target == "a" for e in vault.audit.entries()) < 4:
            time.sleep(0.05)
        a.kill()

    killer = threading.Thread(target=kill_a_once_it_has_answered, daemon=True)
    killer.start()
    stored: list[str] = []
    report = reflect(vault, pool, params, actor="tester", progress=lambda unit, i, n: stored.append(unit.unit_id))
    killer.join(timeout=5)
    assert a.proc.poll() is not None, "the member was never killed: the run ended too early to test anything"
    assert sorted(stored) == sorted(planned) and len(stored) == len(set(stored))  # every unit stored, once
    assert unit_ids_on_disk(vault) == planned and report.generated == len(planned)

    entries = list(vault.audit.entries())
    calls = [e for e in entries if e.action == "llm.external.chat"]
    failed = [e for e in calls if e.details["status"] == "error"]
    assert failed and {e.target for e in failed} == {"a"}
    assert any(e.action == "llm.pool.member_down" and e.target == "a" for e in entries)
    from appliance.reflect.store import load_units

    llm_calls = sum(u.stats.llm_calls for u in load_units(vault))
    assert sum(e.details["status"] == "ok" for e in calls) == llm_calls  # one audited call per answer
    assert any(e.target == "b" and e.details["status"] == "ok" for e in calls[calls.index(failed[0]):])
    again = reflect(vault, pool, params, actor="tester")  # resumable: nothing left to do
    assert again.generated == 0 and again.skipped_done == len(planned)
    pool.close()
