"""Greedy model soup over one run's best epochs (Wortsman et al., ICML 2022, applied to checkpoints).

Start from the best epoch's weights; try averaging in each next-best epoch, and keep it
only if the averaged model does at least as well on validation. Batch-norm statistics are
averaged with the weights; integer counters are taken from the best epoch.
"""

from __future__ import annotations

import torch

SOUP_EPOCHS = 3  # how many of a run's best epochs are kept as candidates


def average(states: list[dict]) -> dict:
    """The element-wise mean of state dicts (floating tensors; others from the first)."""
    out = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            out[key] = torch.stack([s[key] for s in states]).mean(0).to(first.dtype)
        else:
            out[key] = first.clone()
    return out


def greedy_soup(candidates: list[tuple[tuple, int, dict]], score) -> tuple[dict, list[int], tuple]:
    """``candidates``: (score, epoch, state), best first; ``score(state)`` rates a state on validation.

    Returns (the soup's state, the epochs in it, its score).
    """
    best_score, epoch, state = candidates[0]
    ingredients, epochs, soup = [state], [epoch], state
    for _, epoch, state in candidates[1:]:
        trial = average(ingredients + [state])
        trial_score = score(trial)
        if trial_score >= best_score:
            ingredients.append(state)
            epochs.append(epoch)
            soup, best_score = trial, trial_score
    return soup, epochs, best_score
