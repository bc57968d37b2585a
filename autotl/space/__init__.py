"""Search spaces: readable YAML files turned into Optuna suggestions and TrialConfigs."""

from ._config import LR_SCHEDULES, OPTIMIZERS, REGULARIZERS, TrialConfig
from ._space import SPACES_DIR, SearchSpace, load_space

__all__ = ["TrialConfig", "SearchSpace", "load_space", "SPACES_DIR", "OPTIMIZERS", "LR_SCHEDULES", "REGULARIZERS"]
