"""Search spaces: readable YAML files turned into Optuna suggestions and TrialConfigs."""

from ._config import FIELD_NAMES, STRATEGIES, STRATEGY_SETTINGS, TrialConfig
from ._space import SearchSpace, load_space

__all__ = ["TrialConfig", "SearchSpace", "load_space", "FIELD_NAMES", "STRATEGIES", "STRATEGY_SETTINGS"]
