"""A pool model that a saved online router never saw joins it as a new arm when served."""

from __future__ import annotations

import numpy as np
import pytest

import trouter
from trouter.data.suites import load_suite
from trouter.evaluation.folds import restrict
from trouter.evaluation.scenarios import SCENARIOS
from trouter.llm.pool import ModelEndpoint, Pool
from trouter.routers import make_router
from trouter.routers.online import OnlineRouter
from trouter.serving.api import PoolMismatchError

NEWCOMER = "gpt-3.5-turbo-1106"


@pytest.fixture(scope="module")
def train():
    suite = load_suite("routerbench").split("train")
    return restrict(suite, [m for m in suite.model_names if m != NEWCOMER])


def _pool(models: list[str], newcomer_price: float) -> Pool:
    def endpoint(name: str, price: float) -> ModelEndpoint:
        return ModelEndpoint(name=name, litellm_model=f"openai/{name}",
                             input_price_per_mtok=price, output_price_per_mtok=price)  # fmt: skip

    return Pool(models=[*(endpoint(m, 1.0) for m in models), endpoint(NEWCOMER, newcomer_price)])


def test_a_saved_online_router_routes_a_new_pool_model_after_labels(train, tmp_path):
    base = make_router("best-single").fit(train)
    saved = OnlineRouter.around(base, train, label_min=2).save(tmp_path / "online")
    cheap = trouter.load(saved, _pool(train.model_names, 0.5))
    pricey = trouter.load(saved, _pool(train.model_names, 4.0))
    for service in (cheap, pricey):
        assert NEWCOMER in service.models  # routable, not refused
        assert service.router.joined_late_[-1] == 1.0
    # the price prior ranks it by its price, on the router's own cost scale
    assert cheap.router.pool_cost_[-1] < pricey.router.pool_cost_[-1] <= 1.0
    # with the other models known, a label compares it with the anchor alone
    router = cheap.router
    names = router.models_
    query = "Write a Python function that reverses a string."
    router.partial_fit([{"id": f"l{i}", "kind": "label", "t": i, "query": query,
                         "scores": dict.fromkeys(names[:-1], 0.5)} for i in range(3)])  # fmt: skip
    (made,) = router.decide([query], SCENARIOS["balanced"])
    anchor = names[router.anchor_choice(SCENARIOS["balanced"])]
    assert set(made["label_models"]) == {NEWCOMER, anchor, made["model"]}
    assert made["label_priority"] == 3
    assert not np.isnan(router.pool_cost_).any()


def test_a_frozen_router_still_refuses_a_model_it_cannot_predict(train, tmp_path):
    saved = make_router("best-single").fit(train).save(tmp_path / "frozen")
    with pytest.raises(PoolMismatchError, match=NEWCOMER):
        trouter.load(saved, _pool(train.model_names, 1.0))
