"""The one way trouter calls LLMs: LiteLLM behind :class:`LLMClient`, configured by a pool.

LiteLLM would fetch its price map from the internet at import time; trouter runs offline
and reproducibly, so the bundled copy is selected here, before anything imports LiteLLM.
The client is imported lazily: ``trouter.llm.pool`` is needed by commands that never call
an LLM, and importing LiteLLM takes seconds.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

if TYPE_CHECKING:
    from trouter.llm.client import Completion, LLMCall, LLMClient, LLMError
    from trouter.llm.pool import ModelEndpoint, Pool, PoolConfigError

__all__ = [
    "Completion",
    "LLMCall",
    "LLMClient",
    "LLMError",
    "ModelEndpoint",
    "Pool",
    "PoolConfigError",
]

_CLIENT = {"Completion", "LLMCall", "LLMClient", "LLMError"}


def __getattr__(name: str) -> Any:
    if name in _CLIENT:
        from trouter.llm import client

        return getattr(client, name)
    if name in {"ModelEndpoint", "Pool", "PoolConfigError"}:
        from trouter.llm import pool

        return getattr(pool, name)
    raise AttributeError(f"module 'trouter.llm' has no attribute {name!r}")
