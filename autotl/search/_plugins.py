"""Samplers and pruners by name, with defaults fit for fine-tuning deep networks."""

from __future__ import annotations

import warnings

import optuna

from ..errors import AutoTLError
from ..records import TrialRecord

SAMPLERS = ("tpe", "random")
PRUNERS = ("hyperband", "median", "none")


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    """'tpe' (multivariate, grouped for conditional spaces) or 'random'."""
    if name == "tpe":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # group= is "experimental"
            return optuna.samplers.TPESampler(
                multivariate=True, group=True, n_startup_trials=5, seed=seed, constant_liar=True
            )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise AutoTLError(f"unknown sampler {name!r}: use one of {', '.join(SAMPLERS)}")


def make_pruner(name: str, max_epochs: int) -> optuna.pruners.BasePruner:
    """'hyperband' over reports (default), 'median', or 'none'; a trial is compared with its strategy's trials only."""
    if name == "hyperband":
        return PeerPruner(
            lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs, reduction_factor=3)
        )
    if name == "median":
        return PeerPruner(lambda: optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1))
    if name == "none":
        return optuna.pruners.NopPruner()
    raise AutoTLError(f"unknown pruner {name!r}: use one of {', '.join(PRUNERS)}")


def strategy_of(trial: optuna.trial.FrozenTrial) -> str | None:
    """The fine-tuning strategy a trial trains with (the search stores it before the trial trains)."""
    return TrialRecord.of(trial, "strategy").strategy or trial.params.get("strategy")


class PeerPruner(optuna.pruners.BasePruner):
    """Prune a trial only by comparison with trials of its own strategy.

    A linear probe is near its best after one report, a full fine-tune is not: compared
    across strategies, the early bar set by probes prunes every slower recipe that would
    end better. Each strategy gets its own pruner (``make()``), which sees the study
    through a storage that lists only that strategy's trials.
    """

    def __init__(self, make):
        self.make = make
        self.pruners: dict = {}

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        strategy = strategy_of(trial)
        pruner = self.pruners.setdefault(strategy, self.make())
        peers = optuna.Study(
            study_name=study.study_name,
            storage=_PeerStorage(study._storage, strategy),
            sampler=study.sampler,
            pruner=pruner,
        )
        return pruner.prune(peers, trial)


class _PeerStorage:
    """A study's storage that lists only the trials of one strategy (everything else passes through)."""

    def __init__(self, storage, strategy: str | None):
        self._storage, self._strategy = storage, strategy

    def get_all_trials(self, study_id, deepcopy: bool = True, states=None):
        trials = self._storage.get_all_trials(study_id, deepcopy=deepcopy, states=states)
        return [t for t in trials if strategy_of(t) == self._strategy]

    def __getattr__(self, name):
        return getattr(self._storage, name)
