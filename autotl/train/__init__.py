"""Training: the fine-tuning loop, schedules as pure functions, regularizers as small objects."""

from ._fit import TrialResult, evaluate, fit, resolve_device
from ._metrics import macro_f1, per_class

__all__ = ["fit", "evaluate", "resolve_device", "TrialResult", "macro_f1", "per_class"]
