"""Which pool model serves which of a trained router's models (``routes_as``), or why none can.

A pool model the router has no prediction for is refused (routing could never choose it),
and so is a router model the pool lacks, unless routing may be restricted to the models both
have; either refusal names the models and the pool-file line that would fix it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class PoolMismatchError(ValueError):
    """The pool cannot serve the models the router was trained to choose between."""


def match_pool(
    router_models: Sequence[str],
    pool_models: Sequence[str] | Mapping[str, str],
    allow_partial: bool = False,
    where: str = "",
) -> dict[str, str]:
    """{trained model: pool model} for the router's models that the pool serves, or a
    :class:`PoolMismatchError`.

    ``pool_models`` is a list of pool names, or {pool name: the trained model it routes as}.
    A pool model the router has no prediction for is refused: routing could never choose it,
    and a user who listed it expects it to be routed. A router model the pool lacks is
    refused too, because routing would pick a model nobody can call, unless
    ``allow_partial`` is set or the pool maps its models explicitly (``routes_as``): then
    routing is restricted to the models both have.
    """
    explicit = isinstance(pool_models, Mapping) and any(
        pool != trained for pool, trained in pool_models.items()
    )
    stands_for = dict(pool_models) if isinstance(pool_models, Mapping) else {}
    stands_for = {name: stands_for.get(name, name) for name in pool_models}
    known = set(router_models)
    unknown = [name for name, trained in stands_for.items() if trained not in known]
    if unknown:
        raise PoolMismatchError(
            f"the router{where} has no predictions for pool model(s) "
            + ", ".join(_describe_unknown(name, stands_for[name]) for name in unknown)
            + f".\n  router models: {list(router_models)}\nGive each pool model the trained "
            "model it stands in for (routes_as: <router model> in the pool file), or leave "
            "it out of the pool."
        )
    by_trained: dict[str, list[str]] = {}
    for name, trained in stands_for.items():
        by_trained.setdefault(trained, []).append(name)
    shared = {trained: names for trained, names in by_trained.items() if len(names) > 1}
    if shared:
        raise PoolMismatchError(
            f"pool models {shared} route as the same trained model{where}: the router could "
            "not tell them apart; give each its own routes_as"
        )
    missing = [m for m in router_models if m not in by_trained]
    served = {m: by_trained[m][0] for m in router_models if m in by_trained}
    if missing and (not (allow_partial or explicit) or not served):
        hint = "" if served else " (no model in common)"
        raise PoolMismatchError(
            f"the pool does not serve {len(missing)} of the router's models{hint}{where}: "
            f"missing {missing}.\n  router models: {list(router_models)}\n"
            f"  pool models:   {list(stands_for)}\n"
            "Add them to the pool, map pool models onto them (routes_as: <router model>), "
            "or allow routing among the common models only "
            "(allow_partial_pool=True / --allow-partial-pool)."
        )
    return served


def _describe_unknown(name: str, trained: str) -> str:
    return repr(name) if trained == name else f"{name!r} (routes_as {trained!r})"
