"""``trouter serve``: the OpenAI-compatible routing proxy; ``trouter keys add``: its client keys."""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import typer

from trouter.cli.errors import fail
from trouter.cli.serve_exposure import check_exposure

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
        raise fail(str(err)) from None
    return service, pool


def _feedback_config(model_dir, router, store, learn, log_text, retention) -> dict | None:
    """``serve``'s store options checked; ``--router online`` learns into
    ``sqlite:///trouter-store.db`` unless ``--store`` names another store."""
    from trouter.store.traffic import parse_span

    if router not in (None, "online"):
        raise fail(
            f"--router takes 'online' (a trained router is served with --model-dir), not {router!r}"
        )
    if (model_dir is None) == (router is None):
        raise fail(
            "give one of --model-dir DIR (a trained router) or --router online (the pool alone)"
        )
    if router == "online" and store is None:
        store = "sqlite:///trouter-store.db"
        typer.echo(f"--router online: decisions and feedback go to {store}", err=True)
    if store is None:
        if learn or log_text:
            raise fail("--learn and --log-text need --store sqlite:///file.db or postgresql://...")
        return None
    try:
        ttl_s = parse_span(retention)
    except ValueError as err:
        raise fail(f"--retention: {err}") from None
    return {
        "store": store,
        "ttl_s": ttl_s,
        "log_text": log_text,
        "learn": learn or router == "online",
    }


def _background_config(judge, budget, judge_rate, feedback) -> dict | None:
    """``--judge``'s settings checked (labels and judge feedback go to the store)."""
    from trouter.serving.background_settings import parse_daily_budget

    if judge is None:
        if judge_rate:
            raise fail("--judge-rate needs --judge MODEL")
        return None
    if feedback is None:
        raise fail("--judge needs a store: --store sqlite:///file.db or --router online")
    try:
        usd = parse_daily_budget(budget)
    except ValueError as err:
        raise fail(f"--label-budget-usd: {err}") from None
    return {"judge": judge, "budget_usd_per_day": usd, "judge_rate": judge_rate}


def _key_ring(config: dict):
    from trouter.serving.auth import KeysFileError, load_key_ring

    keys_file = config.get("api_keys")
    try:
        return load_key_ring(Path(keys_file) if keys_file else None)
    except KeysFileError as err:
        raise fail(str(err)) from None


def _build_app(config: dict):
    """The proxy app for one process: load router and pool, check keys, warm the encoder."""
    from trouter.serving.limits import Limits, use
    from trouter.serving.proxy import ProxySettings, create_app

    if config["torch_threads"] > 0:
        from threadpoolctl import threadpool_limits

        threadpool_limits(config["torch_threads"])  # numpy's BLAS (the kNN product) as well
    if config.get("router") == "online":
        from trouter.llm.pool import Pool
        from trouter.serving.learning import service_from_pool

        pool = Pool.load(Path(config["pool"]))
        service = service_from_pool(pool, config["explore"])
    else:
        service, pool = _load(Path(config["model_dir"]), Path(config["pool"]), config["partial"])
    from trouter.serving.learning import loop_from_config

    feedback = loop_from_config(config.get("feedback"), service)
    limits = Limits(**config["limits"])
    use(limits)
    settings = ProxySettings(**config["settings"], limits=limits)
    try:
        proxy = create_app(
            service, pool, settings, _key_ring(config), feedback, _background(config)
        )
    except ValueError as err:
        raise fail(str(err)) from None
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


def _background(config: dict):
    from trouter.serving.background_settings import BackgroundSettings

    chosen = config.get("background")
    return BackgroundSettings(**chosen) if chosen else None


def worker_app():
    """uvicorn's app factory in each ``--workers`` process (configuration from the env)."""
    config = json.loads(os.environ[WORKER_CONFIG_ENV])
    logging.basicConfig(level=config["log_level"].upper())
    return _build_app(config)[1]


