"""What the learned baseline routers (knn, mlp, mf) share: inputs, targets, and one criterion.

Every baseline chooses its hyper-parameters the same way, so that a comparison between them
measures the model and not the tuning: each candidate is fitted on the training rows and
scored by :func:`validation_loss` on the validation rows, and :func:`select_best` keeps the
lowest. The criterion is deliberately scenario-agnostic (masked MSE of performance plus
masked MSE of normalised cost): a router is tuned once and then serves every weighting of
performance against cost. The test split never reaches any of this.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

import numpy as np

from trouter.data.dataset import RoutingDataset
from trouter.encoders import get_encoder
from trouter.routers.base import Prediction, Queries, query_texts

#: Fraction of train carved out as validation when ``fit`` is given none.
VALIDATION_FRACTION = 0.15

T = TypeVar("T")


def embed(queries: Queries, encoder: str) -> np.ndarray:
    """Frozen, L2-normalised embeddings by the named encoder (float32, (n, dim)), cached."""
    return get_encoder(encoder).encode(query_texts(queries)).astype(np.float32)


def targets(dataset: RoutingDataset) -> tuple[np.ndarray, np.ndarray]:
    """Targets ``[performance | normalised cost]`` (n, 2m) with NaN set to 0, and their mask.

    The mask is True where a target was observed; a masked cell must contribute nothing to
    any loss (it is an unknown score, not a score of 0).
    """
    stacked = np.concatenate([dataset.performance, dataset.normalised_cost], axis=1)
    mask = ~np.isnan(stacked)
    return np.where(mask, stacked, 0.0).astype(np.float32), mask


def masked_mse(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean squared error over the non-NaN cells of ``target``; NaN when none is observed."""
    mask = ~np.isnan(target)
    if not mask.any():
        return float("nan")
    return float(np.mean((pred[mask] - target[mask]) ** 2))


def validation_terms(prediction: Prediction, dataset: RoutingDataset) -> tuple[float, float]:
    """The two terms of :func:`validation_loss`: masked MSE of performance, then of cost.

    The prediction's models are matched to the dataset's by name, so a router fitted on a
    differently ordered pool is still scored correctly.
    """
    if len(prediction.performance) != len(dataset):
        raise ValueError(
            f"prediction has {len(prediction.performance)} rows but {dataset.name} has "
            f"{len(dataset)}"
        )
    missing = [name for name in dataset.model_names if name not in prediction.models]
    if missing:
        raise KeyError(f"prediction lacks models {missing} of {dataset.name}")
    cols = [prediction.models.index(name) for name in dataset.model_names]
    return (
        masked_mse(prediction.performance[:, cols], dataset.performance),
        masked_mse(prediction.cost[:, cols], dataset.normalised_cost),
    )


def validation_loss(prediction: Prediction, dataset: RoutingDataset) -> float:
    """The one selection criterion: masked MSE(performance) + masked MSE(normalised cost).

    A term with no observed cell is left out (NaN only if both are). The sum is separable:
    a router that predicts performance and cost with separate parts may tune each part on
    its own term, and that choice minimises the sum.
    """
    terms = validation_terms(prediction, dataset)
    return float("nan") if np.isnan(terms).all() else float(np.nansum(terms))


def tuning_split(
    train: RoutingDataset, validation: RoutingDataset | None, seed: int
) -> tuple[RoutingDataset, RoutingDataset]:
    """The (train, validation) pair to tune on; carved from train when none is given."""
    if validation is not None and len(validation) > 0:
        return train, validation
    carved = train.with_validation(VALIDATION_FRACTION, seed)
    fit_rows, val_rows = carved.split("train"), carved.split("validation")
    if len(val_rows) == 0 or len(fit_rows) == 0:
        raise ValueError(
            f"{train.name}: too few training rows ({len(train)}) to carve a validation split"
        )
    return fit_rows, val_rows


def merge(first: RoutingDataset, second: RoutingDataset) -> RoutingDataset:
    """Rows of both datasets (same pool), for refitting on train + validation after tuning."""
    if first.model_names != second.model_names:
        raise ValueError(
            f"cannot merge {first.name} and {second.name}: pools differ "
            f"({first.model_names} vs {second.model_names})"
        )
    leaf_ids = None
    if first.leaf_ids is not None and second.leaf_ids is not None:
        leaf_ids = np.concatenate([first.leaf_ids, second.leaf_ids])
    return replace(
        first,
        query_ids=np.concatenate([first.query_ids, second.query_ids]),
        texts=list(first.texts) + list(second.texts),
        tasks=np.concatenate([first.tasks, second.tasks]),
        benchmarks=np.concatenate([first.benchmarks, second.benchmarks]),
        performance=np.concatenate([first.performance, second.performance]),
        cost=np.concatenate([first.cost, second.cost]),
        splits=np.full(len(first) + len(second), "train", dtype=object),
        leaf_ids=leaf_ids,
        normalised_cost=np.concatenate([first.normalised_cost, second.normalised_cost]),
    )


@dataclass
class Candidate(Generic[T]):
    """One hyper-parameter setting, its validation loss, and what fitting it produced."""

    params: dict[str, Any]
    loss: float
    fitted: T = field(repr=False, default=None)  # type: ignore[assignment]


def select_best(candidates: Iterable[Candidate[T]]) -> Candidate[T]:
    """The candidate with the lowest validation loss; ties keep the earlier (simpler) one.

    Candidates whose loss is NaN (nothing observed) never win unless all are NaN.
    """
    pool = list(candidates)
    if not pool:
        raise ValueError("no hyper-parameter candidates to select from")
    best = pool[0]
    for cand in pool[1:]:
        if np.isnan(best.loss) or (not np.isnan(cand.loss) and cand.loss < best.loss):
            best = cand
    return best


def tuning_table(candidates: Iterable[Candidate[Any]]) -> list[dict[str, Any]]:
    """A picklable record of what was tried (params and loss), kept on the fitted router."""
    return [{**c.params, "validation_loss": round(float(c.loss), 6)} for c in candidates]
