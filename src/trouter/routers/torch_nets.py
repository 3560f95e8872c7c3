"""The torch side of the mlp and mf routers: their networks and the masked training loop.

Imported only to train (it needs ``trouter[train]``); a fitted router keeps numpy copies of
the weights and predicts with the numpy forward passes in :mod:`trouter.routers.mlp` and
:mod:`trouter.routers.mf`, so routing and serving never import torch.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from trouter.routers.mlp import TrainConfig


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


class MFNet(nn.Module):
    """One factorisation: (n, 384) -> (n, m) in [0, 1], logits ((W x) * w) @ V^T + b."""

    def __init__(self, dim_in: int, dim: int, n_models: int, dropout: float) -> None:
        super().__init__()
        self.project = nn.Linear(dim_in, dim, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.model_vectors = nn.Parameter(torch.randn(n_models, dim) / dim**0.5)
        self.mix = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(n_models))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query = self.dropout(self.project(x)) * self.mix
        return torch.sigmoid(query @ self.model_vectors.T + self.bias)

    def set_prior(self, prior: torch.Tensor) -> None:
        """Biases at each model's mean logit and a small start for the interaction, so
        training begins from the best-single guess and learns per-query deviations."""
        self.bias.copy_(prior)
        self.model_vectors.mul_(0.1)