def register(app: typer.Typer) -> None:
    """Add ``serve`` and ``keys`` to the top-level app."""
    keys_app = typer.Typer(help="Client keys of the proxy (stored hashed).", no_args_is_help=True)
    app.add_typer(keys_app, name="keys")

    keys_app.command("add")(keys_add)
    app.command("serve")(serve)


def keys_add(
    name: str = typer.Argument(..., help="Who the key is for (shown in logs and metrics)."),
    file: Path = typer.Option(..., "--file", help="Keys file (YAML), created if absent."),
    policy: str = typer.Option(
        None, help="Policy of model 'trouter' for this key: a scenario or <w_perf>:<w_cost>."
    ),
    daily_budget_usd: float = typer.Option(
        None, min=0, help="USD this key may spend per UTC day (429 once spent)."
    ),
) -> None:
    """Create a key for NAME, store its SHA-256 in FILE and print the key (shown once)."""
    from trouter.serving.auth import KeysFileError, add_key
    from trouter.serving.policy import parse_policy
    from trouter.serving.requests import ProxyError

    if policy is not None:
        try:
            parse_policy(policy)
        except ProxyError as err:
            raise fail(f"--policy: {err.message}") from None
    try:
        key = add_key(file, name, policy, daily_budget_usd)
    except KeysFileError as err:
        raise fail(str(err)) from None
    typer.echo(key)
    typer.echo(f"stored the hash of {name!r}'s key in {file}; it is not shown again", err=True)


