"""Real llama.cpp OpenAI-compatible servers (llama-cpp-python's, through ``appliance.llm.serve``) on
127.0.0.1, started as subprocesses for the pool's tests and benchmark, each on the cores given."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LlamaServer:
    """One server process: ``url`` is its ``/v1`` base; ``cpus`` pins it (``taskset``) when given."""

    model: Path
    log: Path
    alias: str = "smollm2"
    threads: int = 1
    cpus: str | None = None
    n_ctx: int = 1024
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "LlamaServer":
        cmd = [sys.executable, "-m", "appliance.llm.serve", "--model", str(self.model), "--model_alias", self.alias,
               "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.n_ctx),
               "--n_threads", str(self.threads), "--n_threads_batch", str(self.threads)]
        if self.cpus is not None:
            cmd = ["taskset", "-c", self.cpus, *cmd]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
        return self

    def wait_ready(self, timeout: float = 180.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start: {self.log.read_text()[-2000:]}") from None
                time.sleep(0.5)

    def kill(self) -> None:
        """SIGKILL: what a crashed node looks like to its clients (connections reset, then refused)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def start_all(servers: list[LlamaServer]) -> list[LlamaServer]:
    """Start every server at once (loading in parallel), then wait for each."""
    for s in servers:
        s.start()
    try:
        for s in servers:
            s.wait_ready()
    except BaseException:
        for s in servers:
            s.stop()
        raise
    return servers


def pool_policy(directory: Path, servers: list[tuple[str, str]], pool: str = "gen", in_flight: int = 2, retries: int = 4,
                backoff_s: float = 0.2, timeout_s: float = 120) -> Path:
    """A policy folder approving each (name, url) as a generator that may read document text, and
    the pool ``pool`` of all of them."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = ["version: 1", "endpoints:",
             "  - {name: local, kind: llamacpp, model: smollm2-135m-instruct-q4_1, purposes: [generator, executive]}"]
    for name, url in servers:
        lines.append(f"  - {{name: {name}, kind: openai, url: '{url}', model: smollm2, purposes: [generator], "
                     f"data_allowed_to_leave: [document_text], json_mode: json_object, timeout_s: {timeout_s}}}")
    lines += ["pools:", f"  - name: {pool}", f"    endpoints: [{', '.join(n for n, _ in servers)}]",
              f"    in_flight: {in_flight}", f"    retries: {retries}", f"    backoff_s: {backoff_s}", "    max_backoff_s: 5"]
    (directory / "executives.yaml").write_text("\n".join(lines) + "\n")
    return directory
