"""``python -m appliance.llm.serve --model FILE.gguf --port N``: llama-cpp-python's OpenAI-compatible
server, started with the appliance's CPU safeguards.

Plain ``python -m llama_cpp.server`` takes half the cores and, on machines whose AMX kernels fault,
dies at its first prompt. This wrapper probes the CPU kernels (as :mod:`appliance.llm.llamacpp`
does), picks threads from the cores free now unless ``--n_threads`` is given, and otherwise passes
every argument through unchanged. It needs the server extras (fastapi, uvicorn, sse-starlette,
starlette-context, pydantic-settings).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys

import llama_cpp.llama_cpp as C

from appliance.llm.cpu import advise_threads
from appliance.llm.llamacpp import extra_buffers_safe


def _without_extra_buffers() -> None:
    """Make every model the server loads use llama.cpp's generic CPU kernels."""
    default = C.llama_model_default_params

    def params() -> C.llama_model_params:
        p = default()
        p.use_extra_bufts = False
        return p

    C.llama_model_default_params = params  # llama_cpp.Llama reads it through this module


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--model")
    pre.add_argument("--n_threads", type=int)
    ns, _ = pre.parse_known_args(args)
    if ns.model:
        key = hashlib.sha256(f"{os.path.realpath(ns.model)}:{os.stat(ns.model).st_mtime_ns}".encode()).hexdigest()
        if not extra_buffers_safe(ns.model, key):
            _without_extra_buffers()
    if ns.n_threads is None:
        threads = str(advise_threads())
        args += ["--n_threads", threads, "--n_threads_batch", threads]
    from llama_cpp.server.__main__ import main as server_main

    sys.argv = ["llama_cpp.server", *args]
    server_main()


if __name__ == "__main__":
    main()
