"""The local HTTP API: OpenAI-compatible chat completions and ``/v1/ask`` with the full trace.

Served by uvicorn (an asyncio HTTP/1.1 server) with Starlette's requests and responses, bound to
127.0.0.1 by default, with TLS when given a certificate (:mod:`appliance.api.tls`; client
certificates optional). Routes:

* ``GET  /healthz``              no auth; ``{"status": "ok"}`` and nothing else
* ``GET  /v1/models``            the one model this appliance offers (``memo``)
* ``POST /v1/chat/completions``  OpenAI chat format; the last user message is the question
* ``POST /v1/ask``               ``{"question": ...}`` → the whole trace (sub-questions, sources, timings)

Every ``/v1`` request needs ``Authorization: Bearer memo_…`` (see :mod:`appliance.api.tokens`): the
token belongs to a principal and carries its roles in the policy in force (a request of a principal
without ``ask`` gets 403); the request is answered as that principal, through the application
layer (:mod:`appliance.app`), as any door is.
Every request but ``/healthz`` — any method, any path, refused ones too — gets a JSON answer and
is audited as ``api.request`` *before* the response goes out, as the token's user or
``unauthenticated``, with route, method, status and latency, never the token. Answered questions
are also audited by :func:`appliance.executive.session.ask` (channel ``api``). Unauthenticated
requests beyond a budget per client and per minute get 429 and are counted into one
``api.refused.summary`` entry a minute instead of an fsynced entry each (:class:`RefusalBudget`),
so nobody without a token can grow the log without bound. The models answer one question at a
time: questions queue (without holding a thread) while health checks and refusals are answered
at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from appliance.api.tokens import TokenError, TokenInfo
from appliance.app import qa
from appliance.app.access import AccessRefused
from appliance.app.session import Session
from appliance.app.tokens import Authenticator
from appliance.errors import IntegrityError, MemoError
from appliance.executive.agent import MAX_QUESTION_CHARS, Executive
from appliance.executive.trace import Trace
from appliance.vault.store import Vault

MODEL_ID = "memo"
MAX_BODY_BYTES = 64 * 1024
DRAIN_BYTES = 1 << 20  # an oversized body up to this is read and dropped, so the client sees the 413
UNAUTHENTICATED = "unauthenticated"
ROUTES = {"/v1/models": "GET", "/v1/chat/completions": "POST", "/v1/ask": "POST"}

AskFn = Callable[[Session, Executive, str], Trace]  # (the asker's session, executive, question)


class ApiError(Exception):
    """A refusal sent to the caller as OpenAI-style error JSON."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code}}


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


def completion(trace: Trace) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": MODEL_ID,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": trace.answer}, "finish_reason": "stop"}],
        "usage": usage(trace),
        "memo": trace_summary(trace),
    }


