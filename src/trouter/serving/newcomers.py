"""Pool models that a saved online router has never seen: they join it as new arms.

A frozen router cannot route a model it has no predictions for, so ``load`` refuses such a
pool. An online router can: :meth:`~trouter.routers.online.OnlineRouter.add_model` gives
the model an arm with the price prior, background labels compare it with the anchor first,
and it is served once they show it ahead. Its normalised cost is its price for a typical
call on the router's own cost scale, read off the models both know (the median ratio of a
known model's normalised cost to its typical-call price).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from trouter.routers.base import Router
from trouter.routers.online import OnlineRouter

log = logging.getLogger("trouter.serving")

#: Tokens of the typical call that turns per-token prices into a price prior's cost (here
#: and in ``serve --router online``'s price-prior router).
TYPICAL_CALL_TOKENS = (500, 300)


def join_new_models(router: Router, pool_models: Sequence) -> list[str]:
    """Add to an online ``router`` every pool model (``trouter.llm.pool.ModelEndpoint``)
    that it lacks and that does not stand in for one it has (``routes_as``); returns their
    names (none for any other router, whose refusal ``match_pool`` explains)."""
    if not isinstance(router, OnlineRouter):
        return []
    known = set(router._require_fitted())
    new = [m for m in pool_models if (m.routes_as or m.name) not in known]
    for endpoint in new:
        cost = normalised_cost(router, pool_models, endpoint)
        router.add_model(endpoint.routes_as or endpoint.name, cost)
        log.warning(
            "pool model %r is new to the online router: it joins with the price prior "
            "(normalised cost %.3f) and is served once background labels show it ahead",
            endpoint.name,
            cost,
        )
    return [m.name for m in new]


def normalised_cost(router: OnlineRouter, pool_models: Sequence, endpoint) -> float:
    """``endpoint``'s typical call on the router's normalised cost scale (the pool's median
    normalised cost where prices are missing)."""
    index = {name: j for j, name in enumerate(router.models_)}
    fallback = float(np.nanmedian(router.pool_cost_))
    price = endpoint.cost(*TYPICAL_CALL_TOKENS)
    ratios = []
    for other in pool_models:
        j = index.get(other.routes_as or other.name)
        other_price = other.cost(*TYPICAL_CALL_TOKENS)
        if j is not None and other_price and np.isfinite(router.pool_cost_[j]):
            ratios.append(float(router.pool_cost_[j]) / other_price)
    if price is None or not ratios:
        return fallback
    return float(np.clip(price * np.median(ratios), 0.0, 1.0))
