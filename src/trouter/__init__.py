"""trouter: task-aware LLM routing."""

from trouter.data.dataset import ModelInfo, RoutingDataset
from trouter.evaluation.scenarios import SCENARIOS, Weights

__all__ = ["ModelInfo", "RoutingDataset", "SCENARIOS", "Weights"]
__version__ = "0.1.0"
