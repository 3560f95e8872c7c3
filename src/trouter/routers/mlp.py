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

Torch trains the networks (:mod:`trouter.routers.torch_nets`, ``trouter[train]``); a fitted
router keeps numpy copies of their weights and predicts with :func:`mlp_forward`, which
``tests/test_base_install.py`` checks against the torch module, so routing needs no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from trouter.data.dataset import RoutingDataset
from trouter.encoders import ENCODER_DIMS
from trouter.extras import require
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

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser settings shared by the torch baselines."""

    lr: float = 3e-3
    weight_decay: float = 1e-2
    batch_size: int = 128
    max_epochs: int = 200
    patience: int = 10


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function without overflow warnings for large negative inputs."""
    return np.exp(-np.logaddexp(0.0, -x))


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def mlp_forward(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """:class:`trouter.routers.torch_nets.MLPNet` in eval mode, in numpy: (n, d) -> (n, m)."""
    hidden = relu(x @ weights["trunk.0.weight"].T + weights["trunk.0.bias"])
    return sigmoid(hidden @ weights["heads.weight"].T + weights["heads.bias"])


METRICS = ("performance", "cost")


class TorchBaseline(Router):
    """Grid search, early stopping, refit and persistence shared by the torch baselines.

    One network per metric (see the module docstring). Subclasses say which
    hyper-parameters to search (:meth:`grid`), how to build a network with one output per
    model for one setting (:meth:`build`, torch, training only), which weights it has
    (:meth:`weight_shapes`) and how to run it in numpy (:meth:`forward`); the rest is
    common. Torch is needed to fit; a fitted router keeps numpy copies of its weights and
    predicts with them, so a loaded router routes without torch.
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

    def weight_shapes(
        self, dim_in: int, n_models: int, params: dict[str, Any]
    ) -> dict[str, tuple[int, ...]]:
        """The shape of every weight of :meth:`build`'s network (its state dict)."""
        raise NotImplementedError

    @staticmethod
    def forward(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
        """The network of :meth:`build` in eval mode, in numpy: (n, dim_in) -> (n, models)."""
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
        import torch

        from trouter.routers.torch_nets import logit_prior

        torch.manual_seed(self.seed)
        net = self.build(dim_in, y.shape[1], params)
        with torch.no_grad():
            net.set_prior(logit_prior(y, mask))
        return net

    def fit(self, train: RoutingDataset, validation: RoutingDataset | None = None) -> Router:
        require("torch", f"training the {self.name!r} router")
        from trouter.routers.torch_nets import few_threads

        with few_threads():
            return self._fit(train, validation)

    def _fit(self, train: RoutingDataset, validation: RoutingDataset | None) -> Router:
        from trouter.routers.torch_nets import train_masked

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
        self._weights = {
            metric: {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
            for metric, net in nets.items()
        }
        self.models_ = fit_rows.model_names
        return self

    def predict(self, queries: Queries) -> Prediction:
        models = self._require_fitted()
        x = embed(queries, self.encoder)
        out = {metric: self.forward(w, x).astype(np.float64) for metric, w in self._weights.items()}
        return Prediction(list(models), out["performance"], out["cost"])

    # ----- persistence: the numpy weights, checked against the network they belong to -------
    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state["net_weights"] = self._weights
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        state = dict(state)
        weights = state.pop("net_weights")
        super().set_state(state)
        expected_dim = ENCODER_DIMS[self.encoder]
        if self.dim_in_ != expected_dim:
            raise ValueError(
                f"dim_in_ is {self.dim_in_}, but the {self.encoder!r} encoder gives "
                f"{expected_dim}-d embeddings"
            )
        self._weights = {}
        for metric in METRICS:
            shapes = self.weight_shapes(self.dim_in_, self.n_models_, self.best_params_[metric])
            found = {k: np.shape(v) for k, v in weights[metric].items()}
            if found != shapes:
                raise ValueError(f"the {metric} network's weights are {found}; expected {shapes}")
            self._weights[metric] = {
                k: np.asarray(v, dtype=np.float32) for k, v in weights[metric].items()
            }


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
        from trouter.routers.torch_nets import MLPNet

        return MLPNet(dim_in, int(params["hidden"]), n_models, self.params["dropout"])

    def weight_shapes(
        self, dim_in: int, n_models: int, params: dict[str, Any]
    ) -> dict[str, tuple[int, ...]]:
        hidden = int(params["hidden"])
        return {
            "trunk.0.weight": (hidden, dim_in),
            "trunk.0.bias": (hidden,),
            "heads.weight": (n_models, hidden),
            "heads.bias": (n_models,),
        }

    forward = staticmethod(mlp_forward)
