"""The TRouter network in torch, for training (``trouter[train]``).

Shapes: ``x`` (B, D) frozen query embeddings, ``e`` (K, D) frozen task (leaf) embeddings,
M pool models. The posterior is ``q(t|x) = softmax_t(s([h(x); g(e_t)]) / tau)``; the
decoders map each task representation ``g(e_t)`` to a performance and a normalised cost per
model; a query's prediction is the posterior mixture of its tasks' decoder outputs.

Scoring all B x K (query, task) pairs with an MLP on the concatenation is the expensive
part. The first layer of ``s`` is linear, so ``W [h; g] = W_h h + W_g g``: both halves are
computed once per query and once per task and broadcast-added, and only the two small
hidden layers run on the B x K grid.

A fitted router keeps the state dict as numpy arrays and predicts with
:class:`trouter.routers.trouter_model.NumpyTRouter`, the same computation without torch.
Also here: the small torch helpers the router wrappers in ``trouter.py`` use for training
(chunked forward passes, target means, the loss terms).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from trouter.routers.trouter_model import RESIDUAL_HIDDEN

if TYPE_CHECKING:
    from trouter.routers.trouter_model import TRouterConfig


def _mlp(dim_in: int, hidden: int, dim_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim_in, hidden), nn.ReLU(), nn.Linear(hidden, dim_out))


class PairScorer(nn.Module):
    """``s``: MLP 2D -> H -> H -> 1 (ReLU, dropout) on ``[h(x); g(e_t)]``, for every pair."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.dim = dim
        self.first = nn.Linear(2 * dim, hidden)
        self.second = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, 1)
        self.dropout = dropout

    def _drop(self, hidden: torch.Tensor) -> torch.Tensor:
        """Dropout with one mask per query, shared by its K candidate pairs.

        The same thinned scorer then ranks all task types of a query (they compete in one
        softmax), and only B x H random numbers are drawn instead of B x K x H, which
        otherwise dominates the CPU time of a training step.
        """
        if not self.training or self.dropout == 0.0:
            return hidden
        keep = torch.rand(hidden.shape[0], 1, hidden.shape[2]) >= self.dropout
        return hidden * (keep.to(hidden.dtype) / (1.0 - self.dropout))

    def forward(self, hx: torch.Tensor, ge: torch.Tensor) -> torch.Tensor:
        """Scores (B, K) for queries ``hx`` (B, D) against tasks ``ge`` (K, D)."""
        w_query, w_task = self.first.weight[:, : self.dim], self.first.weight[:, self.dim :]
        from_query = hx @ w_query.T + self.first.bias  # (B, H)
        from_task = ge @ w_task.T  # (K, H)
        pairs = from_query[:, None, :] + from_task[None, :, :]  # (B, K, H) == first([h; g])
        hidden = self._drop(F.relu(pairs))
        hidden = self._drop(F.relu(self.second(hidden)))
        return self.out(hidden).squeeze(-1)


