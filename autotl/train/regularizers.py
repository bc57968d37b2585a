"""Penalties added to the training loss: L1 and L2-SP. Each has one method, ``penalty()``.

The other regularizers act elsewhere: weight decay in the optimizer, dropout and
drop-path in the model, label smoothing in the loss, mixup on the batch.
"""

from __future__ import annotations

import torch


class L1:
    """strength * sum |w| over the trainable weights (biases and norms excluded)."""

    def __init__(self, model: torch.nn.Module, strength: float):
        self.strength = strength
        self.params = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]

    def penalty(self) -> torch.Tensor:
        return self.strength * torch.stack([p.abs().sum() for p in self.params]).sum()


class L2SP:
    """strength / 2 * ||w - w_pretrained||^2 over the trainable pretrained weights.

    Li et al., "Explicit Inductive Bias for Transfer Learning" (ICML 2018): it pulls the
    fine-tuned backbone towards its starting point instead of towards zero. The new head
    has no pretrained value and is left out.
    """

    def __init__(self, model: torch.nn.Module, strength: float, head_names: set[str]):
        self.strength = strength
        self.pairs = [
            (p, p.detach().clone()) for n, p in model.named_parameters() if p.requires_grad and n not in head_names
        ]

    def penalty(self) -> torch.Tensor:
        return 0.5 * self.strength * torch.stack([((p - p0) ** 2).sum() for p, p0 in self.pairs]).sum()


def make_penalty(model: torch.nn.Module, regularizer: str, strength: float, head_names: set[str]):
    """The loss penalty for a regularizer, or None when it acts elsewhere."""
    penalty = None
    if regularizer == "l1":
        penalty = L1(model, strength)
    elif regularizer == "l2sp":
        penalty = L2SP(model, strength, head_names)
    if penalty is not None and not (getattr(penalty, "params", None) or getattr(penalty, "pairs", None)):
        return None  # nothing trainable to penalise (a linear probe under L2-SP)
    return penalty
