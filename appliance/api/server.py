"""The local HTTP API: OpenAI-compatible chat completions and ``/v1/ask`` with the full trace.

Standard library only (``http.server``), bound to 127.0.0.1 by default. Routes:

* ``GET  /healthz``              no auth; ``{"status": "ok"}`` and nothing else
* ``GET  /v1/models``            the one model this appliance offers (``memo``)
* ``POST /v1/chat/completions``  OpenAI chat format; the last user message is the question
* ``POST /v1/ask``               ``{"question": ...}`` → the whole trace (sub-questions, sources, timings)

Every ``/v1`` request needs ``Authorization: Bearer memo_…`` (see :mod:`appliance.api.tokens`).
Every request but ``/healthz`` is audited as ``api.request`` — refused ones too, as the token's
user or ``unauthenticated``, with route, status and latency, never the token; answered questions
are also audited by :func:`appliance.executive.session.ask` (channel ``api``). The models answer
one question at a time, so questions queue on a lock while health checks and refusals are
answered at once by other threads.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from appliance.api.tokens import TokenError, TokenInfo, TokenVerifier
from appliance.errors import MemoError
from appliance.executive.agent import MAX_QUESTION_CHARS, Executive
from appliance.executive.trace import Trace
from appliance.vault.store import Vault

MODEL_ID = "memo"
MAX_BODY_BYTES = 64 * 1024
UNAUTHENTICATED = "unauthenticated"

AskFn = Callable[[Vault, Executive, str, str, str], Trace]


class ApiError(Exception):
    """A refusal sent to the caller as OpenAI-style error JSON."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code}}


def _default_ask(vault: Vault, executive: Executive, question: str, actor: str, channel: str) -> Trace:
    from appliance.executive.session import ask

    return ask(vault, executive, question, actor=actor, channel=channel)


def usage(trace: Trace) -> dict[str, int]:
    """OpenAI ``usage`` from the trace: every model call of the answer (executive and memory)."""
    prompt = sum(v for k, v in trace.tokens.items() if k.endswith("prompt"))
    completion = sum(v for k, v in trace.tokens.items() if k.endswith("completion"))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def trace_summary(trace: Trace) -> dict[str, Any]:
    return {
        "sub_questions": [{"question": s.question, "answer": s.answer, "sources": s.sources, "hop": s.hop} for s in trace.sub_answers],
        "sources": trace.sources,
        "memory_version": trace.memory_version,
        "executive": trace.executive,
        "memory": trace.memory,
        "seconds": trace.seconds,
    }