# ------------------------------------------------------------------------------ refusal budget
@dataclass
class RefusalBudget:
    """How many unauthenticated requests are audited one by one, per client and in all, in each
    window; the rest get 429 and are counted into one ``api.refused.summary`` entry per window."""

    per_client: int = 30
    total: int = 120
    window_s: float = 60.0
    max_clients: int = 4096  # distinct clients counted per window (the rest are counted as "other")
    _start: float = field(default_factory=time.monotonic, init=False, repr=False)
    _audited: Counter[str] = field(default_factory=Counter, init=False, repr=False)
    _held: Counter[str] = field(default_factory=Counter, init=False, repr=False)
    _routes: Counter[str] = field(default_factory=Counter, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def admit(self, client: str, path: str) -> tuple[bool, dict[str, Any] | None]:
        """(audit this one?, a summary of the window just ended, to be written first)."""
        with self._lock:
            ended = self._roll()
            if self._audited[client] < self.per_client and sum(self._audited.values()) < self.total:
                self._audited[client] += 1
                return True, ended
            key = client if client in self._held or len(self._held) < self.max_clients else "other"
            self._held[key] += 1
            self._routes[path[:100] if len(self._routes) < 100 or path[:100] in self._routes else "other"] += 1
            return False, ended

    def flush(self, force: bool = False) -> dict[str, Any] | None:
        """The summary of a window that has ended (or of the current one, ``force``), if any was held."""
        with self._lock:
            return self._roll(force)

    def _roll(self, force: bool = False) -> dict[str, Any] | None:
        now = time.monotonic()
        if not force and now - self._start < self.window_s:
            return None
        summary = None
        if self._held:
            summary = {"requests": sum(self._held.values()), "clients": len(self._held),
                       "top_clients": dict(self._held.most_common(20)), "routes": dict(self._routes.most_common(20)),
                       "window_s": round(now - self._start, 1), "status": 429,
                       "audited_individually": sum(self._audited.values())}
        self._start, self._audited, self._held, self._routes = now, Counter(), Counter(), Counter()
        return summary


# ------------------------------------------------------------------------------ the server
class ApiServer:
    """The HTTP API around one :class:`Executive` (built by the caller: tests inject their own).

    ``port=0`` picks a free port (see :attr:`url`); the socket is bound here, so a port in use is
    an ``OSError`` at once. :meth:`start` serves from a background thread, :meth:`stop` stops
    accepting, lets in-flight requests finish and closes.
    """

    engine = "uvicorn+starlette"

    def __init__(
        self,
        session: Session | Vault,
        executive: Executive,
        host: str = "127.0.0.1",
        port: int = 8750,
        ask: AskFn | None = None,
        queue_timeout: float = 600.0,
        max_body: int = MAX_BODY_BYTES,
        log: Callable[[str], None] | None = None,
        tls: ssl.SSLContext | None = None,
        budget: RefusalBudget | None = None,
        graceful_timeout: float | None = None,
    ) -> None:
        if isinstance(session, Vault):  # the session of whoever unlocked it (the server's service account)
            session = Session.of(session, "api")
        self.session = session  # the server's own: each request acts as its token's principal
        self.vault = session.vault
        self.executive = executive
        self.auth = Authenticator(session)
        self.ask = ask or qa.ask
        self.queue_timeout = queue_timeout
        self.max_body = max_body
        self.log = log
        self.tls = tls
        self.budget = budget or RefusalBudget()
        self.model_lock = threading.Lock()  # the models answer one question at a time
        self.started = int(time.time())
        self._gate: asyncio.Lock | None = None  # questions wait here, on the event loop, not in a thread
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind((host, port))
            self._sock.listen(2048)
        except OSError:
            self._sock.close()
            raise
        self.server_address = self._sock.getsockname()
        app = Starlette(routes=[Route("/{path:path}", _Endpoint(self))], lifespan=self._lifespan)
        config = uvicorn.Config(app, log_config=None, access_log=False, proxy_headers=False, server_header=False,
                                lifespan="on", timeout_keep_alive=10, timeout_graceful_shutdown=graceful_timeout,
                                ssl_context_factory=(lambda _config, _default: tls) if tls is not None else None)
        self._uvicorn = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.tls else 'http'}://{host}:{port}"

    @property
    def stopping(self) -> bool:
        return self._uvicorn.should_exit

    def start(self) -> "ApiServer":
        def run() -> None:
            try:
                self._uvicorn.run(sockets=[self._sock])
            except BaseException as exc:  # noqa: BLE001 - reported by start() to the caller
                self._failure = exc

        self._thread = threading.Thread(target=run, name="memo-api", daemon=True)
        self._thread.start()
        while not self._uvicorn.started and self._thread.is_alive():
            time.sleep(0.01)
        if not self._uvicorn.started:
            raise MemoError(f"the API server did not start: {self._failure or 'unknown error'}")
        return self

    def stop(self) -> None:
        """Stop accepting, let in-flight requests finish, close the socket; write the last summary."""
        self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join()
        self._sock.close()
        self._write_summary(self.budget.flush(force=True))

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        async def summaries() -> None:
            while True:
                await asyncio.sleep(self.budget.window_s)
                await anyio.to_thread.run_sync(lambda: self._write_summary(self.budget.flush()))

        self._gate = asyncio.Lock()
        task = asyncio.create_task(summaries())
        try:
            yield
        finally:
            task.cancel()

    # ------------------------------------------------------------------ work done in threads
    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{
            "id": MODEL_ID, "object": "model", "created": self.started, "owned_by": "memo",
            "memory_version": self.executive.memory_version,
            "executive": self.executive.executive_model.identity, "memory": self.executive.memory_model.identity,
        }]}

    def answer(self, question: str, asker: Session) -> Trace:
        """Run one question through the (locked) executive, as the asker (audited as ``qa.ask``)."""
        if not self.model_lock.acquire(timeout=self.queue_timeout):
            raise ApiError(503, f"the appliance is busy answering other questions; retry later (waited {self.queue_timeout:.0f} s)",
                           type_="server_error", code="busy")
        try:
            return self.ask(asker, self.executive, question)
        finally:
            self.model_lock.release()

    def permit(self, asker: Session) -> None:
        """Refuse (403, audited as ``access.refused``) a principal whose roles do not grant asking."""
        try:
            asker.require("ask")
        except AccessRefused as exc:
            raise ApiError(403, str(exc), type_="permission_error", code="permission_denied") from None

    def _write_summary(self, summary: dict[str, Any] | None) -> None:
        if summary:
            try:
                self.vault.audit.append(UNAUTHENTICATED, "api.refused.summary", None, **summary)
            except MemoError as exc:
                print(f"memo api: could not audit a refusal summary: {exc}", file=sys.stderr)

    def audit(self, user: TokenInfo | None, path: str, details: dict[str, Any]) -> None:
        self.vault.audit.append(user.user if user else UNAUTHENTICATED, "api.request", path[:200],
                                token_id=user.id if user else None, **details)


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class _Endpoint:
    """Every request, whatever its method and path, comes through here (a plain ASGI app, so the
    router hands over any method instead of answering 405 itself in plain text)."""

    def __init__(self, server: ApiServer) -> None:
        self.server = server

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        response = await self.handle(request)
        await response(scope, receive, send)

    async def handle(self, request: Request) -> Response:
        srv = self.server
        started = time.monotonic()
        method, path = request.method, request.url.path
        client = request.client.host if request.client else "?"
        if path == "/healthz" and method in ("GET", "HEAD"):
            return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})
        user: TokenInfo | None = None
        details: dict[str, Any] = {}
        unread = method not in ("GET", "HEAD", "DELETE", "OPTIONS")
        try:
            try:
                asker, user = await anyio.to_thread.run_sync(srv.auth.authenticate, _bearer(request))
            except TokenError as exc:
                raise ApiError(401, str(exc), code="invalid_api_key", headers={"WWW-Authenticate": 'Bearer realm="memo"'}) from None
            expected = ROUTES.get(path)
            if expected is None:
                raise ApiError(404, f"no route {path[:200]}: use /v1/chat/completions, /v1/ask, /v1/models or /healthz", code="not_found")
            if method != expected and not (expected == "GET" and method == "HEAD"):
                raise ApiError(405, f"{path} takes {expected}", code="method_not_allowed", headers={"Allow": expected})
            await anyio.to_thread.run_sync(srv.permit, asker)
            if expected == "GET":
                status, body = 200, srv.models()
            else:
                payload = await self._read_json(request)
                unread = False
                question = check_question(payload.get("question") if path == "/v1/ask" else question_from_chat(payload))
                trace = await self._answer(question, asker)
                details["memory_version"] = trace.memory_version
                status, body = 200, trace.to_dict() if path == "/v1/ask" else completion(trace)
            headers: dict[str, str] = {}
        except ApiError as exc:
            status, body, headers = exc.status, exc.body(), dict(exc.headers)
            details["error"] = exc.message
        except IntegrityError as exc:  # e.g. an older catalog put back under the running server
            print(f"memo api: integrity failure on {method} {path}: {exc}", file=sys.stderr)
            status, headers = 503, {}
            body = ApiError(503, "the vault failed an integrity check; the operator must check the appliance",
                            "server_error", "vault_integrity").body()
            details["error"] = str(exc)
        except MemoError as exc:
            status, body, headers = 500, ApiError(500, str(exc), "server_error", "answer_failed").body(), {}
            details["error"] = str(exc)
        except Exception as exc:  # a bug: the caller learns nothing internal, the operator sees it
            print(f"memo api: internal error on {method} {path}: {type(exc).__name__}: {exc}", file=sys.stderr)
            status, headers = 500, {}
            body = ApiError(500, "internal error; the operator can see it in the server log", "server_error", "internal").body()
            details["error"] = f"{type(exc).__name__}: {exc}"[:500]
        if unread:
            await self._drain(request)
        audited = True
        if user is None:
            audited, ended = srv.budget.admit(client, path)
            if ended:
                await anyio.to_thread.run_sync(srv._write_summary, ended)
            if not audited:
                status, headers = 429, {"Retry-After": str(int(srv.budget.window_s))}
                body = ApiError(429, "too many unauthenticated requests from this client; send a valid token or retry later",
                                code="rate_limited").body()
        if audited:
            # the audit entry is written before the response goes out: no answer leaves unrecorded
            details.update(method=method[:16], status=status, client=client,
                           latency_ms=round((time.monotonic() - started) * 1000, 1))
            try:
                await anyio.to_thread.run_sync(srv.audit, user, path, details)
            except Exception as exc:
                print(f"memo api: audit write failed, response withheld: {type(exc).__name__}: {exc}", file=sys.stderr)
                status, headers = 500, {}
                body = ApiError(500, "the audit log could not be written; the operator must check the appliance",
                                "server_error", "audit_failed").body()
        if srv.log:
            srv.log(f"{client} {method[:16]} {path[:200]} {status} {(time.monotonic() - started) * 1000:.0f} ms")
        headers["Cache-Control"] = "no-store"
        if srv.stopping:
            headers["Connection"] = "close"
        return JSONResponse(body, status_code=status, headers=headers)

    async def _read_json(self, request: Request) -> dict[str, Any]:
        if "transfer-encoding" in request.headers:
            raise ApiError(411, "chunked bodies are not supported: send Content-Length", code="length_required")
        length_header = request.headers.get("content-length")
        if length_header is None:
            raise ApiError(411, "Content-Length is required", code="length_required")
        try:
            length = int(length_header)
            if length < 0:
                raise ValueError
        except ValueError:
            raise ApiError(400, "Content-Length is not a number", code="bad_length") from None
        limit = self.server.max_body
        if length > limit:
            raise ApiError(413, f"request body is {length} bytes; the limit is {limit}", code="body_too_large")
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limit:
                raise ApiError(413, f"request body exceeds the limit of {limit} bytes", code="body_too_large")
        try:
            body = json.loads(bytes(raw))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, f"request body is not valid JSON ({exc.msg if hasattr(exc, 'msg') else 'not UTF-8'})", code="invalid_json") from None
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object", code="invalid_json")
        return body

    async def _drain(self, request: Request) -> None:
        """Read and drop a body the request was refused before reading, up to DRAIN_BYTES, so the
        client gets its answer instead of a reset (beyond that uvicorn closes the connection)."""
        if request.headers.get("content-length", "0").isdigit() and int(request.headers.get("content-length", "0")) <= DRAIN_BYTES:
            try:
                async for _ in request.stream():
                    pass
            except Exception:  # noqa: BLE001 - the client went away or the body was already read
                pass

    async def _answer(self, question: str, asker: Session) -> Trace:
        srv = self.server
        assert srv._gate is not None
        try:
            await asyncio.wait_for(srv._gate.acquire(), timeout=srv.queue_timeout)
        except asyncio.TimeoutError:
            raise ApiError(503, f"the appliance is busy answering other questions; retry later (waited {srv.queue_timeout:.0f} s)",
                           type_="server_error", code="busy") from None
        try:
            return await anyio.to_thread.run_sync(srv.answer, question, asker)
        finally:
            srv._gate.release()


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
