"""The default offline pool: the catalogue's GGUF models behind local llama.cpp servers.

Every trouter stage that calls an LLM (taxonomy, QA synthesis, labelling, the cold-start
experiment) takes a :class:`~trouter.llm.pool.Pool`. Without a ``--pool`` flag the CLI uses
this one, so the whole cold-start pipeline runs with no flags, no keys and no network.

Each model gets a fixed loopback port (unless it is taken): the LLM cache keys on the
``api_base``, so a stable URL is what lets a rerun answer from the cache instead of the CPU.
Local servers answer one request at a time and a 1.5B model may need minutes for a long
answer on a busy 2-core machine, so clients talking to them get a long timeout and one call
in flight across the whole pool (:func:`client_options`): each server then computes with
every core, which on 2 cores was measured 1.8x faster than two single-threaded servers
answering at once (``results/local-pool/throughput.json``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import yaml

from trouter.local.catalogue import CATALOGUE, GENERATOR, LocalModel, get_local_model
from trouter.local.server import RunningModel, check_servers, start_model, stop_model

#: The offline defaults: every catalogue model is in the pool; the largest generates and judges.
DEFAULT_MODELS: tuple[str, ...] = tuple(CATALOGUE)
DEFAULT_GENERATOR = GENERATOR
DEFAULT_JUDGE = GENERATOR
#: First of the fixed ports, one per catalogue model in catalogue order.
BASE_PORT = 18431
#: Seconds one local completion may take (a 1.5B model writes ~2-10 tokens/s on a shared CPU).
LOCAL_TIMEOUT_S = 1800.0


def local_threads() -> int:
    """llama.cpp threads per server: ``TROUTER_LOCAL_THREADS``, else every core.

    Every core, because trouter's clients keep one call in flight across a local pool, so
    only one server computes at a time. More threads than *free* cores makes llama.cpp's
    spinning workers collide (on a 2-core machine shared with other jobs, one thread was
    measured 2.5x faster than two), so set ``TROUTER_LOCAL_THREADS`` lower when the CPU is
    shared or several clients call the servers at once.
    """
    value = os.environ.get("TROUTER_LOCAL_THREADS")
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            raise ValueError(f"TROUTER_LOCAL_THREADS={value!r} is not an integer") from None
    return max(1, os.cpu_count() or 1)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def preferred_port(model: LocalModel) -> int | None:
    """The model's fixed port when it is free; None lets the server pick any free port."""
    port = BASE_PORT + list(CATALOGUE).index(model.name)
    return port if _port_free(port) else None


def endpoint_dict(running: RunningModel) -> dict[str, Any]:
    """One pool YAML entry for a running local model (keyless, explicit stand-in prices)."""
    price = running.model.price_per_mtok
    return {
        "name": running.model.name,
        "litellm_model": f"openai/{running.model.name}",
        "api_base": running.api_base,
        "input_price_per_mtok": price,
        "output_price_per_mtok": price,
    }


def pool_from_running(running: Sequence[RunningModel]) -> Any:
    """A validated :class:`Pool` for the running servers."""
    from trouter.llm.pool import Pool

    return Pool.from_dict({"models": [endpoint_dict(r) for r in running]}, source="<offline>")