def _text_of(content: Any) -> str | None:
    """A message's text: a string, or OpenAI content parts (``[{"type": "text", "text": ...}]``)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        texts = [p.get("text") for p in content if p.get("type") == "text"]
        if texts and all(isinstance(t, str) for t in texts) and len(texts) == len(content):
            return "\n".join(texts)
    return None


def question_from_chat(body: dict[str, Any]) -> str:
    """The question of a chat request: its last user message (earlier turns are not used)."""
    if body.get("stream"):
        raise ApiError(400, "stream: true is not supported; send stream: false (the answer comes in one response)", code="unsupported_parameter")
    n = body.get("n", 1)
    if n not in (1, None):
        raise ApiError(400, "n must be 1: the appliance gives one answer per question", code="unsupported_parameter")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list of {role, content} objects", code="invalid_messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ApiError(400, f"messages[{i}] must be an object with a 'role'", code="invalid_messages")
    users = [m for m in messages if m["role"] == "user"]
    if not users:
        raise ApiError(400, "no user message: the question is the last message with role 'user'", code="invalid_messages")
    text = _text_of(users[-1].get("content"))
    if text is None:
        raise ApiError(400, "the last user message's content must be text (a string or text parts)", code="invalid_messages")
    return text


def check_question(question: Any) -> str:
    if not isinstance(question, str) or not question.strip():
        raise ApiError(400, "'question' must be a non-empty string", code="invalid_question")
    if len(question) > MAX_QUESTION_CHARS:
        raise ApiError(400, f"the question is {len(question)} characters long; keep it under {MAX_QUESTION_CHARS}", code="question_too_long")
    return question


class ApiServer(ThreadingHTTPServer):
    """The HTTP API around one :class:`Executive` (built by the caller: tests inject their own).

    ``port=0`` picks a free port (see :attr:`url`). Use :meth:`start` for a background thread
    and :meth:`stop` to finish in-flight requests and close.
    """

    daemon_threads = False
    block_on_close = True  # server_close() waits for in-flight requests: shutdown is graceful
    allow_reuse_address = True

    def __init__(
        self,
        vault: Vault,
        executive: Executive,
        host: str = "127.0.0.1",
        port: int = 8750,
        ask: AskFn | None = None,
        queue_timeout: float = 600.0,
        max_body: int = MAX_BODY_BYTES,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.vault = vault
        self.executive = executive
        self.tokens = TokenVerifier(vault)
        self.ask = ask or _default_ask
        self.queue_timeout = queue_timeout
        self.max_body = max_body
        self.log = log
        self.model_lock = threading.Lock()  # the models answer one question at a time
        self.started = int(time.time())
        self._thread: threading.Thread | None = None
        self.stopping = False
        self._conns: dict[Any, bool] = {}  # open connection → busy answering a request
        self._conns_lock = threading.Lock()
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "ApiServer":
        self._thread = threading.Thread(target=self.serve_forever, name="memo-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, let in-flight requests finish, close the socket."""
        self.stopping = True
        self.shutdown()
        with self._conns_lock:  # idle keep-alive connections end now; busy ones after their response
            for sock, busy in self._conns.items():
                if not busy:
                    try:
                        sock.shutdown(socket.SHUT_RD)
                    except OSError:
                        pass
        self.server_close()
        if self._thread is not None:
            self._thread.join()

    def _mark(self, sock: Any, busy: bool | None) -> None:
        with self._conns_lock:
            if busy is None:
                self._conns.pop(sock, None)
            else:
                self._conns[sock] = busy

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{
            "id": MODEL_ID, "object": "model", "created": self.started, "owned_by": "memo",
            "memory_version": self.executive.memory_version,
            "executive": self.executive.executive_model.identity, "memory": self.executive.memory_model.identity,
        }]}

    def answer(self, question: str, actor: str) -> Trace:
        """Run one question through the (locked) executive; it is audited by ``session.ask``."""
        if not self.model_lock.acquire(timeout=self.queue_timeout):
            raise ApiError(503, f"the appliance is busy answering other questions; retry later (waited {self.queue_timeout:.0f} s)",
                           type_="server_error", code="busy")
        try:
            return self.ask(self.vault, self.executive, question, actor, "api")
        finally:
            self.model_lock.release()


class _Refused(Exception):
    def __init__(self, user: TokenInfo | None, error: ApiError) -> None:
        super().__init__(error.message)
        self.user = user
        self.error = error


