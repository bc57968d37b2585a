"""Studies: create or resume one, run trials with a sampler and a pruner, keep the best model."""

from ._logme import logme
from ._options import SearchOptions
from ._plugins import PRUNERS, SAMPLERS, make_pruner, make_sampler
from ._rank import rank_backbones
from ._retrain import export_trial
from ._run import SearchContext, SearchResult, default_objective, run_name, search
from ._storage import open_storage

__all__ = [
    "search",
    "SearchOptions",
    "SearchResult",
    "SearchContext",
    "default_objective",
    "open_storage",
    "run_name",
    "make_sampler",
    "make_pruner",
    "SAMPLERS",
    "PRUNERS",
    "logme",
    "rank_backbones",
    "export_trial",
]
