"""MLP router: per metric, one trunk on the query embedding with a sigmoid head per model.

The parametric counterpart of kNN: small networks regress, for every pool model, the
performance and the normalised cost of a query from its frozen MiniLM embedding. Within a
metric the trunk is shared, so that what makes a query hard for one model informs the
others. Performance and cost get separate networks because they learn at very different
speeds: 0/1 performance labels overfit within a few epochs, while the nearly deterministic
cost keeps improving long after; one early-stopping point for both leaves cost under-fitted
(on RouterBench, worse than a per-benchmark mean). The shared criterion of
:mod:`trouter.routers.tuning` is a sum of a performance and a cost term, so each network is
early-stopped and tuned (hidden size, weight decay) on its own term. The training, tuning,
refit and persistence machinery here is reused by ``mf``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from trouter.data.dataset import RoutingDataset
from trouter.routers.base import Prediction, Queries, Router, register
from trouter.routers.tuning import (
    Candidate,
    embed,
    merge,
    select_best,
    targets,
    tuning_split,
    tuning_table,
)


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser settings shared by the torch baselines."""

    lr: float = 3e-3
    weight_decay: float = 1e-2
    batch_size: int = 128
    max_epochs: int = 200
    patience: int = 10


def masked_loss(out: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over observed cells only (zero, not NaN, when none is observed).

    On the validation rows this is one term of
    :func:`trouter.routers.tuning.validation_loss`.
    """
    return (((out - y) ** 2) * mask).sum() / mask.sum().clamp(min=1.0)


def train_masked(
    net: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    mask: np.ndarray,
    config: TrainConfig,
    seed: int,
    validation: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    epochs: int | None = None,
) -> tuple[int, float]:
    """Train ``net`` (embeddings -> (n, m) in [0, 1]) in place on masked targets.

    With ``validation`` it stops after ``patience`` epochs without improvement and restores
    the best weights; without it, it trains exactly ``epochs`` epochs (a refit whose length
    was chosen on validation). Returns (epochs of the kept weights, their validation loss).
    """
    generator = torch.Generator().manual_seed(seed)
    xt, yt, mt = (torch.as_tensor(a, dtype=torch.float32) for a in (x, y, mask))
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if validation is not None:
        xv, yv, mv = (torch.as_tensor(a, dtype=torch.float32) for a in validation)
    n_epochs = epochs if epochs is not None else config.max_epochs
    best_loss, best_epoch, best_state, stale = float("inf"), 0, None, 0
    for epoch in range(1, n_epochs + 1):
        net.train()
        order = torch.randperm(len(xt), generator=generator)
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            optimiser.zero_grad()
            masked_loss(net(xt[batch]), yt[batch], mt[batch]).backward()
            optimiser.step()
        if validation is None:
            continue
        net.eval()
        with torch.no_grad():
            loss = float(masked_loss(net(xv), yv, mv))
        if loss < best_loss - 1e-6:
            best_loss, best_epoch, stale = loss, epoch, 0
            best_state = copy.deepcopy(net.state_dict())
        else:
            stale += 1
            if stale >= config.patience:
                break
    if validation is None:
        return n_epochs, float("nan")
    net.load_state_dict(best_state)
    net.eval()
    return best_epoch, best_loss


@contextmanager
def few_threads(n: int = 1) -> Iterator[None]:
    """Run torch on ``n`` threads, then restore the previous setting.

    These networks are tiny (a few hundred thousand weights, batches of 128), so
    intra-op threading costs more in synchronisation than it saves; on a busy 2-core
    machine one thread trains about ten times faster than the default.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def logit_prior(y: np.ndarray, mask: np.ndarray) -> torch.Tensor:
    """Logit of each target column's observed mean: heads start at the best-single guess."""
    counts = mask.sum(axis=0)
    mean = np.where(counts > 0, (y * mask).sum(axis=0) / np.maximum(counts, 1), 0.5)
    mean = np.clip(mean, 1e-3, 1 - 1e-3)
    return torch.as_tensor(np.log(mean / (1 - mean)), dtype=torch.float32)


class MLPNet(nn.Module):
    """Embedding -> hidden (ReLU, dropout) -> one logit per model -> sigmoid."""

    def __init__(self, dim_in: int, hidden: int, n_outputs: int, dropout: float) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(dim_in, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.heads = nn.Linear(hidden, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.heads(self.trunk(x)))

    def set_prior(self, prior: torch.Tensor) -> None:
        """Start every head at its column's mean (the best-single guess), not at random."""
        self.heads.bias.copy_(prior)
        self.heads.weight.mul_(0.1)


METRICS = ("performance", "cost")


class TorchBaseline(Router):
    """Grid search, early stopping, refit and persistence shared by the torch baselines.

    One network per metric (see the module docstring). Subclasses say which
    hyper-parameters to search (:meth:`grid`) and how to build a network with one output
    per model for one setting (:meth:`build`); the rest is common.
    """

    def __init__(self, seed: int = 0, **params: Any) -> None:
        super().__init__(seed=seed, **params)
        checks = {
            "lr": params["lr"] > 0,
            "batch_size": params["batch_size"] >= 1,
            "max_epochs": params["max_epochs"] >= 1,
            "patience": params["patience"] >= 0,
            "dropout": 0 <= params["dropout"] < 1,
            "weight_decay": all(w >= 0 for w in params["weight_decay"]) and params["weight_decay"],
        }
        for name in ("hidden", "dim"):
            if name in params:
                checks[name] = bool(params[name]) and all(int(h) == h >= 1 for h in params[name])
        bad = [f"{name}={params[name]!r}" for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                f"{self.name}: out of range: {', '.join(bad)} (lr > 0, batch_size and "
                "max_epochs >= 1, patience >= 0, 0 <= dropout < 1, weight_decay >= 0, "
                "hidden/dim whole numbers >= 1, lists non-empty)"
            )

    def grid(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def build(self, dim_in: int, n_models: int, params: dict[str, Any]) -> nn.Module:
        raise NotImplementedError

    def config(self, params: dict[str, Any]) -> TrainConfig:
        return TrainConfig(
            lr=self.params["lr"],
            weight_decay=params["weight_decay"],
            batch_size=self.params["batch_size"],
            max_epochs=self.params["max_epochs"],
            patience=self.params["patience"],
        )

    def _new_net(self, dim_in: int, y: np.ndarray, mask: np.ndarray, params: dict) -> nn.Module:
        torch.manual_seed(self.seed)
        net = self.build(dim_in, y.shape[1], params)
        with torch.no_grad():
            net.set_prior(logit_prior(y, mask))
        return net

    def fit(self, train: RoutingDataset, validation: RoutingDataset | None = None) -> Router:
        with few_threads():
            return self._fit(train, validation)

    def _fit(self, train: RoutingDataset, validation: RoutingDataset | None) -> Router:
        fit_rows, val_rows = tuning_split(train, validation, self.seed)
        x, (y, mask) = embed(fit_rows, self.encoder), targets(fit_rows)
        xv, (yv, mv) = embed(val_rows, self.encoder), targets(val_rows)
        m = len(fit_rows.models)
        self.dim_in_, self.n_models_ = x.shape[1], m
        self.best_params_, self.epochs_, self.tuning_ = {}, {}, {}
        nets: dict[str, nn.Module] = {}
        losses = []
        for i, metric in enumerate(METRICS):
            cols = slice(i * m, (i + 1) * m)
            candidates: list[Candidate[tuple[nn.Module, int]]] = []
            for params in self.grid():
                net = self._new_net(x.shape[1], y[:, cols], mask[:, cols], params)
                epochs, loss = train_masked(
                    net,
                    x,
                    y[:, cols],
                    mask[:, cols],
                    self.config(params),
                    self.seed,
                    (xv, yv[:, cols], mv[:, cols]),
                )
                candidates.append(Candidate({**params, "epochs": epochs}, loss, (net, epochs)))
            best = select_best(candidates)
            self.tuning_[metric] = tuning_table(candidates)
            self.best_params_[metric] = {k: v for k, v in best.params.items() if k != "epochs"}
            self.epochs_[metric] = best.fitted[1]
            nets[metric] = best.fitted[0]
            losses.append(best.loss)
        self.validation_loss_ = float(sum(losses))
        if self.params["refit"]:
            # the chosen settings and lengths, now on train + validation: nothing to select
            both = merge(fit_rows, val_rows)
            xb, (yb, mb) = embed(both, self.encoder), targets(both)
            for i, metric in enumerate(METRICS):
                cols = slice(i * m, (i + 1) * m)
                params = self.best_params_[metric]
                net = self._new_net(xb.shape[1], yb[:, cols], mb[:, cols], params)
                epochs = max(self.epochs_[metric], 1)
                train_masked(
                    net,
                    xb,
                    yb[:, cols],
                    mb[:, cols],
                    self.config(params),
                    self.seed,
                    epochs=epochs,
                )
                nets[metric] = net
        self._nets = {metric: net.eval() for metric, net in nets.items()}
        self.models_ = fit_rows.model_names
        return self

    def predict(self, queries: Queries) -> Prediction:
        models = self._require_fitted()
        x = torch.as_tensor(embed(queries, self.encoder))
        with torch.no_grad(), few_threads():
            out = {metric: net.eval()(x).double().numpy() for metric, net in self._nets.items()}
        return Prediction(list(models), out["performance"], out["cost"])

    # ----- persistence: weights as numpy arrays, the modules rebuilt on load --------------
    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state["net_weights"] = {
            metric: {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
            for metric, net in self._nets.items()
        }
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        state = dict(state)
        weights = state.pop("net_weights")
        super().set_state(state)
        self._nets = {}
        for metric in METRICS:
            net = self.build(self.dim_in_, self.n_models_, self.best_params_[metric])
            net.load_state_dict({k: torch.as_tensor(v) for k, v in weights[metric].items()})
            self._nets[metric] = net.eval()


def param_grid(**axes: Sequence[Any]) -> list[dict[str, Any]]:
    """Cartesian product of named axes, in order (the first listed setting wins ties)."""
    rows: list[dict[str, Any]] = [{}]
    for name, values in axes.items():
        rows = [{**row, name: v} for row in rows for v in values]
    return rows


@register("mlp")
class MLPRouter(TorchBaseline):
    """Shared-trunk MLP regressor of per-model performance and normalised cost.

    ``hidden`` and ``weight_decay`` are lists searched on validation; ``dropout``, ``lr``,
    ``batch_size``, ``max_epochs`` and ``patience`` are fixed; ``refit`` retrains the chosen
    setting on train + validation for the early-stopped number of epochs.
    """

    def __init__(
        self,
        seed: int = 0,
        hidden: Sequence[int] = (128, 512),
        weight_decay: Sequence[float] = (1e-2, 1e-1),
        dropout: float = 0.5,
        lr: float = 3e-3,
        batch_size: int = 128,
        max_epochs: int = 200,
        patience: int = 10,
        refit: bool = True,
    ) -> None:
        super().__init__(
            seed=seed,
            hidden=list(hidden),
            weight_decay=list(weight_decay),
            dropout=dropout,
            lr=lr,
            batch_size=batch_size,
            max_epochs=max_epochs,
            patience=patience,
            refit=refit,
        )

    def grid(self) -> list[dict[str, Any]]:
        return param_grid(hidden=self.params["hidden"], weight_decay=self.params["weight_decay"])

    def build(self, dim_in: int, n_models: int, params: dict[str, Any]) -> nn.Module:
        return MLPNet(dim_in, int(params["hidden"]), n_models, self.params["dropout"])
