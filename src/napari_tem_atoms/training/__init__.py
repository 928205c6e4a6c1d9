"""Training and evaluating the networks (``tem-atoms train`` / ``tem-atoms evaluate``)."""

from .config import TrainingRun, load_config
from .metrics import MatchCounts, match_columns

__all__ = ["MatchCounts", "TrainingRun", "load_config", "match_columns"]
