"""Training: the fine-tuning loop, its saved state, schedules as pure functions, regularizers as small objects."""

from ._build import Setup
from ._device import resolve_device
from ._evaluate import evaluate, val_probabilities
from ._fit import Budget, TrialResult, fit
from ._inputs import VAL_CHECK_IMAGES
from ._metrics import macro_f1, per_class, prediction_score
from ._plan import COOL_DOWN_SHARE, Plan
from ._state import StateError, read_facts, save_tensors

__all__ = [
    "fit",
    "Setup",
    "Budget",
    "evaluate",
    "val_probabilities",
    "resolve_device",
    "TrialResult",
    "StateError",
    "save_tensors",
    "read_facts",
    "macro_f1",
    "per_class",
    "prediction_score",
    "Plan",
    "COOL_DOWN_SHARE",
    "VAL_CHECK_IMAGES",
]
