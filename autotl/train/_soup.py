"""Greedy model soup over one run's best reports (Wortsman et al., ICML 2022, applied to checkpoints).

Start from the best report's weights; try averaging in each next-best report, and keep it
only if the averaged model does at least as well on validation. Batch-norm statistics are
averaged with the weights; integer counters are taken from the best report.
"""

from __future__ import annotations

import torch

SOUP_REPORTS = 3  # how many of a run's best reports are kept as candidates


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
    """``candidates``: (score, report, state), best first; ``score(state)`` rates a state on validation.

    Returns (the soup's state, the reports in it, its score).
    """
    best_score, report, state = candidates[0]
    ingredients, reports, soup = [state], [report], state
    for _, report, state in candidates[1:]:
        trial = average(ingredients + [state])
        trial_score = score(trial)
        if trial_score >= best_score:
            ingredients.append(state)
            reports.append(report)
            soup, best_score = trial, trial_score
    return soup, reports, best_score