def serve(
    model_dir: Path = typer.Option(
        None, "--model-dir", help="Directory of a trained router (or --router online)."
    ),
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
    api_keys: Path = typer.Option(
        None, "--api-keys", help="Keys file of the clients (trouter keys add)."
    ),
    no_auth: bool = typer.Option(
        False, "--no-auth", help="Allow a non-loopback --host without client keys."
    ),
    allowed_host: list[str] = typer.Option(
        None, "--allowed-host", help="Host header value clients use (repeatable)."
    ),
    cors_origin: list[str] = typer.Option(
        None, "--cors-origin", help="Browser origin allowed to call the proxy (repeatable)."
    ),
    allow_partial_pool: bool = typer.Option(
        False, help="Route among the models router and pool share when the pool lacks some."
    ),
    max_body_bytes: int = typer.Option(1_000_000, help="Larger request bodies get 413."),
    max_header_bytes: int = typer.Option(32_768, help="Larger request heads get 431."),
    max_headers: int = typer.Option(100, help="Requests with more headers get 431."),
    header_timeout: float = typer.Option(10.0, help="Seconds for a request head to arrive."),
    body_timeout: float = typer.Option(30.0, help="Seconds for a request body (408)."),
    max_connections: int = typer.Option(
        0, help="Open client connections (0: half of what the open-file limit leaves)."
    ),
    max_attempts: int = typer.Option(3, help="Upstream calls per request, fallbacks included."),
    timeout: float = typer.Option(60.0, help="Upstream timeout in seconds."),
    max_in_flight_per_model: int = typer.Option(
        256, help="Upstream calls in flight per pool model; beyond it 503 or fallback."
    ),
    cooldown_failures: int = typer.Option(
        5, help="Failures within 60 s (no success between) that cool a model down; 0: off."
    ),
    cooldown_s: float = typer.Option(30.0, help="Seconds a cooled-down model is skipped."),
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
    router: str = typer.Option(
        None, "--router", help="online: no --model-dir; start from the pool's prices, learn."
    ),
    store: str = typer.Option(
        None, help="Decision log and feedback: sqlite:///file.db or postgresql://..."
    ),
    learn: bool = typer.Option(False, help="Apply feedback to an online router (--store)."),
    log_text: bool = typer.Option(False, help="Keep query text in the log (a hash otherwise)."),
    retention: str = typer.Option("7d", help="How long decisions and feedback are kept."),
    explore: float = typer.Option(
        0.0, min=0.0, max=0.5, help="--router online: traffic share exploration may take."
    ),
    judge: str = typer.Option(
        None, help="Judge model (pool name or LiteLLM name): background labels (--store)."
    ),
    label_budget_usd: str = typer.Option(
        "5/day", help="--judge: USD per UTC day for background answers and judging."
    ),
    judge_rate: float = typer.Option(
        0.0, min=0.0, max=1.0, help="--judge: share of served answers judged (source=judge)."
    ),
) -> None:
    """Serve an OpenAI-compatible /v1/chat/completions that routes each request.

    Use model trouter (the key's policy), trouter-balanced, trouter-cost-first,
    trouter-performance-first or trouter-<w_perf>:<w_cost> to route, or a pool model's
    name to call it directly. Upstream keys are read from the environment variables named
    in the pool (api_key_env) and never logged. See docs/serving.md.
    """
    from trouter.serving.limits import Limits

    if upstream not in ("auto", "httpx", "litellm"):
        raise fail(f"--upstream must be auto, httpx or litellm, not {upstream!r}")
    feedback = _feedback_config(model_dir, router, store, learn, log_text, retention)
    config = {
        "model_dir": str(model_dir.resolve()) if model_dir else None,
        "router": router,
        "explore": explore,
        "feedback": feedback,
        "background": _background_config(judge, label_budget_usd, judge_rate, feedback),
        "pool": str(pool.resolve()),
        "partial": allow_partial_pool,
        "torch_threads": torch_threads,
        "log_level": log_level,
        "api_keys": str(api_keys.resolve()) if api_keys else None,
        "settings": {
            "max_body_bytes": max_body_bytes,
            "max_attempts": max_attempts,
            "upstream_timeout_s": timeout,
            "upstream": upstream,
            "max_in_flight_per_model": max_in_flight_per_model,
            "cooldown_failures": cooldown_failures,
            "cooldown_s": cooldown_s,
        },
    }
    keys = _key_ring(config)
    if workers > 1 and any(c.daily_budget_usd is not None for c in keys.clients):
        raise fail(
            "daily budgets are counted in the serving process; with --workers N each "
            "worker would allow the whole budget. Use --workers 1 with daily budgets."
        )
    limits = Limits(
        max_header_bytes=max_header_bytes,
        max_headers=max_headers,
        header_timeout_s=header_timeout,
        body_timeout_s=body_timeout,
        allowed_hosts=check_exposure(host, keys.enabled, no_auth, list(allowed_host or [])),
        cors_origins=list(cors_origin or []),
    )
    if max_connections > 0:
        limits.max_connections = max_connections
    config["limits"] = dataclasses.asdict(limits)
    _run(config, limits, keys, host, port, workers, access_log)


def _run(config: dict, limits, keys, host: str, port: int, workers: int, access_log: bool):
    """Load and check everything once, then hand the app to uvicorn (one or N processes)."""
    import uvicorn

    from trouter.serving.limits import uvicorn_options

    log_level = config["log_level"]
    # Check everything once here, so a bad router or pool fails before any worker starts.
    service, proxy = _build_app(config)
    logging.basicConfig(level=log_level.upper())
    typer.echo(
        f"routing among {len(service.models)} models with {service.router_name} "
        f"({service.encoder} encoder) from {config['model_dir'] or 'pool prices'}; listening on "
        f"http://{host}:{port}/v1 with {workers} worker(s); "
        f"{len(keys.clients) or 'no'} client key(s); at most {limits.max_connections} "
        f"connections; Host allow-list {', '.join(limits.allowed_hosts)}"
    )
    options = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "access_log": access_log,
        # X-Forwarded-* rewriting is per request work for a client address nobody reads
        "proxy_headers": False,
        **uvicorn_options(limits, importable=workers > 1),
    }
    if workers == 1:
        uvicorn.run(proxy, **options)
        return
    if getattr(proxy.state, "feedback", None) is not None:
        proxy.state.feedback.close()  # the workers open their own; this one only checked
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
