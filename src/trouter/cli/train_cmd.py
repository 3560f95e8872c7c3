"""``trouter train`` (fit a router and save it) and ``trouter route`` (use a saved router).

Exit codes: 0 success; 1 a run failed (data missing or malformed, fit error); 2 bad usage or
bad input (unknown router or parameter, empty or non-UTF-8 queries, no trained router).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import typer

from trouter.cli.errors import fail
from trouter.encoders import unicode_problem

#: Longest query passed to the encoder. MiniLM reads only its first 256 word pieces, so
#: cutting a longer text changes nothing in the embedding; it only bounds tokeniser time.
MAX_QUERY_CHARS = 100_000


class InputError(ValueError):
    """A query or the stdin stream cannot be routed; the message says which and why."""


# ----- helpers shared by both commands ------------------------------------------------------
def parse_router_params(items: list[str]) -> dict[str, Any]:
    """``key=value`` items -> {key: value}; values are parsed as JSON, else kept as text."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(
                f"{item!r} is not key=value (e.g. lr=0.001)", param_hint="--param"
            )
        try:
            params[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            params[key.strip()] = raw
    return params


def validation_mse(router, validation) -> float:
    """Masked MSE of predicted performance plus that of normalised cost (any router)."""
    prediction = router.predict(list(validation.texts))
    data = validation.select_models(prediction.models)
    total = 0.0
    for pred, true in (
        (prediction.performance, data.performance),
        (prediction.cost, data.normalised_cost),
    ):
        seen = ~np.isnan(true)
        if seen.any():
            total += float(np.mean((np.asarray(pred)[seen] - true[seen]) ** 2))
    return total


def _drop_unobserved_models(train, validation):
    """Leave out models with no observed performance in the training rows: a router would
    predict NaN for them (and could route to a model nothing is known about)."""
    seen = ~np.all(np.isnan(train.performance), axis=0)
    if seen.all():
        return train, validation
    if not seen.any():
        raise fail(f"{train.name}: no model has any observed performance in the train split", 1)
    missing = [name for name, ok in zip(train.model_names, seen, strict=True) if not ok]
    typer.secho(
        f"warning: leaving out {', '.join(missing)}: no observed performance in the "
        f"{len(train)} training rows (every call or verdict failed); the router will not "
        "route to them",
        err=True,
        fg="yellow",
    )
    kept = [name for name, ok in zip(train.model_names, seen, strict=True) if ok]
    return train.select_models(kept), validation.select_models(kept)


def check_query(text: str, where: str) -> str:
    """The query to encode, or an InputError for text that cannot be routed."""
    problem = unicode_problem(text)
    if problem is not None:
        raise InputError(f"{where} {problem}")
    if not text.strip():
        raise InputError(f"{where} is empty (or only whitespace); there is nothing to route")
    if len(text) > MAX_QUERY_CHARS:
        typer.secho(
            f"warning: {where} has {len(text):,} characters; routing on the first "
            f"{MAX_QUERY_CHARS:,} (the encoder reads only the first 256 tokens anyway)",
            err=True,
            fg="yellow",
        )
        return text[:MAX_QUERY_CHARS]
    return text


def parse_stdin(raw: bytes) -> list[str]:
    """Queries from stdin: JSONL objects with a "query" field, or one plain query per line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(
            f"stdin is not valid UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start})"
        ) from None
    queries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        query = line
        if line.lstrip().startswith("{"):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"stdin line {number} is not valid JSON: {err.msg}") from None
            if not isinstance(record, dict) or not isinstance(record.get("query"), str):
                raise InputError(f'stdin line {number}: expected {{"query": "<text>"}}')
            query = record["query"]
        queries.append(check_query(query, f"stdin line {number}"))
    if not queries:
        raise InputError("stdin holds no queries (give one per line, text or JSONL)")
    return queries


def resolve_route_policy(policy: str | None, weights: str | None, max_cost_usd: float | None):
    """The :class:`~trouter.serving.api.Policy` of ``trouter route``: ``--policy`` (a scenario
    name or perf:cost weights, as ``eval --scenario`` takes them) or ``--weights``, and an
    optional ``--max-cost-usd``; bad values are a usage error naming the option."""
    from trouter.evaluation.scenarios import SCENARIOS, resolve_scenarios
    from trouter.serving.api import RoutingRequestError, resolve_policy

    if policy and weights:
        raise typer.BadParameter("give --policy or --weights, not both", param_hint="--weights")
    spec, hint = (weights, "--weights") if weights else (policy or "balanced", "--policy")
    if weights and ":" not in weights:
        raise typer.BadParameter(f"{weights!r} is not perf:cost (e.g. 0.7:-0.3)", param_hint=hint)
    if "," in spec or spec == "all":
        raise typer.BadParameter(f"route takes one policy, not {spec!r}", param_hint=hint)
    try:
        (chosen,) = resolve_scenarios(spec).values()
        if spec in SCENARIOS:
            return resolve_policy(scenario=spec, max_cost_usd=max_cost_usd)
        if not (math.isfinite(chosen.performance) and math.isfinite(chosen.cost)):
            raise ValueError(f"{spec!r}: both weights must be finite numbers (e.g. 0.7:-0.3)")
        return resolve_policy(weights=chosen, max_cost_usd=max_cost_usd)
    except RoutingRequestError as err:
        raise typer.BadParameter(str(err), param_hint="--max-cost-usd") from None
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint=hint) from None


def _print_table(index: int, result) -> None:
    from rich.console import Console
    from rich.table import Table

    title = f"query {index + 1}: {result.query[:60]!r} -> {result.model}"
    table = Table(title=title, caption=f"policy: {result.policy}")
    table.add_column("model", overflow="fold")  # model names are long; keep them whole
    for column in ("pred. performance", "pred. norm. cost", "pred. USD", "utility"):
        table.add_column(column, justify="right")
    for model in sorted(result.performance, key=lambda m: -result.utility.get(m, -math.inf)):
        usd = result.cost_usd.get(model)
        utility = result.utility.get(model)
        table.add_row(
            model,
            f"{result.performance[model]:.3f}",
            f"{result.cost[model]:.3f}",
            "n/a" if usd is None else f"{usd:.6f}",
            "excluded" if utility is None else f"{utility:.3f}",
            style="bold green" if model == result.model else None,
        )
    console = Console()
    console.print(table)
    if result.task_type is not None:
        console.print(f"task type: {result.task_type}")
    console.print(f"chosen model: [bold]{result.model}[/bold] ({result.reason})")


# ----- commands --------------------------------------------------------------------------
def register(app: typer.Typer) -> None:
    """Add ``train`` and ``route`` to the top-level app."""

    app.command("train")(train_command)
    app.command("route")(route_command)


def train_command(
    router: str = typer.Option(
        "auto", "--router", help="Router name (see `trouter routers`); default: auto."
    ),
    out: Path = typer.Option(..., "--out", help="Folder to save the trained router in."),
    suite: str | None = typer.Option(None, "--suite", help="Train on a benchmark suite."),
    train_file: Path | None = typer.Option(
        None, "--train-file", help="Train on a labelled JSONL file (from `trouter label`)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for the validation carve and the fit."),
    param: list[str] = typer.Option(
        [], "--param", help="Router hyper-parameter key=value (repeatable)."
    ),
    filters: str | None = typer.Option(
        None,
        "--filter",
        help="With --train-file: train only on rows passing these generator-quality "
        "filters (self-consistent, discriminative; comma-separated).",
    ),
) -> None:
    """Fit a router on a suite's train split or a labelled file, and save it."""
    from trouter.config import MalformedDataError
    from trouter.data.label_filters import FilterError, parse_filters
    from trouter.routers import make_router

    if (suite is None) == (train_file is None):
        raise typer.BadParameter("give exactly one of --suite or --train-file")
    if filters and train_file is None:
        raise typer.BadParameter("--filter applies to --train-file only", param_hint="--filter")
    params = parse_router_params(param)
    try:
        model = make_router(router, seed=seed, **params)
    except KeyError as err:
        raise fail(str(err.args[0]), 2) from None
    except (TypeError, ValueError) as err:
        raise fail(f"bad parameters for {router!r}: {err}", 2) from None
    try:
        if suite is not None:
            from trouter.data.suites import load_suite

            data = load_suite(suite, seed=seed)
        else:
            from trouter.data.labelled import load_labelled

            if not train_file.is_file():
                raise fail(f"--train-file {train_file} does not exist", 2)
            data = load_labelled(train_file, seed=seed, filters=parse_filters(filters))
    except KeyError as err:
        raise fail(str(err.args[0]), 2) from None
    except FilterError as err:
        raise fail(str(err), 2) from None
    except MalformedDataError as err:  # missing data: exit 2 with the fetch command (cli)
        raise fail(str(err), 1) from None
    train, validation = data.split("train"), data.split("validation")
    if len(train) == 0:
        raise fail(f"{data.name}: no training rows", 1)
    train, validation = _drop_unobserved_models(train, validation)
    typer.echo(
        f"training {router} on {data.name}: {len(train)} train / {len(validation)} "
        f"validation rows, {len(train.models)} models"
    )
    start = time.perf_counter()
    try:
        model.fit(train, validation if len(validation) else None)
    except (ValueError, KeyError, FileNotFoundError) as err:
        raise fail(f"fitting {router} failed: {err}", 1) from None
    typer.echo(f"fit in {time.perf_counter() - start:.1f} s")
    if len(validation):
        typer.echo(f"validation MSE (performance + cost): {validation_mse(model, validation):.4f}")
    if hasattr(model, "task_accuracy"):
        history = model.history_
        typer.echo(
            f"validation loss (objective): {history['init_val_loss']:.4f} at init -> "
            f"{history['best_val_loss']:.4f} after {history['epochs']} epochs"
        )
        if "selected" in history:
            typer.echo(f"selected variant (by validation MSE): {history['selected']}")
        accuracy = model.task_accuracy(validation) if len(validation) else None
        typer.echo(
            "task-type top-1 accuracy (validation): "
            + (f"{accuracy:.3f}" if accuracy is not None else "n/a (no leaf labels)")
        )
    try:
        saved = model.save(out)
    except OSError as err:
        raise fail(f"cannot save the router to {out}: {err.strerror or err}", 1) from None
    typer.echo(f"saved to {saved}")


def route_command(
    query: list[str] | None = typer.Argument(
        None, help="One or more queries; omit to read them from stdin (text lines or JSONL)."
    ),
    model_dir: Path = typer.Option(..., "--model-dir", help="A folder from `trouter train`."),
    policy: str | None = typer.Option(
        None,
        "--policy",
        "--scenario",
        help="performance-first, balanced (default), cost-first, or perf:cost weights "
        "such as 0.7:-0.3.",
    ),
    weights: str | None = typer.Option(None, "--weights", help="perf:cost, e.g. 0.7:-0.3."),
    max_cost_usd: float | None = typer.Option(
        None,
        "--max-cost-usd",
        help="Limit in US dollars on a call's predicted cost (input tokens estimated from "
        "the query x pool prices, plus 256 completion tokens): the policy's best model "
        "within it, exit 2 when none fits.",
    ),
    pool: Path | None = typer.Option(
        None,
        "--pool",
        help="Pool YAML: route its models (routes_as) and price them; default: the "
        "router's own models, priced from LiteLLM's price map.",
    ),
    as_json: bool = typer.Option(
        False, "--json", help="One JSON object per query: the fields of RouteResult."
    ),
) -> None:
    """Route queries with a trained router: the chosen model, why, and every model's
    predictions. Example: trouter route "Prove that sqrt(2) is irrational" --model-dir
    router --policy 0.7:-0.3 --max-cost-usd 0.01"""
    from trouter.llm.pool import PoolConfigError
    from trouter.routers.persistence import RouterFileError
    from trouter.serving.api import PoolMismatchError, RoutingRequestError, load

    chosen = resolve_route_policy(policy, weights, max_cost_usd)
    try:
        if query:
            queries = [
                check_query(text, "the query" if len(query) == 1 else f"query {i + 1}")
                for i, text in enumerate(query)
            ]
        else:
            stdin = sys.stdin.buffer
            if sys.stdin.isatty():
                raise InputError("give a query argument or pipe queries on stdin")
            queries = parse_stdin(stdin.read())
    except InputError as err:
        raise fail(str(err), 2) from None
    try:
        service = load(model_dir, pool)
    except (RouterFileError, PoolConfigError, PoolMismatchError) as err:
        raise fail(str(err), 2) from None
    try:
        results = service.route_batch(queries, chosen)
    except RoutingRequestError as err:  # e.g. no model within --max-cost-usd
        raise fail(str(err), 2) from None
    if as_json:
        for result in results:
            typer.echo(json.dumps(result.to_dict()))
    else:
        for i, result in enumerate(results):
            _print_table(i, result)
    sys.stdout.flush()
