"""Start and stop llama.cpp's OpenAI-compatible server for local GGUF models.

Each model runs in its own ``llama_cpp.server`` process on loopback, so the rest of trouter
reaches it exactly as it reaches a remote provider: through LiteLLM with an ``api_base``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from trouter.config import cache_dir
from trouter.local.catalogue import LocalModel
from trouter.local.fetch import verified_path


class LocalServerError(RuntimeError):
    """llama.cpp's server is not installed, failed to start, or died."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class RunningModel:
    model: LocalModel
    port: int
    process: subprocess.Popen
    log_path: Path

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def _require_llama_cpp() -> None:
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError as err:
        raise LocalServerError(
            "the local backend needs llama-cpp-python with its server extra: "
            "pip install -e '.[local]' (compiles llama.cpp, about 6 minutes on 2 cores)"
        ) from err


def start_model(
    model: LocalModel,
    n_ctx: int = 4096,
    n_threads: int | None = None,
    startup_timeout_s: float = 180.0,
    port: int | None = None,
) -> RunningModel:
    """Launch one model server (on ``port``, else a free one) and wait for ``/v1/models``."""
    _require_llama_cpp()
    path = verified_path(model)
    port = port or free_port()
    log_path = cache_dir() / "logs" / f"llama-server-{model.name}-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    threads = n_threads or max(1, os.cpu_count() or 1)
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(path),
        "--model_alias",
        model.name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--n_threads",
        str(threads),
    ]
    log = open(log_path, "wb")  # noqa: SIM115  (owned by the child process)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    running = RunningModel(model, port, process, log_path)
    deadline = time.monotonic() + startup_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise LocalServerError(f"llama.cpp server for {model.name} exited:\n{tail}")
        try:
            if httpx.get(f"{running.api_base}/models", timeout=2.0).status_code == 200:
                return running
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_model(running)
    raise LocalServerError(
        f"llama.cpp server for {model.name} did not start in "
        f"{startup_timeout_s:.0f} s; log: {log_path}"
    )


def stop_model(running: RunningModel) -> None:
    if running.process.poll() is None:
        running.process.terminate()
        try:
            running.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            running.process.kill()
            running.process.wait()


@contextmanager
def serve_models(models: Sequence[LocalModel], **options) -> Iterator[list[RunningModel]]:
    """Run the given models for the duration of the block; always stops them."""
    running: list[RunningModel] = []
    try:
        for model in models:
            running.append(start_model(model, **options))
        yield running
    finally:
        for item in running:
            stop_model(item)
