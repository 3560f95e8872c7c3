"""trouter: task-aware LLM routing."""

import os

# Before anything imports LiteLLM: use its bundled price map instead of fetching one.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


from trouter.data.dataset import ModelInfo, RoutingDataset
from trouter.evaluation.scenarios import SCENARIOS, Weights

__all__ = ["ModelInfo", "RoutingDataset", "SCENARIOS", "Weights", "load"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # ``trouter.load`` imports the routers (torch) only when used: ``import trouter`` stays light.
    if name == "load":
        from trouter.serving.api import load

        return load
    raise AttributeError(f"module 'trouter' has no attribute {name!r}")