class _Handler(BaseHTTPRequestHandler):
    server: ApiServer
    protocol_version = "HTTP/1.1"  # keep-alive: every response carries Content-Length
    timeout = 10  # an idle keep-alive connection is dropped after this, so a stop never waits long on one
    server_version = "memo"
    sys_version = ""

    # ------------------------------------------------------------ plumbing
    def setup(self) -> None:
        super().setup()
        self.server._mark(self.connection, False)

    def finish(self) -> None:
        self.server._mark(self.connection, None)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's signature
        if self.server.log:
            self.server.log(f"{self.address_string()} {format % args}")

    def _send(self, status: int, body: dict[str, Any], close: bool = False, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if close or self.server.stopping:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _bearer(self) -> str | None:
        value = self.headers.get("Authorization", "")
        scheme, _, token = value.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None

    def _read_json(self) -> dict[str, Any]:
        if self.headers.get("Transfer-Encoding"):
            raise ApiError(411, "chunked bodies are not supported: send Content-Length", code="length_required")
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            raise ApiError(411, "Content-Length is required", code="length_required")
        try:
            length = int(length_header)
            if length < 0:
                raise ValueError
        except ValueError:
            raise ApiError(400, "Content-Length is not a number", code="bad_length") from None
        if length > self.server.max_body:
            raise ApiError(413, f"request body is {length} bytes; the limit is {self.server.max_body}", code="body_too_large")
        raw = self.rfile.read(length)
        self._body_read = True
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, f"request body is not valid JSON ({exc.msg if hasattr(exc, 'msg') else 'not UTF-8'})", code="invalid_json") from None
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object", code="invalid_json")
        return body

    # ------------------------------------------------------------ dispatch
    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    ROUTES = {"/v1/models": "GET", "/v1/chat/completions": "POST", "/v1/ask": "POST"}

    def _dispatch(self, method: str) -> None:
        self.server._mark(self.connection, True)
        try:
            self._handle(method)
        finally:
            self.server._mark(self.connection, False)

    def _handle(self, method: str) -> None:
        started = time.monotonic()
        path = self.path.split("?", 1)[0]
        if path == "/healthz" and method == "GET":
            self._send(200, {"status": "ok"})
            return
        self._body_read = False
        user: TokenInfo | None = None
        details: dict[str, Any] = {}
        headers: dict[str, str] | None = None
        try:
            status, body = self._route(method, path, details)
        except _Refused as refused:
            user, exc = refused.user, refused.error
            status, body = exc.status, exc.body()
            details["error"] = exc.message
            if status == 401:
                headers = {"WWW-Authenticate": 'Bearer realm="memo"'}
        else:
            user = details.pop("_user")
        # the audit entry is written before the response goes out: no answer leaves unrecorded
        try:
            self.server.vault.audit.append(
                user.user if user else UNAUTHENTICATED, "api.request", path[:200], method=method, status=status,
                token_id=user.id if user else None, client=self.client_address[0],
                latency_ms=round((time.monotonic() - started) * 1000, 1), **details,
            )
        except Exception as exc:
            print(f"memo api: audit write failed, response withheld: {type(exc).__name__}: {exc}", file=sys.stderr)
            status, body = 500, ApiError(500, "the audit log could not be written; the operator must check the appliance",
                                         "server_error", "audit_failed").body()
        # a body we did not read would be parsed as the next request: close instead
        self._send(status, body, close=not self._body_read and method in ("POST", "PUT"), headers=headers)

    def _route(self, method: str, path: str, details: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        user: TokenInfo | None = None
        try:
            try:
                user = self.server.tokens.verify(self._bearer())
            except TokenError as exc:
                raise ApiError(401, str(exc), code="invalid_api_key") from None
            expected = self.ROUTES.get(path)
            if expected is None:
                raise ApiError(404, f"no route {path}: use /v1/chat/completions, /v1/ask, /v1/models or /healthz", code="not_found")
            if method != expected:
                raise ApiError(405, f"{path} takes {expected}", code="method_not_allowed")
            if path == "/v1/models":
                result = self.server.models()
            else:
                body = self._read_json()
                question = check_question(body.get("question") if path == "/v1/ask" else question_from_chat(body))
                trace = self.server.answer(question, user.user)
                details["memory_version"] = trace.memory_version
                result = trace.to_dict() if path == "/v1/ask" else self._completion(trace)
            details["_user"] = user
            return 200, result
        except ApiError as exc:
            raise _Refused(user, exc) from None
        except MemoError as exc:
            raise _Refused(user, ApiError(500, str(exc), "server_error", "answer_failed")) from None
        except Exception as exc:  # a bug: the caller learns nothing internal, the operator sees it
            print(f"memo api: internal error on {method} {path}: {type(exc).__name__}: {exc}", file=sys.stderr)
            raise _Refused(user, ApiError(500, "internal error; the operator can see it in the server log",
                                          "server_error", "internal")) from None

    def _completion(self, trace: Trace) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": MODEL_ID,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": trace.answer}, "finish_reason": "stop"}],
            "usage": usage(trace),
            "memo": trace_summary(trace),
        }


def serve_until_signalled(server: ApiServer, ready: Callable[[str], None] | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then finish in-flight requests and close (main thread only)."""
    import signal

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        if ready:
            ready(server.url)
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
