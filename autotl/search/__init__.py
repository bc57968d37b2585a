"""Studies: create or resume one, run trials with a sampler and a pruner, keep the best model."""

from ._logme import logme
from ._options import SearchOptions
from ._plugins import PRUNERS, SAMPLERS
from ._retrain import export_trial
from ._run import SearchContext, SearchResult, default_objective, search
from ._schedule import POLICIES
from ._storage import open_storage

__all__ = [
    "search",
    "SearchOptions",
    "SearchResult",
    "SearchContext",
    "default_objective",
    "open_storage",
    "SAMPLERS",
    "PRUNERS",
    "POLICIES",
    "logme",
    "export_trial",
]
