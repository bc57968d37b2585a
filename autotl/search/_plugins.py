"""Samplers and pruners by name, with defaults fit for fine-tuning deep networks."""

from __future__ import annotations

import warnings

import optuna

from ..errors import AutoTLError

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
    """'hyperband' over epochs (default), 'median', or 'none'."""
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs, reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise AutoTLError(f"unknown pruner {name!r}: use one of {', '.join(PRUNERS)}")
