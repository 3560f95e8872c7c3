"""trouter: task-aware LLM routing."""

import os

# Before anything imports LiteLLM: use its bundled price map instead of fetching one.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# Before anything imports huggingface_hub (which reads it once): trouter never downloads from
# the Hub; without this LiteLLM's token counter for an open model name (e.g. WizardLM) retried
# a Hub tokenizer download for ~25 s on an offline machine, mid-request.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


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