class GroupedDecoders(nn.Module):
    """``n_heads`` independent MLPs D -> H -> 1 (one per metric and model), run as one einsum."""

    def __init__(self, n_heads: int, dim: int, hidden: int) -> None:
        super().__init__()
        bound1, bound2 = 1.0 / math.sqrt(dim), 1.0 / math.sqrt(hidden)
        self.w1 = nn.Parameter(torch.empty(n_heads, dim, hidden).uniform_(-bound1, bound1))
        self.b1 = nn.Parameter(torch.empty(n_heads, hidden).uniform_(-bound1, bound1))
        self.w2 = nn.Parameter(torch.empty(n_heads, hidden).uniform_(-bound2, bound2))
        self.b2 = nn.Parameter(torch.empty(n_heads).uniform_(-bound2, bound2))

    @torch.no_grad()
    def start_at(self, means: torch.Tensor) -> None:
        """Make every head output ``means`` (n_heads,) in [0, 1] for any input at first:
        the output weights start at zero and the bias at the logit of the mean, so the
        untrained router already predicts the per-model averages (best-single)."""
        self.w2.zero_()
        self.b2.copy_(torch.logit(means.clamp(1e-3, 1 - 1e-3)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Logits (K, n_heads) for task representations ``z`` (K, D)."""
        hidden = F.relu(torch.einsum("kd,jdh->kjh", z, self.w1) + self.b1)
        return torch.einsum("kjh,jh->kj", hidden, self.w2) + self.b2


class TRouterNet(nn.Module):
    """Posterior over K latent task types plus performance/cost decoders for M models.

    ``residual=True`` (TRouter+) adds a query-specific correction ``c(x)`` in logit space,
    ``y = sigmoid(logit(sum_t q(t|x) f(g(e_t))) + c(x))``. Its last layer starts at zero, so
    training starts from the faithful mixture and only learns what the task type misses
    (query difficulty within a task type, which the paper's decoders cannot see).
    """

    def __init__(
        self,
        n_models: int,
        dim: int = 384,
        hidden: int = 256,
        scorer_hidden: int = 256,
        decoder_hidden: int = 128,
        dropout: float = 0.1,
        tau: float = 0.07,
        residual: bool = False,
        residual_hidden: int = RESIDUAL_HIDDEN,
    ) -> None:
        super().__init__()
        self.n_models = n_models
        self.tau = tau
        self.h = _mlp(dim, hidden, dim)
        self.g = _mlp(dim, hidden, dim)
        self.s = PairScorer(dim, scorer_hidden, dropout)
        # Heads 0..M-1 predict performance, M..2M-1 normalised cost.
        self.decoders = GroupedDecoders(2 * n_models, dim, decoder_hidden)
        self.residual: nn.Module | None = None
        if residual:
            self.residual = nn.Sequential(
                nn.Linear(dim, residual_hidden),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(residual_hidden, 2 * n_models),
            )
            nn.init.zeros_(self.residual[-1].weight)
            nn.init.zeros_(self.residual[-1].bias)

    def log_posterior(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """log q(t|x), shape (B, K)."""
        return F.log_softmax(self.s(self.h(x), self.g(e)) / self.tau, dim=-1)

    def task_tables(self, e: torch.Tensor) -> torch.Tensor:
        """Per-task predictions f(g(e_t)) in [0, 1], shape (K, 2M)."""
        return torch.sigmoid(self.decoders(self.g(e)))

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(predictions (B, 2M) in [0, 1], log posterior (B, K))."""
        log_q = self.log_posterior(x, e)
        mixture = log_q.exp() @ self.task_tables(e)
        if self.residual is not None:
            mixture = mixture.clamp(1e-5, 1 - 1e-5)
            mixture = torch.sigmoid(torch.logit(mixture) + self.residual(x))
        return mixture, log_q


def masked_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the observed (non-NaN) cells; 0 when nothing is observed."""
    observed = ~torch.isnan(target)
    if not bool(observed.any()):
        return pred.sum() * 0.0
    diff = torch.where(observed, pred - torch.nan_to_num(target), torch.zeros_like(pred))
    return (diff**2).sum() / observed.sum()


def kl_prior_posterior(prior: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of KL(p || q) = sum_t p(t|x) (log p(t|x) - log q(t|x)).

    This direction is the one that stays finite for a one-hot prior: it reduces to the
    cross-entropy ``-log q(t*|x)`` of the prior's leaf (the reverse, KL(q || p), is
    infinite unless q is itself one-hot). Rows with an all-zero prior contribute 0.
    """
    log_p = torch.log(prior.clamp_min(1e-12))
    return (prior * (log_p - log_q)).sum(dim=-1).mean()


def column_means(y: torch.Tensor) -> torch.Tensor:
    """Mean of each target column over its observed cells (0.5 where none is observed)."""
    observed = ~torch.isnan(y)
    total = torch.nan_to_num(y).sum(dim=0)
    count = observed.sum(dim=0)
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, 0.5))


def batched_forward(
    net: TRouterNet, x: torch.Tensor, e: torch.Tensor, rows: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """``net(x, e)`` in chunks of queries: the pair grid is rows x K x hidden floats, which
    for a whole test split (10k+ queries x ~200 task types) would need gigabytes."""
    if len(x) <= rows:
        return net(x, e)
    parts = [net(chunk, e) for chunk in x.split(rows)]
    return torch.cat([p for p, _ in parts]), torch.cat([q for _, q in parts])


def network_from_weights(
    weights: dict[str, np.ndarray], n_models: int, dim: int, config: TRouterConfig
) -> TRouterNet:
    """The torch network (eval mode) of a loaded router's numpy state dict."""
    net = TRouterNet(
        n_models,
        dim=dim,
        hidden=config.hidden,
        scorer_hidden=config.scorer_hidden,
        decoder_hidden=config.decoder_hidden,
        dropout=config.dropout,
        tau=config.tau,
        residual=config.residual,
    )
    net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
    return net.eval()
