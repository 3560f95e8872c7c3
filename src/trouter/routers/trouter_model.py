"""The TRouter's hyper-parameters and its inference in numpy.

:class:`TRouterConfig` holds the hyper-parameters of one fit. :class:`NumpyTRouter` runs a
fitted network (the state dict of :class:`trouter.routers.trouter_nets.TRouterNet`, as
numpy arrays) in eval mode without torch: routing and serving need only numpy, and the
task-side half of the network (``g(e_t)``, the decoders' per-task tables and the task half of
the pair scorer's first layer) is computed once at load instead of on every call.
``tests/test_base_install.py`` checks it against the torch module to 1e-5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from trouter.routers.mlp import relu, sigmoid

#: Width of TRouter+'s residual correction network.
RESIDUAL_HIDDEN = 128


@dataclass(frozen=True)
class TRouterConfig:
    """Hyper-parameters of one TRouter fit.

    Defaults are the paper's reference settings except where marked *deviation* (each is
    explained in :mod:`trouter.routers.trouter`): the learning rate, the step budget, the
    early-stopping criterion, the decoder start and the pair scorer's width.
    """

    taxonomy: str | None = None  # taxonomy JSON path; None = the packaged default
    prior: str = "top1"  # labeller prior for rows without leaf ids: "top1" or "soft"
    tau: float = 0.07
    lambda_kl: float = 1.0
    lr: float = 1e-3  # deviation: the paper's 1e-4 does not converge within 20 epochs
    weight_decay: float = 0.01
    batch_size: int = 64
    max_epochs: int = 20
    patience: int = 3
    #: deviation: at least this many optimiser steps (epochs and patience scale up on small
    #: data, where 20 epochs are only a few dozen steps); 0 = exactly the paper's epochs
    min_steps: int = 1500
    hidden: int = 256
    scorer_hidden: int = 128  # deviation: the paper's 256 costs 4x the fit time
    decoder_hidden: int = 128
    dropout: float = 0.1
    residual: bool = False  # TRouter+: query-specific correction of the mixture
    mean_init: bool = True  # deviation: decoders start at the training mean per model
    stop_on: str = "mse"  # deviation: early-stop on validation prediction MSE, not the ELBO

    def schedule(self, n_rows: int) -> tuple[int, int]:
        """(epochs, patience) for ``n_rows`` training rows: the paper's 20 epochs and
        patience 3 on large data; on small data both grow so that training gets at least
        ``min_steps`` steps and patience stays the same share (15%) of the budget."""
        per_epoch = max(1, math.ceil(n_rows / self.batch_size))
        epochs = max(self.max_epochs, math.ceil(self.min_steps / per_epoch))
        patience = max(self.patience, math.ceil(self.patience * epochs / self.max_epochs))
        return epochs, patience

    def __post_init__(self) -> None:
        if self.prior not in ("top1", "soft"):
            raise ValueError(f"prior must be 'top1' or 'soft', got {self.prior!r}")
        if self.stop_on not in ("loss", "mse"):
            raise ValueError(f"stop_on must be 'loss' or 'mse', got {self.stop_on!r}")
        if self.tau <= 0 or self.lr <= 0 or self.batch_size < 1 or self.max_epochs < 1:
            raise ValueError("tau, lr, batch_size and max_epochs must be positive")

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> TRouterConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise TypeError(f"unknown TRouter parameter(s) {unknown}; known: {sorted(known)}")
        return cls(**params)


def _log_softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def weight_shapes(config: TRouterConfig, n_models: int, dim: int) -> dict[str, tuple[int, ...]]:
    """The shape of every entry of the TRouterNet state dict for these settings."""
    hidden, scorer, decoder, heads = (
        config.hidden,
        config.scorer_hidden,
        config.decoder_hidden,
        2 * n_models,
    )
    shapes: dict[str, tuple[int, ...]] = {}
    for part in ("h", "g"):
        shapes |= {f"{part}.0.weight": (hidden, dim), f"{part}.0.bias": (hidden,)}
        shapes |= {f"{part}.2.weight": (dim, hidden), f"{part}.2.bias": (dim,)}
    shapes |= {"s.first.weight": (scorer, 2 * dim), "s.first.bias": (scorer,)}
    shapes |= {"s.second.weight": (scorer, scorer), "s.second.bias": (scorer,)}
    shapes |= {"s.out.weight": (1, scorer), "s.out.bias": (1,)}
    shapes |= {"decoders.w1": (heads, dim, decoder), "decoders.b1": (heads, decoder)}
    shapes |= {"decoders.w2": (heads, decoder), "decoders.b2": (heads,)}
    if config.residual:
        shapes |= {
            "residual.0.weight": (RESIDUAL_HIDDEN, dim),
            "residual.0.bias": (RESIDUAL_HIDDEN,),
        }
        shapes |= {"residual.3.weight": (heads, RESIDUAL_HIDDEN), "residual.3.bias": (heads,)}
    return shapes


class NumpyTRouter:
    """A fitted TRouterNet in eval mode, in numpy (dropout is off at inference).

    ``weights`` is the state dict, checked against :func:`weight_shapes` (a ValueError names
    the first entry that does not fit); ``tasks`` the (K, D) task embeddings.
    """

    def __init__(
        self,
        weights: dict[str, np.ndarray],
        tasks: np.ndarray,
        config: TRouterConfig,
        n_models: int,
        rows: int = 512,
    ) -> None:
        tasks = np.asarray(tasks, dtype=np.float32)
        if tasks.ndim != 2 or not len(tasks):
            raise ValueError(f"task embeddings have shape {tasks.shape}; expected (K, D)")
        expected = weight_shapes(config, n_models, tasks.shape[1])
        found = {k: tuple(np.shape(v)) for k, v in weights.items()}
        if found != expected:
            wrong = sorted(
                k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k)
            )
            raise ValueError(
                f"network weights do not fit the settings: {wrong[0]} is "
                f"{found.get(wrong[0])}, expected {expected.get(wrong[0])}"
            )
        self.w = {k: np.asarray(v, dtype=np.float32) for k, v in weights.items()}
        self.tau, self.dim, self.rows = config.tau, tasks.shape[1], rows
        self.residual = config.residual
        task_rep = self._mlp("g", tasks)
        w_task = self.w["s.first.weight"][:, self.dim :]
        self.from_task = task_rep @ w_task.T  # (K, H): the task half of the first layer
        self.tables = sigmoid(self._decoders(task_rep))  # (K, 2M)

    def _mlp(self, part: str, x: np.ndarray) -> np.ndarray:
        w = self.w
        hidden = relu(x @ w[f"{part}.0.weight"].T + w[f"{part}.0.bias"])
        return hidden @ w[f"{part}.2.weight"].T + w[f"{part}.2.bias"]

    def _decoders(self, z: np.ndarray) -> np.ndarray:
        w = self.w
        hidden = relu(np.einsum("kd,jdh->kjh", z, w["decoders.w1"]) + w["decoders.b1"])
        return np.einsum("kjh,jh->kj", hidden, w["decoders.w2"]) + w["decoders.b2"]

    def log_posterior(self, x: np.ndarray) -> np.ndarray:
        """log q(t|x), shape (B, K)."""
        w = self.w
        query = self._mlp("h", x)
        from_query = query @ w["s.first.weight"][:, : self.dim].T + w["s.first.bias"]
        pairs = relu(from_query[:, None, :] + self.from_task[None, :, :])  # (B, K, H)
        hidden = relu(pairs @ w["s.second.weight"].T + w["s.second.bias"])
        scores = (hidden @ w["s.out.weight"].T)[..., 0] + w["s.out.bias"][0]
        return _log_softmax(scores / self.tau)

    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        log_q = self.log_posterior(x)
        mixture = np.exp(log_q) @ self.tables
        if self.residual:
            w = self.w
            mixture = np.clip(mixture, 1e-5, 1 - 1e-5)
            hidden = relu(x @ w["residual.0.weight"].T + w["residual.0.bias"])
            correction = hidden @ w["residual.3.weight"].T + w["residual.3.bias"]
            mixture = sigmoid(np.log(mixture / (1 - mixture)) + correction)
        return mixture, log_q

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(predictions (B, 2M) in [0, 1], log posterior (B, K)), in chunks of queries: the
        pair grid is rows x K x hidden floats."""
        x = np.asarray(x, dtype=np.float32)
        parts = [self._forward(x[i : i + self.rows]) for i in range(0, len(x), self.rows)]
        if not parts:
            return np.zeros((0, self.tables.shape[1]), np.float32), np.zeros(
                (0, len(self.tables)), np.float32
            )
        return np.concatenate([p for p, _ in parts]), np.concatenate([q for _, q in parts])
