"""Matrix-factorisation router in the RouteLLM / EmbedLLM style.

Each pool model m gets a learned vector v_m; a query's frozen embedding x is projected into
the same space by a learned W; their match gives the logit

    performance(x, m) = sigmoid(w . (v_m * W x) + b_m)

(``*`` elementwise). Normalised cost has its own factorisation (its own v, W, w, b), since
what makes a query expensive (long prompts, long answers) is not what makes it hard, and
since the two learn at different speeds (see :mod:`trouter.routers.mlp`). The
factorisation shares statistical strength across models through the low-rank space, and
the model vectors are what a pool change would re-learn. Trained with the shared masked
loss (:mod:`trouter.routers.tuning`), early stopping on validation; the dimension and
weight decay are chosen on validation. Training, refit and persistence come from
:class:`trouter.routers.mlp.TorchBaseline`; the torch module is
:class:`trouter.routers.torch_nets.MFNet`, and :func:`mf_forward` runs it in numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from trouter.routers.base import register
from trouter.routers.mlp import TorchBaseline, param_grid, sigmoid

if TYPE_CHECKING:
    from torch import nn


def mf_forward(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """:class:`trouter.routers.torch_nets.MFNet` in eval mode, in numpy: (n, d) -> (n, m)."""
    query = (x @ weights["project.weight"].T) * weights["mix"]
    return sigmoid(query @ weights["model_vectors"].T + weights["bias"])


@register("mf")
class MFRouter(TorchBaseline):
    """Matrix factorisation of (query, model) -> performance and normalised cost.

    ``dim`` and ``weight_decay`` are lists searched on validation; ``dropout`` (on the
    projected query), ``lr``, ``batch_size``, ``max_epochs`` and ``patience`` are fixed;
    ``refit`` retrains the chosen setting on train + validation for the early-stopped
    number of epochs.
    """

    def __init__(
        self,
        seed: int = 0,
        dim: Sequence[int] = (16, 64, 128),
        weight_decay: Sequence[float] = (1e-2,),
        dropout: float = 0.2,
        lr: float = 3e-3,
        batch_size: int = 128,
        max_epochs: int = 200,
        patience: int = 10,
        refit: bool = True,
    ) -> None:
        super().__init__(
            seed=seed,
            dim=list(dim),
            weight_decay=list(weight_decay),
            dropout=dropout,
            lr=lr,
            batch_size=batch_size,
            max_epochs=max_epochs,
            patience=patience,
            refit=refit,
        )

    def grid(self) -> list[dict[str, Any]]:
        return param_grid(dim=self.params["dim"], weight_decay=self.params["weight_decay"])

    def build(self, dim_in: int, n_models: int, params: dict[str, Any]) -> nn.Module:
        from trouter.routers.torch_nets import MFNet

        return MFNet(dim_in, int(params["dim"]), n_models, self.params["dropout"])

    def weight_shapes(
        self, dim_in: int, n_models: int, params: dict[str, Any]
    ) -> dict[str, tuple[int, ...]]:
        dim = int(params["dim"])
        return {
            "project.weight": (dim, dim_in),
            "model_vectors": (n_models, dim),
            "mix": (dim,),
            "bias": (n_models,),
        }

    forward = staticmethod(mf_forward)
