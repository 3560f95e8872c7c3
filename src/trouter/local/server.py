"""Start, watch and stop llama.cpp's OpenAI-compatible server for local GGUF models.

Each model runs in its own server process on loopback (:mod:`trouter.local.llama_launch`:
llama-cpp-python's app with trouter's load options), so the rest of trouter reaches it
exactly as it reaches a remote provider: through LiteLLM with an ``api_base``.

A server that dies while trouter uses it (llama.cpp crashed, the kernel killed it) is an
expected error, not a bug: :class:`ServerDiedError` names the model, how it ended and its
log, and :func:`watch_servers` turns the death into that error within a second, instead of
letting every later call fail through its retries.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx

from trouter.config import cache_dir
from trouter.local.catalogue import LocalModel
from trouter.local.fetch import verified_path

T = TypeVar("T")
#: Seconds between two looks at the servers' processes while a stage runs.
WATCH_INTERVAL_S = 0.5


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
    extra_bufts: bool = True

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


#: Servers this process started and has not stopped (a dead one stays until stopped).
_STARTED: list[RunningModel] = []


def how_it_ended(returncode: int) -> str:
    """``killed by SIGSEGV (segmentation fault)`` or ``exit code 1``."""
    if returncode < 0:
        try:
            number = signal.Signals(-returncode)
        except ValueError:
            return f"killed by signal {-returncode}"
        description = signal.strsignal(number) or ""
        return f"killed by {number.name}" + (f" ({description.lower()})" if description else "")
    return f"exit code {returncode}"


def _last_log_line(log_path: Path) -> str:
    try:
        with open(log_path, "rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - 4096))
            lines = log.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " ".join(lines[-1].split())[:300] if lines else ""


class ServerDiedError(LocalServerError):
    """A model server's process ended while trouter was starting or using it."""

    def __init__(self, running: RunningModel, during: str = "while trouter was using it") -> None:
        self.running = running
        returncode = running.process.poll()
        ended = how_it_ended(returncode) if returncode is not None else "stopped answering"
        last = _last_log_line(running.log_path)
        crash_hint = (
            f" If it crashes again, try TROUTER_LLAMA_EXTRA_BUFTS="
            f"{0 if running.extra_bufts else 1} (llama.cpp's repacked/AMX weight buffers "
            f"were {'on' if running.extra_bufts else 'off'})."
            if returncode is not None and returncode < 0
            else ""
        )
        super().__init__(
            f"the llama.cpp server for {running.model.name} (port {running.port}, pid "
            f"{running.process.pid}) {ended} {during}; the other local servers are stopped. "
            f"Its log is {running.log_path}"
            + (f"; it ends with: {last}" if last else "")
            + f".{crash_hint}"
        )


def _require_llama_cpp() -> None:
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError as err:
        raise LocalServerError(
            "the local backend needs llama-cpp-python with its server extra: "
            "pip install -e '.[local]' (compiles llama.cpp, about 6 minutes on 2 cores)"
        ) from err


def _extra_bufts() -> tuple[bool, str]:
    from trouter.local.llama_launch import ExtraBuftsSettingError, extra_bufts_choice

    try:
        return extra_bufts_choice()
    except ExtraBuftsSettingError as err:
        raise LocalServerError(str(err)) from None


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
    extra_bufts, why = _extra_bufts()
    port = port or free_port()
    log_path = cache_dir() / "logs" / f"llama-server-{model.name}-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    threads = n_threads or max(1, os.cpu_count() or 1)
    command = [
        sys.executable, "-m", "trouter.local.llama_launch",
        "--model", str(path), "--alias", model.name, "--host", "127.0.0.1",
        "--port", str(port), "--n-ctx", str(n_ctx), "--threads", str(threads),
        "--extra-bufts", str(int(extra_bufts)),
    ]  # fmt: skip
    log = open(log_path, "wb")  # noqa: SIM115  (owned by the child process)
    log.write(f"trouter: use_extra_bufts={int(extra_bufts)} ({why})\n".encode())
    log.flush()
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    log.close()  # the child holds its own copy
    running = RunningModel(model, port, process, log_path, extra_bufts)
    _STARTED.append(running)
    deadline = time.monotonic() + startup_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stop_model(running)
            raise ServerDiedError(running, during="while starting")
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
    if running in _STARTED:
        _STARTED.remove(running)
    if running.process.poll() is None:
        running.process.terminate()
        try:
            running.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            running.process.kill()
            running.process.wait()


def dead_servers(running: Iterable[RunningModel] | None = None) -> list[RunningModel]:
    """The servers (default: every one this process started and still runs) that ended."""
    candidates = list(_STARTED if running is None else running)
    return [item for item in candidates if item.process.poll() is not None]


def check_servers(running: Iterable[RunningModel] | None = None) -> None:
    """Raise :class:`ServerDiedError` for the first server that ended; else nothing."""
    dead = dead_servers(running)
    if dead:
        raise ServerDiedError(dead[0])


async def watch_servers(work: Awaitable[T], interval_s: float = WATCH_INTERVAL_S) -> T:
    """Await ``work`` while watching this process's model servers.

    When one dies, ``work`` is cancelled and :class:`ServerDiedError` raised at once (its
    calls would otherwise fail one by one through their retries, or be recorded as
    failed answers). An error of ``work`` raised while a server is dead becomes that
    :class:`ServerDiedError` too: the dead server is the cause worth reporting.
    """
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=interval_s)
            if done:
                break
            if dead_servers():
                task.cancel()
                await asyncio.wait({task})
                break
    except BaseException:
        task.cancel()
        raise
    try:
        return task.result()
    except (Exception, asyncio.CancelledError):
        check_servers()
        raise


def run_watched(work: Awaitable[T]) -> T:
    """``asyncio.run`` of ``work`` under :func:`watch_servers` (a no-op watch when this
    process runs no model server, e.g. with a remote pool)."""
    return asyncio.run(watch_servers(work))


@contextmanager
def serve_models(models: Sequence[LocalModel], **options) -> Iterator[list[RunningModel]]:
    """Run the given models for the duration of the block; always stops them.

    An error inside the block while one of them is dead is reported as that death.
    """
    running: list[RunningModel] = []
    try:
        for model in models:
            running.append(start_model(model, **options))
        try:
            yield running
        except Exception:
            check_servers(running)
            raise
    finally:
        for item in running:
            stop_model(item)
