"""The HTTP API for real: a vault, tokens, the bundled model as executive and memory, a server on a
free port, and plain-JSON requests as an OpenAI-compatible on-prem tool would send them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.api.server import MAX_BODY_BYTES, ApiServer
from appliance.api.tokens import create_token, revoke_token
from appliance.app.qa import ask as app_ask
from appliance.config import Settings
from appliance.executive.agent import Executive, ExecutiveParams
from appliance.llm.llamacpp import LlamaCppModel
from appliance.llm.registry import ModelRegistry
from appliance.vault.keys import Secret
from appliance.vault.store import Vault
from tests.conftest import FAST_KDF, PASSPHRASE, REPO
from tests.llm.conftest import TEST_OPTIONS

# short generations: the plumbing is under test, not the answers of a 135M model
PARAMS = ExecutiveParams(max_sub_questions=1, max_hops=0, memory_max_tokens=16, plan_max_tokens=40, answer_max_tokens=16)
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def api_vault(tmp_path_factory: pytest.TempPathFactory) -> Vault:
    home = tmp_path_factory.mktemp("api") / "home"
    return Vault.init(Settings(home=home, kdf=FAST_KDF), Secret(passphrase=PASSPHRASE), actor="tester")


@pytest.fixture(scope="module")
def executive(api_vault: Vault, bundled_gguf: Path) -> Iterator[Executive]:
    model = LlamaCppModel.load(ModelRegistry(api_vault), options=TEST_OPTIONS)
    yield Executive(model, model, "test", PARAMS)
    model.close()


class Probe:
    """The real ask path, counting how many questions are inside the models at once."""

    def __init__(self) -> None:
        self.inside = 0
        self.most = 0
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, session, executive: Executive, question: str):  # noqa: ANN001, ANN204
        with self.lock:
            self.inside += 1
            self.calls += 1
            self.most = max(self.most, self.inside)
        try:
            return app_ask(session, executive, question)
        finally:
            with self.lock:
                self.inside -= 1


@pytest.fixture(scope="module")
def probe() -> Probe:
    return Probe()


@pytest.fixture(scope="module")
def log_lines() -> list[str]:
    return []


@pytest.fixture(scope="module")
def server(api_vault: Vault, executive: Executive, probe: Probe, log_lines: list[str]) -> Iterator[ApiServer]:
    srv = ApiServer(api_vault, executive, port=0, ask=probe, log=log_lines.append).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def alice(api_vault: Vault) -> str:
    return create_token(api_vault, "alice", expires_days=30, actor="admin").token


def call(server: ApiServer, method: str, path: str, body: Any = None, token: str | None = None,
         raw: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(server.url + path, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=300) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def api_entries(vault: Vault, after: int) -> list:
    return [e for e in vault.audit.entries() if e.seq > after and e.action == "api.request"]


def last_seq(vault: Vault) -> int:
    return vault.audit.count()


def assert_openai_error(status: int, body: dict, expected: int) -> None:
    assert status == expected, body
    err = body["error"]
    assert set(err) == {"message", "type", "code"} and err["message"] and "\n" not in err["message"]


# ---------------------------------------------------------------- no model calls
def test_healthz_needs_no_token_and_says_nothing(server: ApiServer, api_vault: Vault) -> None:
    before = last_seq(api_vault)
    assert call(server, "GET", "/healthz") == (200, {"status": "ok"})
    assert api_entries(api_vault, before) == []  # health probes are not audited (they carry no data)


def test_models_lists_memo(server: ApiServer, alice: str) -> None:
    status, body = call(server, "GET", "/v1/models", token=alice)
    assert status == 200 and body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["memo"] and body["data"][0]["memory_version"] == "test"


def test_refused_tokens_get_401_and_are_audited_as_unauthenticated(server: ApiServer, api_vault: Vault, alice: str) -> None:
    revoked = create_token(api_vault, "mallory", actor="admin")
    revoke_token(api_vault, revoked.info.id, actor="admin")
    expired = create_token(api_vault, "trent", expires_days=1, actor="admin")
    with api_vault.transaction() as db:  # a day has passed
        db.execute("UPDATE api_tokens SET expires_at='2000-01-01T00:00:00+00:00' WHERE id=?", (expired.info.id,))
    before = last_seq(api_vault)
    cases = [(None, "missing"), ("memo_nope", "invalid"), (alice[:-2] + "xx", "invalid"),
             (revoked.token, "revoked"), (expired.token, "expired")]
    for token, word in cases:
        for method, path, body in (("GET", "/v1/models", None), ("POST", "/v1/ask", {"question": QUESTION}),
                                   ("POST", "/v1/chat/completions", {"model": "memo", "messages": [{"role": "user", "content": QUESTION}]})):
            status, reply = call(server, method, path, body, token=token)
            assert_openai_error(status, reply, 401)
            assert reply["error"]["code"] == "invalid_api_key" and word in reply["error"]["message"]
    req = urllib.request.Request(server.url + "/v1/models", headers={"Authorization": f"Basic {alice}"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(req, timeout=60)
    assert caught.value.code == 401 and caught.value.headers["WWW-Authenticate"].startswith("Bearer")
    entries = api_entries(api_vault, before)
    assert len(entries) == len(cases) * 3 + 1
    assert {e.actor for e in entries} == {"unauthenticated"} and {e.details["status"] for e in entries} == {401}
    assert {e.target for e in entries} == {"/v1/models", "/v1/ask", "/v1/chat/completions"}
    assert all(e.details["latency_ms"] >= 0 and e.details["token_id"] is None for e in entries)


def test_bad_requests_get_400_or_413_with_one_line(server: ApiServer, api_vault: Vault, alice: str) -> None:
    before = last_seq(api_vault)
    chat = "/v1/chat/completions"
    cases = [
        ("POST", "/v1/ask", b"{not json", 400, "invalid_json"),
        ("POST", "/v1/ask", b"[1, 2]", 400, "invalid_json"),
        ("POST", "/v1/ask", b"\xff\xfe", 400, "invalid_json"),
        ("POST", "/v1/ask", json.dumps({"q": QUESTION}).encode(), 400, "invalid_question"),
        ("POST", "/v1/ask", json.dumps({"question": "   "}).encode(), 400, "invalid_question"),
        ("POST", "/v1/ask", json.dumps({"question": "x" * 2500}).encode(), 400, "question_too_long"),
        ("POST", chat, json.dumps({"model": "memo"}).encode(), 400, "invalid_messages"),
        ("POST", chat, json.dumps({"messages": [{"role": "system", "content": "hi"}]}).encode(), 400, "invalid_messages"),
        ("POST", chat, json.dumps({"messages": [{"role": "user", "content": 5}]}).encode(), 400, "invalid_messages"),
        ("POST", chat, json.dumps({"messages": [{"role": "user", "content": QUESTION}], "stream": True}).encode(), 400, "unsupported_parameter"),
        ("POST", "/v1/ask", json.dumps({"question": "x" * (MAX_BODY_BYTES + 10)}).encode(), 413, "body_too_large"),
        ("GET", "/v1/ask", None, 405, "method_not_allowed"),
        ("GET", "/v1/nothing", None, 404, "not_found"),
    ]
    for method, path, raw, expected, code in cases:
        status, body = call(server, method, path, token=alice, raw=raw)
        assert_openai_error(status, body, expected)
        assert body["error"]["code"] == code, (path, raw[:40] if raw else None, body)
    status, body = call(server, "POST", chat, token=alice, raw=json.dumps({"messages": [{"role": "user", "content": QUESTION}], "stream": True}).encode())
    assert "stream" in body["error"]["message"]
    entries = api_entries(api_vault, before)
    assert [e.details["status"] for e in entries] == [c[3] for c in cases] + [400]
    assert {e.actor for e in entries} == {"alice"}
    assert probe_untouched(server)


def probe_untouched(server: ApiServer) -> bool:
    return not server.model_lock.locked()


def raw_request(server: ApiServer, method: str, path: str, token: str | None = None, body: bytes = b"") -> tuple[int, dict, bytes]:
    """Any method, as http.client sends it (urllib refuses some)."""
    import http.client

    conn = http.client.HTTPConnection(server.server_address[0], server.server_address[1], timeout=60)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    conn.request(method, path, body=body or None, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, dict(resp.getheaders()), data


def test_every_method_gets_json_and_an_audit_entry(server: ApiServer, api_vault: Vault, alice: str) -> None:
    before = last_seq(api_vault)
    cases = [("PATCH", "/v1/ask", 405), ("OPTIONS", "/v1/models", 405), ("PUT", "/v1/chat/completions", 405),
             ("DELETE", "/v1/models", 405), ("TRACE", "/v1/ask", 405), ("PROPFIND", "/v1/models", 405),
             ("PATCH", "/nowhere", 404), ("HEAD", "/v1/ask", 405)]
    for method, path, expected in cases:
        status, headers, data = raw_request(server, method, path, token=alice)
        assert status == expected, (method, path, status, data)
        assert headers["content-type"].startswith("application/json"), (method, headers)
        if method != "HEAD":
            assert_openai_error(status, json.loads(data), expected)
    status, headers, data = raw_request(server, "HEAD", "/v1/models", token=alice)
    assert status == 200 and data == b""
    status, _, data = raw_request(server, "PATCH", "/v1/models")  # no token: 401, as JSON too
    assert status == 401 and json.loads(data)["error"]["code"] == "invalid_api_key"
    entries = api_entries(api_vault, before)
    assert [(e.details["method"], e.target, e.details["status"]) for e in entries] == \
        [(m, p, st) for m, p, st in cases] + [("HEAD", "/v1/models", 200), ("PATCH", "/v1/models", 401)]


def test_an_older_catalog_under_the_running_server_keeps_a_revoked_token_out(server: ApiServer, api_vault: Vault,
                                                                             tmp_path: Path) -> None:
    import shutil

    token = create_token(api_vault, "mallory", actor="admin")
    catalog = api_vault.home / "catalog.db.enc"
    shutil.copy2(catalog, tmp_path / "catalog.before")
    assert call(server, "GET", "/v1/models", token=token.token)[0] == 200
    revoke_token(api_vault, token.info.id, actor="admin")
    assert call(server, "GET", "/v1/models", token=token.token)[0] == 401
    newest = catalog.read_bytes()
    shutil.copy2(tmp_path / "catalog.before", catalog)  # put back the copy from before the revocation
    try:
        status, body = call(server, "GET", "/v1/models", token=token.token)
        assert status == 503 and body["error"]["code"] == "vault_integrity", body  # was 200: the token was alive again
        last = api_entries(api_vault, 0)[-1]
        assert last.details["status"] == 503 and "catalog.db.enc" in last.details["error"]
    finally:
        catalog.write_bytes(newest)
    assert call(server, "GET", "/v1/models", token=token.token)[0] == 401
    assert api_vault.verify().ok


def test_unauthenticated_floods_are_rate_limited_and_summarised(api_vault: Vault, executive: Executive) -> None:
    from appliance.api.server import RefusalBudget

    srv = ApiServer(api_vault, executive, port=0, budget=RefusalBudget(per_client=5, total=50, window_s=3600)).start()
    try:
        before = last_seq(api_vault)
        statuses = [call(srv, "GET", "/v1/models", token="memo_nope")[0] for _ in range(40)]
        assert statuses == [401] * 5 + [429] * 35
        _, body = call(srv, "POST", "/v1/ask", {"question": QUESTION})
        assert body["error"]["code"] == "rate_limited"
        assert call(srv, "GET", "/healthz") == (200, {"status": "ok"})  # health checks are never limited
    finally:
        srv.stop()
    after = [e for e in api_vault.audit.entries() if e.seq > before]
    assert [e.details["status"] for e in after if e.action == "api.request"] == [401] * 5
    (summary,) = [e for e in after if e.action == "api.refused.summary"]
    assert summary.details["requests"] == 36 and summary.details["top_clients"] == {"127.0.0.1": 36}
    assert summary.details["routes"] == {"/v1/models": 35, "/v1/ask": 1}


def _self_signed(tmp_path: Path, name: str, issuer: tuple | None = None) -> tuple[Path, Path, object, object]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = (issuer[0].subject, issuer[1]) if issuer else (subject, key)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
               .not_valid_after(now + datetime.timedelta(days=1)))
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(
        __import__("ipaddress").ip_address("127.0.0.1"))]), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path, cert, key


def test_tls_from_the_vault_with_client_certificates(api_vault: Vault, executive: Executive, alice: str, tmp_path: Path) -> None:
    import ssl

    from appliance.api import tls
    from appliance.errors import MemoError

    ca_crt, _, ca, ca_key = _self_signed(tmp_path, "memo-test-ca")
    srv_crt, srv_key, _, _ = _self_signed(tmp_path, "localhost", issuer=(ca, ca_key))
    cli_crt, cli_key, _, _ = _self_signed(tmp_path, "alice-laptop", issuer=(ca, ca_key))
    tls.import_into_vault(api_vault, srv_crt, srv_key, actor="admin")
    with pytest.raises(MemoError, match="does not belong"):
        tls.from_files(srv_crt, cli_key)
    context = tls.server_context(tls.from_vault(api_vault), client_ca=ca_crt)
    srv = ApiServer(api_vault, executive, port=0, tls=context).start()
    try:
        assert srv.url.startswith("https://127.0.0.1:")
        client = ssl.create_default_context(cafile=str(ca_crt))
        client.load_cert_chain(str(cli_crt), str(cli_key))
        req = urllib.request.Request(srv.url + "/v1/models", headers={"Authorization": f"Bearer {alice}"})
        with urllib.request.urlopen(req, context=client, timeout=60) as resp:
            assert resp.status == 200 and json.loads(resp.read())["data"][0]["id"] == "memo"
        anonymous = ssl.create_default_context(cafile=str(ca_crt))  # trusts the server, shows no certificate
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(srv.url + "/healthz", context=anonymous, timeout=60).read()
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain HTTP to a TLS port gets nothing
            urllib.request.urlopen(srv.url.replace("https", "http") + "/healthz", timeout=60).read()
    finally:
        srv.stop()
    assert "api.tls.import" in [e.action for e in api_vault.audit.entries()]
    for path in api_vault.home.rglob("*"):  # the private key is stored encrypted only
        if path.is_file():
            assert b"PRIVATE KEY" not in path.read_bytes(), path


# ---------------------------------------------------------------- answers
@pytest.mark.slow
def test_chat_completions_answers_with_usage_and_trace(server: ApiServer, api_vault: Vault, alice: str, log_lines: list[str]) -> None:
    before = last_seq(api_vault)
    request = {"model": "memo", "temperature": 0, "max_tokens": 64,
               "messages": [{"role": "system", "content": "You are a helpful assistant."},
                            {"role": "user", "content": "Hello."},
                            {"role": "assistant", "content": "Hi! How can I help?"},
                            {"role": "user", "content": [{"type": "text", "text": QUESTION}]}]}
    status, body = call(server, "POST", "/v1/chat/completions", request, token=alice)
    assert status == 200, body
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-") and body["model"] == "memo"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"].strip() and choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    memo = body["memo"]
    assert memo["memory_version"] == "test" and memo["sub_questions"][0]["question"] == QUESTION
    assert memo["executive"].startswith("llamacpp:") and memo["seconds"] > 0

    after = [e for e in api_vault.audit.entries() if e.seq > before]
    qa = [e for e in after if e.action == "qa.ask"]
    assert len(qa) == 1 and qa[0].actor == "alice" and qa[0].details["channel"] == "api"
    assert qa[0].details["question"] == QUESTION and qa[0].details["answer"] == choice["message"]["content"]
    req = [e for e in after if e.action == "api.request"]
    assert [(e.actor, e.target, e.details["status"], e.details["memory_version"]) for e in req] == [
        ("alice", "/v1/chat/completions", 200, "test")]
    assert qa[0].seq < req[0].seq
    assert log_lines and all(alice not in line for line in log_lines)


@pytest.mark.slow
def test_ask_returns_the_full_trace(server: ApiServer, api_vault: Vault, alice: str) -> None:
    before = last_seq(api_vault)
    status, trace = call(server, "POST", "/v1/ask", {"question": QUESTION}, token=alice)
    assert status == 200, trace
    assert set(trace) >= {"question", "answer", "sub_answers", "sources", "memory_version", "executive", "memory", "seconds", "timings", "tokens"}
    assert trace["question"] == QUESTION and trace["answer"] and trace["memory_version"] == "test"
    assert trace["sub_answers"][0]["question"] == QUESTION and "phrase_s" in trace["timings"]
    actions = [(e.action, e.actor) for e in api_vault.audit.entries() if e.seq > before]
    assert actions == [("qa.ask", "alice"), ("api.request", "alice")]


@pytest.mark.slow
def test_concurrent_questions_are_serialised_while_health_and_refusals_answer_at_once(
        server: ApiServer, api_vault: Vault, alice: str, probe: Probe) -> None:
    bob = create_token(api_vault, "bob", actor="admin").token
    before, calls_before = last_seq(api_vault), probe.calls
    results: list[tuple[int, dict]] = []

    def ask(token: str, i: int) -> None:
        results.append(call(server, "POST", "/v1/ask", {"question": f"Question {i}: what is the capital of France?"}, token=token))

    threads = [threading.Thread(target=ask, args=(tok, i)) for i, tok in enumerate([alice, bob, alice])]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while not server.model_lock.locked() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.model_lock.locked()
    t0 = time.monotonic()
    assert call(server, "GET", "/healthz") == (200, {"status": "ok"})
    assert call(server, "GET", "/v1/models")[0] == 401
    assert time.monotonic() - t0 < 5  # not queued behind the models
    for t in threads:
        t.join(timeout=300)
    assert [s for s, _ in results] == [200, 200, 200], results
    assert probe.calls - calls_before == 3 and probe.most == 1
    entries = [e for e in api_vault.audit.entries() if e.seq > before]
    assert sorted(e.actor for e in entries if e.action == "qa.ask") == ["alice", "alice", "bob"]
    asked = [e for e in entries if e.action == "api.request" and e.target == "/v1/ask"]
    assert sorted((e.actor, e.details["status"]) for e in asked) == [("alice", 200), ("alice", 200), ("bob", 200)]


def test_no_token_in_audit_or_catalog(server: ApiServer, api_vault: Vault, alice: str) -> None:
    """Runs after the others in this module: everything they wrote is checked."""
    call(server, "GET", "/v1/models", token=alice)
    call(server, "GET", "/v1/models", token=alice + "x")
    secret = alice[len("memo_") + 13:]  # after "memo_<12 hex id>_": the base64url secret may itself contain "_"
    audit_text = json.dumps([e.to_dict() for e in api_vault.audit.entries()])
    assert "alice" in audit_text and secret not in audit_text
    from tests.api.test_tokens import catalog_bytes

    assert secret.encode() not in catalog_bytes(api_vault)
    for path in api_vault.home.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert api_vault.audit.verify().ok


@pytest.mark.slow
def test_sigterm_stops_the_server_gracefully(tmp_path: Path, bundled_gguf: Path) -> None:
    script = f"""
import sys
from pathlib import Path
from appliance.api.server import ApiServer, serve_until_signalled
from appliance.config import Settings
from appliance.executive.agent import Executive
from appliance.llm.llamacpp import LlamaCppModel
from appliance.llm.registry import ModelRegistry
from appliance.vault.keys import Secret
from appliance.vault.store import Vault
from tests.conftest import FAST_KDF
from tests.llm.conftest import TEST_OPTIONS
vault = Vault.init(Settings(home=Path(sys.argv[1]), kdf=FAST_KDF), Secret(passphrase={PASSPHRASE!r}), actor="tester")
model = LlamaCppModel.load(ModelRegistry(vault), options=TEST_OPTIONS)
server = ApiServer(vault, Executive(model, model, "test"), port=0)
serve_until_signalled(server, lambda url: print(url, flush=True))
print("stopped", flush=True)
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "home")], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            proc.kill()
            pytest.fail(f"server did not start: {proc.communicate()[1][-2000:]}")
        with urllib.request.urlopen(url + "/healthz", timeout=60) as resp:
            assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert proc.stdout.read().strip() == "stopped"
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(url + "/healthz", timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
