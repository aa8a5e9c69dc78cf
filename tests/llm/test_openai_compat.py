"""External endpoints: refused before any socket unless approved; approved calls work and are audited."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.errors import MemoError
from appliance.llm.base import ChatModel
from appliance.llm.openai_compat import OpenAICompatModel
from appliance.policy import load_policy
from appliance.vault.store import Vault
from tests.llm.conftest import SYSTEM, ask_known

REPO = Path(__file__).resolve().parents[2]
CAPITAL = [SYSTEM, {"role": "user", "content": "What is the capital of France?"}]


def _policy_dir(tmp_path: Path, endpoints: str = "") -> Path:
    d = tmp_path / "policies"
    d.mkdir(exist_ok=True)
    (d / "executives.yaml").write_text(
        "version: 1\nendpoints:\n"
        "  - {name: local, kind: llamacpp, model: smollm2-135m-instruct-q4_1, purposes: [executive]}\n" + endpoints
    )
    return d


def _approve(url: str, model: str, json_mode: str = "json_schema") -> str:
    return (
        f"  - name: approved\n    kind: openai\n    url: {url}\n    model: {model}\n"
        f"    purposes: [executive]\n    data_allowed_to_leave: [questions, sub_questions, memory_answers]\n"
        f"    json_mode: {json_mode}\n    timeout_s: 120\n"
    )


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A real listening socket standing in for an unapproved server: it must never see a connection."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.settimeout(0.3)
    yield sock
    sock.close()


@pytest.fixture
def network_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, object]]:
    """Record (and still perform) every outgoing connect and name lookup in this process."""
    calls: list[tuple[str, object]] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: object) -> None:
        calls.append(("connect", address))
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: object) -> int:
        calls.append(("connect", address))
        return real_connect_ex(self, address)

    def getaddrinfo(*args: object, **kwargs: object) -> object:
        calls.append(("getaddrinfo", args[0]))
        return real_getaddrinfo(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return calls


def _accepted(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except TimeoutError:
        return False
    conn.close()
    return True


def test_instrumentation_sees_a_real_connection(listener: socket.socket, network_calls: list) -> None:
    """Control: the two detectors below do fire when a connection is made."""
    port = listener.getsockname()[1]
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    assert any(kind == "connect" for kind, _ in network_calls)
    assert _accepted(listener)


def test_unapproved_endpoint_is_refused_before_any_socket(
    tmp_path: Path, vault: Vault, listener: socket.socket, network_calls: list
) -> None:
    port = listener.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    policies = _policy_dir(tmp_path)
    with pytest.raises(MemoError) as err:
        OpenAICompatModel(load_policy(policies), url, "gpt-x", "executive", vault)
    message = str(err.value)
    assert url in message and str(policies / "executives.yaml") in message and "\n" not in message
    assert network_calls == []
    assert not _accepted(listener)
    refused = [e for e in vault.audit.entries() if e.action == "llm.external.refused"]
    assert refused and refused[-1].target == url and refused[-1].details["purpose"] == "executive"


@pytest.mark.parametrize(
    ("model", "purpose", "sends", "expect"),
    [
        ("other-model", "executive", None, "not 'other-model'"),
        ("gpt-x", "generator", None, "not approved as generator"),
        ("gpt-x", "executive", ["document_text"], "may not receive document_text"),
    ],
)
def test_approved_url_but_other_use_is_refused(
    tmp_path: Path, vault: Vault, listener: socket.socket, network_calls: list, model, purpose, sends, expect
) -> None:
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    policy = load_policy(_policy_dir(tmp_path, _approve(url, "gpt-x")))
    with pytest.raises(MemoError, match=expect):
        OpenAICompatModel(policy, url, model, purpose, vault, sends=sends)
    assert network_calls == [] and not _accepted(listener)


def test_revocation_applies_at_the_next_call(
    tmp_path: Path, vault: Vault, listener: socket.socket, network_calls: list
) -> None:
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    policies = _policy_dir(tmp_path, _approve(url, "gpt-x"))
    model = OpenAICompatModel(load_policy(policies), url, "gpt-x", "executive", vault)
    _policy_dir(tmp_path)  # the administrator removes the approval
    with pytest.raises(MemoError, match="not approved"):
        model.chat(CAPITAL)
    assert network_calls == [] and not _accepted(listener)


class _Redirect(http.server.BaseHTTPRequestHandler):
    target = ""

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(307)
        self.send_header("Location", self.target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_redirect_to_another_host_is_not_followed(tmp_path: Path, vault: Vault, listener: socket.socket) -> None:
    _Redirect.target = f"http://127.0.0.1:{listener.getsockname()[1]}/v1/chat/completions"
    server = http.server.HTTPServer(("127.0.0.1", 0), _Redirect)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        model = OpenAICompatModel(load_policy(_policy_dir(tmp_path, _approve(url, "gpt-x"))), url, "gpt-x", "executive", vault)
        with pytest.raises(MemoError, match="HTTP 307"):
            model.chat(CAPITAL)
    finally:
        server.shutdown()
        server.server_close()
    assert not _accepted(listener)
    calls = [e for e in vault.audit.entries() if e.action == "llm.external.chat"]
    assert calls[-1].details["status"] == "error" and calls[-1].details["http_status"] == 307


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real OpenAI-compatible server (llama-cpp-python's) on the bundled model, in a subprocess."""
    pytest.importorskip("llama_cpp.server.app", reason="needs the llama-cpp-python server extras")
    from appliance.llm.registry import bundled_model_path

    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    cmd = [
        sys.executable, "-m", "appliance.llm.serve", "--model", str(bundled_model_path()),
        "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "1024",
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{base}/models", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"server did not start: {log.read_text()[-2000:]}")
                time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_approved_endpoint_answers_and_is_audited(tmp_path: Path, vault: Vault, llama_server: str) -> None:
    policy = load_policy(_policy_dir(tmp_path, _approve(llama_server, "smollm2", json_mode="json_object")))
    model = OpenAICompatModel.from_policy(policy, "approved", "executive", vault)
    assert isinstance(model, ChatModel)

    answered = ask_known(model, temperature=0.0)
    assert sum(ok for _, ok in answered) >= 2
    result = answered[0][0]
    assert result.stats.prompt_tokens > 0 and result.stats.completion_tokens > 0
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    ask = [SYSTEM, {"role": "user", "content": "Which city is the capital of France? Reply in JSON."}]
    assert isinstance(model.chat(ask, max_tokens=48, json_schema=schema).json()["city"], str)

    calls = [e for e in vault.audit.entries() if e.action == "llm.external.chat"]
    assert len(calls) == len(answered) + 1
    first = calls[0].details
    assert calls[0].target == "approved"
    assert first["url"] == llama_server and first["model"] == "smollm2" and first["purpose"] == "executive"
    assert first["status"] == "ok" and first["prompt_tokens"] == result.stats.prompt_tokens
    assert first["completion_tokens"] == result.stats.completion_tokens and first["latency_s"] > 0
    recorded = json.dumps([e.to_dict() for e in calls])
    assert "capital" not in recorded and "Paris" not in recorded  # never prompt or answer text
