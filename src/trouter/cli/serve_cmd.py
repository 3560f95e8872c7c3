"""``trouter serve``: the OpenAI-compatible routing proxy (one-off routing is ``trouter route``)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer


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
        allow_partial_pool: bool = typer.Option(
            False, help="Route among the models router and pool share when the pool lacks some."
        ),
        max_body_bytes: int = typer.Option(1_000_000, help="Larger request bodies get 413."),
        max_attempts: int = typer.Option(3, help="Upstream calls per request, fallbacks included."),
        timeout: float = typer.Option(60.0, help="Upstream timeout in seconds."),
        log_level: str = typer.Option("info", help="uvicorn log level."),
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
        import torch
        import uvicorn

        from trouter.serving.proxy import ProxySettings, create_app

        if torch_threads > 0:
            torch.set_num_threads(torch_threads)
        service, pool_obj = _load(model_dir, pool, allow_partial_pool)
        settings = ProxySettings(
            max_body_bytes=max_body_bytes, max_attempts=max_attempts, upstream_timeout_s=timeout
        )
        try:
            proxy = create_app(service, pool_obj, settings)
        except ValueError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from err
        service.route("warm-up: load the encoder before the first request")
        logging.basicConfig(level=log_level.upper())
        typer.echo(
            f"routing among {len(service.models)} models with {service.router_name} "
            f"from {model_dir}; listening on http://{host}:{port}/v1"
        )
        # Keep idle client connections longer than uvicorn's 5 s default: under load a client
        # reusing a connection the server just closed sees a reset (ReadError) instead of a reply.
        uvicorn.run(proxy, host=host, port=port, log_level=log_level, timeout_keep_alive=75)
