"""Parsing shared by the commands' options."""

from __future__ import annotations

import json
from typing import Any

import typer


def comma_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``: the items of a comma-separated option."""
    return [item.strip() for item in text.split(",") if item.strip()]


def default_pool_model(pool: Any, option: str, role: str) -> str:
    """The pool model that plays ``role`` (generates, judges) when ``option`` is not given.

    A pool of one model: that model. Otherwise the model with the highest output price,
    price being the pool's own measure of strength; a tie or an unpriced model makes the
    choice ambiguous, and the :class:`ValueError` says which option to give.
    """
    models = list(pool.models)
    if len(models) == 1:
        return models[0].name
    prices = {m.name: m.cost(0, 1_000_000) for m in models}
    names = ", ".join(prices)
    source = f"the pool {pool.source}" if getattr(pool, "source", None) else "the pool"
    unpriced = [name for name, price in prices.items() if price is None]
    if unpriced:
        raise ValueError(
            f"{source} has {len(models)} models ({names}) and no price for "
            f"{', '.join(unpriced)}, so the {role} cannot default to the most expensive "
            f"one; name it with {option} NAME"
        )
    ranked = sorted(prices.items(), key=lambda item: -item[1])
    if ranked[0][1] == ranked[1][1]:
        raise ValueError(
            f"{source} has {len(models)} models ({names}) and {ranked[0][0]} and "
            f"{ranked[1][0]} share the highest output price, so the {role} is ambiguous; "
            f"name it with {option} NAME"
        )
    return ranked[0][0]


def parse_params(items: list[str], routers: list[str]) -> dict[str, dict[str, Any]]:
    """``router.key=value`` items -> {router: {key: value}}; values are JSON or plain strings."""
    params: dict[str, dict[str, Any]] = {}
    for item in items:
        head, sep, raw = item.partition("=")
        router, dot, key = head.partition(".")
        if not sep or not dot or not router or not key:
            raise typer.BadParameter(
                f"{item!r} is not router.key=value (e.g. knn.k=10)", param_hint="--param"
            )
        if router not in routers:
            raise typer.BadParameter(
                f"{item!r} sets a parameter of {router!r}, which is not evaluated; "
                f"routers: {', '.join(routers)}",
                param_hint="--param",
            )
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        params.setdefault(router, {})[key] = value
    return params
