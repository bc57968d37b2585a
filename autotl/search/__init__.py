"""Studies: create or resume one, run trials with a sampler and a pruner, keep the best model."""

from ._plugins import PRUNERS, SAMPLERS, make_pruner, make_sampler
from ._run import SearchContext, SearchResult, default_objective, open_storage, run_name, search

__all__ = ["search", "SearchResult", "SearchContext", "default_objective", "open_storage", "run_name",
           "make_sampler", "make_pruner", "SAMPLERS", "PRUNERS"]
