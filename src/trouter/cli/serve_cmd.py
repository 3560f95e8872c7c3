"""``trouter serve``: the OpenAI-compatible routing proxy (one-off routing is ``trouter route``)."""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import typer

#: How ``serve --workers N`` hands its configuration to the worker processes uvicorn spawns.
WORKER_CONFIG_ENV = "TROUTER_SERVE_CONFIG"


def _load(model_dir: Path, pool_file: Path | None, allow_partial_pool: bool):
    """Router + pool, or a clear message and exit code 2 on any configuration error."""
    from trouter.serving.api import load

    pool = None
    try:
        if pool_file is not None:
            from trouter.llm.pool import Pool

            pool = Pool.load(pool_file)
        service = load(model_dir, pool, allow_partial_pool=allow_partial_pool)
    except (OSError, ValueError, KeyError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    return service, pool


def _build_app(config: dict):
    """The proxy app for one process: load router and pool, check keys, warm the encoder."""
    from trouter.serving.proxy import ProxySettings, create_app

    if config["torch_threads"] > 0:
        from threadpoolctl import threadpool_limits

        threadpool_limits(config["torch_threads"])  # numpy's BLAS (the kNN product) as well
    service, pool = _load(Path(config["model_dir"]), Path(config["pool"]), config["partial"])
    try:
        proxy = create_app(service, pool, ProxySettings(**config["settings"]))
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    service.route("warm-up: load the encoder before the first request")
    torch = sys.modules.get("torch")  # the minilm encoder's; the static encoder has none
    if torch is not None and config["torch_threads"] > 0:
        torch.set_num_threads(config["torch_threads"])
    # Torch, LiteLLM and the router leave millions of long-lived objects; each full garbage
    # collection walked them all (11% of the CPU at 200 in flight). Freezing them exempts
    # them; what requests allocate is still collected.
    gc.collect()
    gc.freeze()
    return service, proxy


def worker_app():
    """uvicorn's app factory in each ``--workers`` process (configuration from the env)."""
    config = json.loads(os.environ[WORKER_CONFIG_ENV])
    logging.basicConfig(level=config["log_level"].upper())
    return _build_app(config)[1]


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the top-level app."""

    @app.command("serve")
    def serve(
        model_dir: Path = typer.Option(..., "--model-dir", help="Directory of a trained router."),
        pool: Path = typer.Option(
            ...,
            "--pool",
            help="Pool YAML: name, litellm_model, api_base, api_key_env, prices per model.",
        ),
        host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
        port: int = typer.Option(8000, help="TCP port."),
        workers: int = typer.Option(
            1, min=1, help="Worker processes sharing the port (metrics are summed over all)."
        ),
        allow_partial_pool: bool = typer.Option(
            False, help="Route among the models router and pool share when the pool lacks some."
        ),
        max_body_bytes: int = typer.Option(1_000_000, help="Larger request bodies get 413."),
        max_attempts: int = typer.Option(3, help="Upstream calls per request, fallbacks included."),
        timeout: float = typer.Option(60.0, help="Upstream timeout in seconds."),
        upstream: str = typer.Option(
            "auto",
            help="auto: OpenAI-compatible upstreams (litellm_model openai/...) over one "
            "pooled aiohttp client, other providers via LiteLLM; httpx: the same over httpx; "
            "litellm: everything via LiteLLM.",
        ),
        log_level: str = typer.Option("info", help="uvicorn log level."),
        access_log: bool = typer.Option(False, help="Log one line per request (costs CPU)."),
        torch_threads: int = typer.Option(
            1, help="Threads for the query encoder (0 = torch's default: one per core)."
        ),
    ) -> None:
        """Serve an OpenAI-compatible /v1/chat/completions that routes each request.

        Use model trouter-balanced, trouter-cost-first or trouter-performance-first to route,
        or a pool model's name to call it directly. Keys are read from the environment
        variables named in the pool (api_key_env) and never logged.

        The encoder runs on one thread by default: the event loop needs a core too, and on a
        busy machine two spinning torch threads made routing several times slower (see
        scripts/bench_serving.py).
        """
        import uvicorn

        if upstream not in ("auto", "httpx", "litellm"):
            typer.echo(
                f"error: --upstream must be auto, httpx or litellm, not {upstream!r}", err=True
            )
            raise typer.Exit(2)
        config = {
            "model_dir": str(model_dir.resolve()),
            "pool": str(pool.resolve()),
            "partial": allow_partial_pool,
            "torch_threads": torch_threads,
            "log_level": log_level,
            "settings": {
                "max_body_bytes": max_body_bytes,
                "max_attempts": max_attempts,
                "upstream_timeout_s": timeout,
                "upstream": upstream,
            },
        }
        # Check everything once here, so a bad router or pool fails before any worker starts.
        service, proxy = _build_app(config)
        logging.basicConfig(level=log_level.upper())
        typer.echo(
            f"routing among {len(service.models)} models with {service.router_name} "
            f"({service.encoder} encoder) from {model_dir}; listening on "
            f"http://{host}:{port}/v1 with {workers} worker(s)"
        )
        # Keep idle client connections longer than uvicorn's 5 s default: under load a client
        # reusing a connection the server just closed sees a reset (ReadError) instead of a reply.
        options = {
            "host": host,
            "port": port,
            "log_level": log_level,
            "timeout_keep_alive": 75,
            "access_log": access_log,
            # X-Forwarded-* rewriting is per request work for a client address nobody reads
            "proxy_headers": False,
        }
        if workers == 1:
            uvicorn.run(proxy, **options)
            return
        with tempfile.TemporaryDirectory(prefix="trouter-metrics-") as metrics_dir:
            # Router files are only read, so the workers share them; metrics go to per-pid
            # files summed by prometheus_client's multiprocess collector.
            os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", metrics_dir)
            os.environ[WORKER_CONFIG_ENV] = json.dumps(config)
            # A worker loads router, encoder and LiteLLM before it answers the supervisor's
            # health pings: on a busy machine that takes minutes, not uvicorn's default 5 s.
            uvicorn.run(
                "trouter.cli.serve_cmd:worker_app",
                factory=True,
                workers=workers,
                timeout_worker_healthcheck=600,
                **options,
            )
