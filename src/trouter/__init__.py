"""trouter: task-aware LLM routing."""

from trouter.data.dataset import ModelInfo, RoutingDataset
from trouter.evaluation.scenarios import SCENARIOS, Weights
from trouter.serving.api import load

__all__ = ["ModelInfo", "RoutingDataset", "SCENARIOS", "Weights", "load"]
__version__ = "0.1.0"