def write_pool_yaml(running: Sequence[RunningModel], path: str | Path) -> Path:
    """Write the pool file for running servers (the format ``Pool.load`` reads)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"models": [endpoint_dict(r) for r in running]}
    header = "# offline pool written by `trouter models serve`; valid while it runs\n"
    path.write_text(header + yaml.safe_dump(document, sort_keys=False))
    return path


def _resolve_models(models: Sequence[str] | None, extra: Sequence[str | None]) -> list[LocalModel]:
    names = list(models or DEFAULT_MODELS)
    for name in extra:  # the generator / judge must be served even if not routed to
        if name and name not in names:
            names.append(name)
    return [get_local_model(n) for n in names]


@contextmanager
def serve_local(
    models: Sequence[str] | None = None, **options: Any
) -> Iterator[list[RunningModel]]:
    """Start the named catalogue models on their fixed ports; always stops them.

    An error inside the block while one of them is dead is reported as that death
    (:class:`~trouter.local.server.ServerDiedError`), after every server is stopped.
    """
    options.setdefault("n_threads", local_threads())
    with ExitStack() as stack:
        running: list[RunningModel] = []
        for model in _resolve_models(models, []):
            item = start_model(model, port=preferred_port(model), **options)
            stack.callback(stop_model, item)
            running.append(item)
        try:
            yield running
        except Exception:
            check_servers(running)
            raise


@contextmanager
def offline_pool(
    models: Sequence[str] | None = None,
    generator: str | None = None,
    judge: str | None = None,
    **options: Any,
) -> Iterator[Any]:
    """Start local servers for ``models`` (default: the whole catalogue), yield the Pool.

    ``generator`` / ``judge`` are started too when they are not among ``models``. Fails with
    :class:`~trouter.local.fetch.ModelFetchError` naming the model when one is not fetched.
    """
    names = [m.name for m in _resolve_models(models, [generator, judge])]
    with serve_local(names, **options) as running:
        yield pool_from_running(running)


def _endpoints(pool: Any) -> list[Any]:
    """The endpoints of a Pool, a list of endpoints, or one endpoint."""
    if isinstance(pool, list | tuple):
        return list(pool)
    return list(getattr(pool, "models", None) or [pool])


def is_local(pool: Any) -> bool:
    """True when every endpoint of ``pool`` (a Pool, endpoints, or one) is on loopback."""
    endpoints = _endpoints(pool)
    bases = [getattr(m, "api_base", None) or "" for m in endpoints]
    return all(b.startswith(("http://127.0.0.1", "http://localhost")) for b in bases)


def all_llama_cpp(pool: Any) -> bool:
    """True when every endpoint of ``pool`` is a local llama.cpp catalogue model."""
    return all(is_llama_cpp(e) for e in _endpoints(pool))


def client_options(pool: Any) -> dict[str, Any]:
    """``LLMClient`` keyword arguments suited to ``pool``: long timeout and one call in flight
    when it is served by local llama.cpp (requests queue; a queued one must not time out;
    one server using every core beats several sharing them).
    Other pools (remote providers, a stand-in on loopback) keep the client's defaults."""
    if not all_llama_cpp(pool):
        return {}
    return {"timeout_s": LOCAL_TIMEOUT_S, "max_concurrency": 1}


def is_llama_cpp(endpoint: Any) -> bool:
    """True for an endpoint served by :func:`serve_local` (a catalogue model on loopback)."""
    name = (getattr(endpoint, "litellm_model", "") or "").removeprefix("openai/")
    return name in CATALOGUE and is_local(endpoint)


def backend_response_format(endpoint: Any, response_format: dict[str, Any]) -> dict[str, Any]:
    """``response_format`` as the endpoint's server understands it.

    llama-cpp-python's server rejects OpenAI's ``{"type": "json_schema", ...}`` (HTTP 500)
    but accepts ``{"type": "json_object", "schema": ...}`` and compiles that schema into a
    grammar, so local models get the same guarantee under their own spelling.
    """
    if is_llama_cpp(endpoint) and response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        return {"type": "json_object", "schema": schema} if schema else {"type": "json_object"}
    return response_format


def register_schema_support(pool: Any) -> None:
    """Tell LiteLLM that local endpoints accept a JSON-schema ``response_format``.

    LiteLLM does not know our ``openai/<name>`` aliases, so callers that ask it first (the
    labelling judge) would fall back to free text, which a 135M-1.5B judge often gets wrong.
    llama.cpp's server compiles the schema into a grammar, so the reply always parses.
    """
    from trouter.llm.client import litellm  # after trouter.llm set the offline price map

    endpoints = _endpoints(pool)
    litellm.register_model(
        {
            e.litellm_model: {
                "litellm_provider": "openai",
                "mode": "chat",
                "supports_response_schema": True,
                "input_cost_per_token": (e.input_price_per_mtok or 0.0) / 1e6,
                "output_cost_per_token": (e.output_price_per_mtok or 0.0) / 1e6,
            }
            for e in endpoints
            if is_llama_cpp(e)
        }
    )


def make_client(pool: Any, **overrides: Any) -> Any:
    """The one ``LLMClient`` for ``pool`` (shared sqlite cache, local-friendly timeouts)."""
    from trouter.llm import LLMClient

    if any(is_llama_cpp(e) for e in _endpoints(pool)):
        register_schema_support(pool)
    options = {**client_options(pool), **overrides}
    options.setdefault("response_format_adapter", backend_response_format)
    return LLMClient(**options)


@contextmanager
def resolve_pool(pool_path: str | Path | None) -> Iterator[Any]:
    """The user's pool file when given, else the offline pool (servers run for the block)."""
    if pool_path is not None:
        from trouter.llm.pool import Pool

        yield Pool.load(pool_path)
        return
    with offline_pool() as pool:
        yield pool


def command_pool(pool_path: str | Path | None) -> Any:
    """For a CLI command: like :func:`resolve_pool`, with servers stopped when it ends.

    Uses click's context so the calling command needs no ``with`` block (a one-line change
    in each command); outside a click command the servers are stopped at interpreter exit.
    """
    import click

    manager = resolve_pool(pool_path)
    context = click.get_current_context(silent=True)
    if context is not None:
        return context.with_resource(manager)
    import atexit

    pool = manager.__enter__()
    atexit.register(manager.__exit__, None, None, None)
    return pool
