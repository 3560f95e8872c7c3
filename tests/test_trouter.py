"""TRouter and TRouter+: training, task typing, persistence and determinism on real text."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from trouter.config import data_dir
from trouter.data.dataset import ModelInfo, RoutingDataset
from trouter.data.suites import load_suite
from trouter.evaluation.real_questions import packaged_question_file
from trouter.evaluation.scenarios import SCENARIOS
from trouter.routers import make_router
from trouter.routers.base import Router
from trouter.taxonomy.model import Taxonomy

MATH_LEAF = "Mathematics > Arithmetic Word Problems > Medium"
CODE_LEAF = "Programming > Python Function Implementation > Medium"
POOL = ("math-specialist", "code-specialist", "generalist")


def real_questions(n: int) -> tuple[list[str], list[str]]:
    """The first ``n`` GSM8K test questions and HumanEval prompts (real queries)."""
    root = data_dir() / "questions"
    with open(root / "gsm8k_test.jsonl", encoding="utf-8") as fh:
        gsm8k = [json.loads(line)["question"] for _, line in zip(range(n), fh, strict=False)]
    with gzip.open(packaged_question_file("HumanEval.jsonl.gz"), "rt", encoding="utf-8") as fh:
        humaneval = [json.loads(line)["prompt"] for _, line in zip(range(n), fh, strict=False)]
    return gsm8k, humaneval


def synthetic_set(n_real: int = 40, n_val: int = 8) -> RoutingDataset:
    """A synthetic-style labelled set: every default leaf's example query plus real
    GSM8K / HumanEval questions under their obvious leaves. The math specialist is right on
    mathematics, the code specialist on programming, the generalist half the time; the last
    ``n_val`` real questions of each benchmark form the validation split."""
    leaves = Taxonomy.default().leaves()
    gsm8k, humaneval = real_questions(n_real)
    texts = [leaf.path[-1].example for leaf in leaves] + gsm8k + humaneval
    leaf_ids = [leaf.id for leaf in leaves] + [MATH_LEAF] * n_real + [CODE_LEAF] * n_real
    domains = [leaf.split(" > ")[0] for leaf in leaf_ids]
    perf = np.array([[float(d == "Mathematics"), float(d == "Programming"), 0.5] for d in domains])
    cost = np.tile([0.001, 0.001, 0.002], (len(texts), 1))
    real_split = ["train"] * (n_real - n_val) + ["validation"] * n_val
    splits = ["train"] * len(leaves) + real_split * 2
    return RoutingDataset(
        name="synthetic-test",
        query_ids=np.arange(len(texts)).astype(str),
        texts=texts,
        tasks=np.array(domains, dtype=object),
        benchmarks=np.full(len(texts), "synthetic", dtype=object),
        models=[ModelInfo(name) for name in POOL],
        performance=perf,
        cost=cost,
        splits=np.array(splits, dtype=object),
        leaf_ids=np.array(leaf_ids, dtype=object),
    )


@pytest.fixture(scope="module")
def synthetic() -> RoutingDataset:
    return synthetic_set()


@pytest.fixture(scope="module")
def fitted_plus(synthetic: RoutingDataset) -> Router:
    router = make_router("trouter+", seed=0, max_epochs=8)
    return router.fit(synthetic.split("train"), synthetic.split("validation"))


def test_training_lowers_validation_loss_on_routerbench_slice() -> None:
    suite = load_suite("routerbench", seed=0)
    rng = np.random.default_rng(0)
    train = suite.split("train")
    train = train.subset(np.sort(rng.choice(len(train), 128, replace=False)))
    validation = suite.split("validation").subset(np.arange(60))
    router = make_router("trouter", seed=0, max_epochs=3, min_steps=0).fit(train, validation)
    history = router.history_
    assert 1 <= history["epochs"] <= 3
    # Early stopping keeps the checkpoint of lowest validation prediction MSE (not the ELBO);
    # the decoders start at the training means, so it must beat that start.
    assert history["best_val_mse"] < history["init_val_mse"]
    # The stored figure is the one the saved network reproduces on the validation split.
    again = router.validation_loss(validation)
    assert again["mse"] == pytest.approx(history["best_val_mse"], rel=1e-5)
    assert again["loss"] == pytest.approx(history["best_val_loss"], rel=1e-5)
    prediction = router.predict(validation)
    assert prediction.performance.shape == (60, len(suite.models))
    assert np.all((prediction.cost >= 0) & (prediction.cost <= 1))
    assert router.task_accuracy(validation) is None  # no leaf labels on benchmark data


def test_task_types_and_routes_are_learned(fitted_plus: Router, synthetic: RoutingDataset):
    validation = synthetic.split("validation")
    # 189 task types: chance is about 0.005; the held-out GSM8K and HumanEval questions
    # must be put in the leaf their training twins were labelled with.
    assert fitted_plus.task_accuracy(validation) >= 0.75
    routes = fitted_plus.route(validation, SCENARIOS["performance-first"])
    expected = [
        "math-specialist" if d == "Mathematics" else "code-specialist" for d in validation.tasks
    ]
    assert np.mean([a == b for a, b in zip(routes, expected, strict=True)]) >= 0.75
    history = fitted_plus.history_
    assert history["selected"] in ("mixture", "residual")
    assert set(history["candidate_val_mse"]) == {"mixture", "residual"}
    assert history["best_val_mse"] == min(history["candidate_val_mse"].values())


def test_save_load_gives_identical_predictions(fitted_plus: Router, synthetic, tmp_path):
    fitted_plus.save(tmp_path / "plus")
    loaded = Router.load(tmp_path / "plus")
    queries = list(synthetic.split("validation").texts) + ["Translate 'good morning' to French."]
    before, after = fitted_plus.predict(queries), loaded.predict(queries)
    np.testing.assert_array_equal(before.performance, after.performance)
    np.testing.assert_array_equal(before.cost, after.cost)
    np.testing.assert_array_equal(fitted_plus.posterior(queries), loaded.posterior(queries))
    for weights in SCENARIOS.values():
        assert fitted_plus.route(queries, weights) == loaded.route(queries, weights)
    # The saved state is plain data: config and numpy arrays, no live torch modules.
    state = loaded.get_state()
    assert all(isinstance(v, np.ndarray) for v in state["state_dict"].values())


def test_seeded_fits_are_deterministic(synthetic: RoutingDataset) -> None:
    train, validation = synthetic.split("train"), synthetic.split("validation")
    train = train.subset(np.arange(0, len(train), 3))

    def fit(seed: int) -> np.ndarray:
        router = make_router("trouter", seed=seed, max_epochs=2, min_steps=0).fit(train, validation)
        return router.predict(validation).performance

    first = fit(0)
    np.testing.assert_array_equal(first, fit(0))
    assert not np.array_equal(first, fit(1))


def test_bad_parameters_and_foreign_leaves_are_rejected(synthetic: RoutingDataset) -> None:
    with pytest.raises(TypeError, match="learning_rate"):
        make_router("trouter", learning_rate=0.1)
    with pytest.raises(ValueError, match="prior"):
        make_router("trouter", prior="uniform")
    with pytest.raises(ValueError, match="candidates"):
        make_router("trouter+", candidates="residual,bogus")
    foreign = synthetic.subset(np.arange(10))
    foreign.leaf_ids = np.array(["Cooking > Baking > Hard"] * 10, dtype=object)
    with pytest.raises(ValueError, match="not in the router's taxonomy"):
        make_router("trouter", max_epochs=1).fit(foreign)


def test_schedule_gives_small_data_enough_steps() -> None:
    from trouter.routers.trouter_model import TRouterConfig

    config = TRouterConfig()
    assert config.schedule(5000) == (20, 3)  # 79 batches x 20 epochs >= 1,500 steps
    epochs, patience = config.schedule(200)  # 4 batches per epoch
    assert epochs == 375 and patience == 57
    assert TRouterConfig(min_steps=0).schedule(200) == (20, 3)
